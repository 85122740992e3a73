//! Counters for `/metrics`: server-wide counters plus one block per profile.
//!
//! Per-profile stats are keyed by profile *name* and outlive config snapshots, so a reload does not
//! reset them. Hot counters are atomics; the by-status maps are small and behind a `parking_lot` mutex
//! (which cannot be poisoned) that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::turn::Usage;

/// Counters of one profile.
#[derive(Debug, Default)]
pub struct ProfileStats {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub in_flight: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub total_tokens: AtomicU64,
    /// Turns that returned client tool calls and were held for the results.
    pub tool_turns_held: AtomicU64,
    /// Held turns a request with the results continued.
    pub tool_turns_continued: AtomicU64,
    /// Held turns interrupted after `tool_call_timeout_seconds` without results.
    pub tool_turns_expired: AtomicU64,
    /// Requests with tool results that matched no held turn and replayed the conversation.
    pub tool_turns_replayed: AtomicU64,
    errors_by_status: Mutex<BTreeMap<u16, u64>>,
}

impl ProfileStats {
    fn errors(&self) -> BTreeMap<u16, u64> {
        self.errors_by_status.lock().clone()
    }
}

/// The server-wide counters at one moment; `api::ops` turns them into the `/metrics` body.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalFigures {
    pub requests_total: u64,
    pub requests_ok: u64,
    pub requests_error: u64,
    /// HTTP status → count.
    pub errors_by_status: BTreeMap<u16, u64>,
    pub uptime_seconds: f64,
}

/// One profile's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFigures {
    pub requests: u64,
    pub ok: u64,
    /// HTTP status → count.
    pub errors_by_status: BTreeMap<u16, u64>,
    pub in_flight: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub tool_turns_held: u64,
    pub tool_turns_continued: u64,
    pub tool_turns_expired: u64,
    pub tool_turns_replayed: u64,
}

/// Process-wide counters.
#[derive(Debug)]
pub struct Metrics {
    pub started_at: Instant,
    requests_total: AtomicU64,
    requests_ok: AtomicU64,
    requests_error: AtomicU64,
    errors_by_status: Mutex<BTreeMap<u16, u64>>,
    /// Profile name → its stats; entries are created on first use and never removed.
    profiles: Mutex<HashMap<String, Arc<ProfileStats>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started_at: Instant::now(),
            requests_total: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            requests_error: AtomicU64::new(0),
            errors_by_status: Mutex::new(BTreeMap::new()),
            profiles: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// The stats block of `profile`, created if new.
    pub fn profile(&self, profile: &str) -> Arc<ProfileStats> {
        let mut profiles = self.profiles.lock();
        profiles.entry(profile.to_string()).or_default().clone()
    }

    /// Counts a chat request that reached a profile (or `None` when routing failed).
    pub fn request_started(&self, profile: Option<&ProfileStats>) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        if let Some(stats) = profile {
            stats.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn request_ok(&self, profile: &ProfileStats, usage: &Usage) {
        self.requests_ok.fetch_add(1, Ordering::Relaxed);
        profile.ok.fetch_add(1, Ordering::Relaxed);
        profile
            .prompt_tokens
            .fetch_add(usage.prompt_tokens, Ordering::Relaxed);
        profile
            .completion_tokens
            .fetch_add(usage.completion_tokens, Ordering::Relaxed);
        profile
            .total_tokens
            .fetch_add(usage.total_tokens, Ordering::Relaxed);
    }

    pub fn request_error(&self, profile: Option<&ProfileStats>, status: u16) {
        self.requests_error.fetch_add(1, Ordering::Relaxed);
        *self.errors_by_status.lock().entry(status).or_default() += 1;
        if let Some(stats) = profile {
            *stats.errors_by_status.lock().entry(status).or_default() += 1;
        }
    }

    /// The server-wide counters now (the per-profile blocks are added by `api::ops`, which knows pools).
    pub fn global_figures(&self) -> GlobalFigures {
        GlobalFigures {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            requests_ok: self.requests_ok.load(Ordering::Relaxed),
            requests_error: self.requests_error.load(Ordering::Relaxed),
            errors_by_status: self.errors_by_status.lock().clone(),
            uptime_seconds: self.started_at.elapsed().as_secs_f64(),
        }
    }

    /// One profile's counters now.
    pub fn profile_figures(&self, profile: &str) -> ProfileFigures {
        let stats = self.profile(profile);
        ProfileFigures {
            requests: stats.requests.load(Ordering::Relaxed),
            ok: stats.ok.load(Ordering::Relaxed),
            errors_by_status: stats.errors(),
            in_flight: stats.in_flight.load(Ordering::Relaxed),
            prompt_tokens: stats.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: stats.completion_tokens.load(Ordering::Relaxed),
            total_tokens: stats.total_tokens.load(Ordering::Relaxed),
            tool_turns_held: stats.tool_turns_held.load(Ordering::Relaxed),
            tool_turns_continued: stats.tool_turns_continued.load(Ordering::Relaxed),
            tool_turns_expired: stats.tool_turns_expired.load(Ordering::Relaxed),
            tool_turns_replayed: stats.tool_turns_replayed.load(Ordering::Relaxed),
        }
    }
}

/// Counts one in-flight request of a profile while alive.
pub struct InFlight(Arc<ProfileStats>);

impl InFlight {
    pub fn new(stats: Arc<ProfileStats>) -> InFlight {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
