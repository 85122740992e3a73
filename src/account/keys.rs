//! Per-key limits of named API keys: `max_concurrency` (requests of the key running at once, across
//! profiles) and `requests_per_minute` (requests started in any 60-second window). State is kept by key
//! *name*, in a [`KeyLimits`] that the config snapshots hand on to each other, so a reload neither resets
//! a key's window nor forgets its running requests.
//!
//! [`KeyLimits::admit`] either refuses (with the seconds after which a retry can pass) or returns a
//! [`KeyGuard`] that holds one concurrency slot until dropped; the request keeps it until its response
//! has ended.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The window of `requests_per_minute`.
const WINDOW: Duration = Duration::from_secs(60);

/// The limits of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrency: Option<usize>,
    pub requests_per_minute: Option<u32>,
}

/// Why a key's request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `max_concurrency` requests of the key are running.
    Concurrency { limit: usize },
    /// `requests_per_minute` requests started in the last 60 s; one more may start after
    /// `retry_after_seconds`.
    RequestsPerMinute {
        limit: u32,
        retry_after_seconds: u64,
    },
}

#[derive(Debug, Default)]
struct KeyState {
    running: usize,
    /// Start times within the last [`WINDOW`], oldest first.
    starts: VecDeque<Instant>,
    /// Requests refused for `max_concurrency` and for `requests_per_minute`, since the start.
    refused_concurrency: u64,
    refused_per_minute: u64,
}

/// One key's refusals, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefusals {
    pub name: String,
    pub concurrency: u64,
    pub requests_per_minute: u64,
}

/// The running requests and recent starts of every named key. The mutex is held only for a few
/// arithmetic steps, never across an `.await`.
#[derive(Debug, Default)]
pub struct KeyLimits {
    keys: Mutex<HashMap<String, KeyState>>,
}

impl KeyLimits {
    /// Admits one request of key `name` at `now`, or says why not. A key without limits is always
    /// admitted (and its guard holds nothing).
    pub fn admit(
        self: &Arc<Self>,
        name: &str,
        limits: Limits,
        now: Instant,
    ) -> Result<KeyGuard, Refusal> {
        if limits == Limits::default() {
            return Ok(KeyGuard(None));
        }
        let mut keys = self.keys.lock();
        let state = keys.entry(name.to_string()).or_default();
        while state
            .starts
            .front()
            .is_some_and(|start| now.saturating_duration_since(*start) >= WINDOW)
        {
            state.starts.pop_front();
        }
        if let Some(limit) = limits.max_concurrency {
            if state.running >= limit {
                state.refused_concurrency += 1;
                return Err(Refusal::Concurrency { limit });
            }
        }
        if let Some(limit) = limits.requests_per_minute {
            if state.starts.len() >= limit as usize {
                let oldest = state.starts[state.starts.len() - limit as usize];
                let wait = WINDOW.saturating_sub(now.saturating_duration_since(oldest));
                state.refused_per_minute += 1;
                return Err(Refusal::RequestsPerMinute {
                    limit,
                    retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
            state.starts.push_back(now);
        }
        state.running += 1;
        Ok(KeyGuard(Some((self.clone(), name.to_string()))))
    }

    /// Every limited key's refusals so far, by name.
    pub fn refusals(&self) -> Vec<KeyRefusals> {
        let mut refusals: Vec<KeyRefusals> = self
            .keys
            .lock()
            .iter()
            .map(|(name, state)| KeyRefusals {
                name: name.clone(),
                concurrency: state.refused_concurrency,
                requests_per_minute: state.refused_per_minute,
            })
            .collect();
        refusals.sort_by(|a, b| a.name.cmp(&b.name));
        refusals
    }

    /// Requests of `name` running now.
    pub fn running(&self, name: &str) -> usize {
        self.keys.lock().get(name).map_or(0, |state| state.running)
    }
}

/// One running request of a key; frees its concurrency slot when dropped.
#[derive(Debug)]
pub struct KeyGuard(Option<(Arc<KeyLimits>, String)>);

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if let Some((limits, name)) = self.0.take() {
            if let Some(state) = limits.keys.lock().get_mut(&name) {
                state.running = state.running.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_held_until_the_guard_drops() {
        let limits = Arc::new(KeyLimits::default());
        let only_one = Limits {
            max_concurrency: Some(1),
            requests_per_minute: None,
        };
        let now = Instant::now();
        let first = limits.admit("k", only_one, now).unwrap();
        assert_eq!(
            limits.admit("k", only_one, now).unwrap_err(),
            Refusal::Concurrency { limit: 1 }
        );
        // Another key is not affected.
        let _other = limits.admit("other", only_one, now).unwrap();
        drop(first);
        assert_eq!(limits.running("k"), 0);
        assert!(limits.admit("k", only_one, now).is_ok());
    }

    #[test]
    fn requests_per_minute_is_a_sliding_window() {
        let limits = Arc::new(KeyLimits::default());
        let two = Limits {
            max_concurrency: None,
            requests_per_minute: Some(2),
        };
        let start = Instant::now();
        drop(limits.admit("k", two, start).unwrap());
        drop(
            limits
                .admit("k", two, start + Duration::from_secs(10))
                .unwrap(),
        );
        let refused = limits
            .admit("k", two, start + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(
            refused,
            Refusal::RequestsPerMinute {
                limit: 2,
                retry_after_seconds: 40
            }
        );
        assert_eq!(
            limits.refusals(),
            vec![KeyRefusals {
                name: "k".into(),
                concurrency: 0,
                requests_per_minute: 1
            }]
        );
        // Once the first start is a minute old, one more may start.
        assert!(limits.admit("k", two, start + WINDOW).is_ok());
        assert!(limits
            .admit("k", two, start + WINDOW + Duration::from_secs(1))
            .is_err());
    }

    #[test]
    fn a_key_without_limits_holds_nothing() {
        let limits = Arc::new(KeyLimits::default());
        let guard = limits
            .admit("k", Limits::default(), Instant::now())
            .unwrap();
        assert_eq!(limits.running("k"), 0);
        drop(guard);
    }
}
