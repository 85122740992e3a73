//! What the dashboard shows live and the ledger does not need a query for: the last requests (a
//! bounded ring) and per-minute request counts and latency percentiles over the last hour.
//!
//! Entry point: [`Activity::record`], called once per request with the same [`Record`] the ledger
//! gets; [`Activity::view`] is the serde form the dashboard polls. Memory is bounded: the ring holds
//! [`RECENT_CAPACITY`] rows, each minute keeps at most [`LATENCY_SAMPLES_PER_MINUTE`] latencies, and
//! minutes older than an hour are dropped. Nothing here touches the disk.

use std::collections::VecDeque;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::query::median;
use super::{duration_ms, unix_ms, Record};

/// How many recent requests the live table keeps.
pub const RECENT_CAPACITY: usize = 100;
/// How many minutes the charts cover.
pub const SERIES_MINUTES: usize = 60;
/// Latencies kept per minute for the percentiles; beyond it, every n-th is kept (a fair sample).
pub const LATENCY_SAMPLES_PER_MINUTE: usize = 2_000;

/// One row of the live table: names, status and timings, never content or keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRequest {
    /// Arrival, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub request_id: String,
    pub api: String,
    pub profile: String,
    pub key_name: Option<String>,
    pub model: String,
    pub engine: String,
    pub stream: bool,
    pub status: u16,
    pub error_code: Option<String>,
    pub latency_ms: i64,
    pub first_token_ms: Option<i64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tool_calls: u32,
}

/// One minute of the charts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinutePoint {
    /// The minute's start, in seconds since the Unix epoch.
    pub minute: i64,
    pub requests: u64,
    pub errors: u64,
    /// Nearest-rank percentiles of the minute's latencies; `None` for an empty minute.
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
}

/// The serde form of [`Activity`] for `/ui/data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityView {
    /// Newest first.
    pub recent: Vec<RecentRequest>,
    /// Oldest first, one point per minute of the last hour (empty minutes included).
    pub series: Vec<MinutePoint>,
    /// Requests recorded since the process started.
    pub recorded: u64,
}

#[derive(Debug, Default)]
struct Minute {
    minute: i64,
    requests: u64,
    errors: u64,
    latencies_ms: Vec<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<RecentRequest>,
    minutes: VecDeque<Minute>,
    recorded: u64,
}

/// The live figures; one per server. A short `parking_lot` lock per request (a push and a counter),
/// never held across `.await`.
#[derive(Debug, Default)]
pub struct Activity {
    inner: Mutex<Inner>,
}

impl Activity {
    /// Adds one finished request.
    pub fn record(&self, record: &Record) {
        let row = RecentRequest {
            at_ms: unix_ms(record.at),
            request_id: record.request_id.clone(),
            api: record.api.as_str().to_string(),
            profile: record.profile.clone(),
            key_name: record.key_name.clone(),
            model: record.model.clone(),
            engine: record.engine.clone(),
            stream: record.stream,
            status: record.status,
            error_code: record.error_code.clone(),
            latency_ms: duration_ms(record.latency),
            first_token_ms: record.first_token.map(duration_ms),
            prompt_tokens: record.prompt_tokens,
            completion_tokens: record.completion_tokens,
            tool_calls: record.tool_calls,
        };
        let failed = record.status >= 400 || record.error_code.is_some();
        let latency = u64::try_from(row.latency_ms).unwrap_or(0);
        let minute = row.at_ms.div_euclid(60_000) * 60;
        let mut inner = self.inner.lock();
        inner.recorded += 1;
        if inner.recent.len() == RECENT_CAPACITY {
            inner.recent.pop_back();
        }
        inner.recent.push_front(row);
        if inner.minutes.back().is_none_or(|last| last.minute < minute) {
            inner.minutes.push_back(Minute {
                minute,
                ..Minute::default()
            });
        }
        // A request that arrived in an earlier minute but finished now belongs to its arrival minute,
        // if that minute is still kept.
        let Some(bucket) = inner.minutes.iter_mut().rev().find(|m| m.minute <= minute) else {
            return;
        };
        bucket.requests += 1;
        bucket.errors += u64::from(failed);
        if bucket.latencies_ms.len() < LATENCY_SAMPLES_PER_MINUTE {
            bucket.latencies_ms.push(latency);
        } else {
            let slot = (bucket.requests as usize) % LATENCY_SAMPLES_PER_MINUTE;
            bucket.latencies_ms[slot] = latency;
        }
        while inner.minutes.len() > SERIES_MINUTES {
            inner.minutes.pop_front();
        }
    }

    /// The ring and the last hour's series as of `now`.
    pub fn view(&self, now: SystemTime) -> ActivityView {
        let inner = self.inner.lock();
        let this_minute = unix_ms(now).div_euclid(60_000) * 60;
        let first = this_minute - 60 * (SERIES_MINUTES as i64 - 1);
        let mut series = Vec::with_capacity(SERIES_MINUTES);
        let mut kept = inner.minutes.iter().peekable();
        for index in 0..SERIES_MINUTES as i64 {
            let minute = first + 60 * index;
            while kept.peek().is_some_and(|m| m.minute < minute) {
                kept.next();
            }
            let point = match kept.peek() {
                Some(bucket) if bucket.minute == minute => {
                    let mut latencies = bucket.latencies_ms.clone();
                    MinutePoint {
                        minute,
                        requests: bucket.requests,
                        errors: bucket.errors,
                        latency_p50_ms: median(&mut latencies),
                        latency_p95_ms: percentile(&mut latencies, 95),
                    }
                }
                _ => MinutePoint {
                    minute,
                    requests: 0,
                    errors: 0,
                    latency_p50_ms: None,
                    latency_p95_ms: None,
                },
            };
            series.push(point);
        }
        ActivityView {
            recent: inner.recent.iter().cloned().collect(),
            series,
            recorded: inner.recorded,
        }
    }
}

/// The nearest-rank `p`th percentile: the smallest value with at least `p`% of the values at or below.
fn percentile(values: &mut [u64], p: usize) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * p).div_ceil(100).max(1);
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::usage::Api;

    fn record(at: SystemTime, status: u16, latency_ms: u64) -> Record {
        Record {
            at,
            request_id: "r".into(),
            api: Api::Chat,
            profile: "p".into(),
            fallback_from: Vec::new(),
            key_name: Some("key-1".into()),
            model: "m".into(),
            engine: "exec".into(),
            stream: false,
            status,
            error_code: None,
            prompt_tokens: 1,
            completion_tokens: 2,
            cached_tokens: 0,
            reasoning_tokens: 0,
            latency: Duration::from_millis(latency_ms),
            first_token: None,
            tool_calls: 0,
        }
    }

    #[test]
    fn the_series_has_one_point_per_minute_with_percentiles() {
        let activity = Activity::default();
        let base = UNIX_EPOCH + Duration::from_secs(1_800_000_000 / 60 * 60);
        for latency in 1..=100 {
            activity.record(&record(base, 200, latency));
        }
        activity.record(&record(base + Duration::from_secs(61), 502, 7));
        let view = activity.view(base + Duration::from_secs(90));
        assert_eq!(view.series.len(), SERIES_MINUTES);
        let last = &view.series[SERIES_MINUTES - 1];
        assert_eq!((last.requests, last.errors), (1, 1));
        let previous = &view.series[SERIES_MINUTES - 2];
        assert_eq!(previous.requests, 100);
        assert_eq!(previous.latency_p50_ms, Some(50));
        assert_eq!(previous.latency_p95_ms, Some(95));
        assert!(view.series[0].latency_p50_ms.is_none());
        assert_eq!(view.recorded, 101);
        assert_eq!(view.recent[0].status, 502);
    }

    #[test]
    fn the_ring_and_the_hour_stay_bounded() {
        let activity = Activity::default();
        let base = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for minute in 0..(SERIES_MINUTES as u64 + 30) {
            for _ in 0..3 {
                activity.record(&record(base + Duration::from_secs(minute * 60), 200, 5));
            }
        }
        let inner = activity.inner.lock();
        assert_eq!(inner.recent.len(), RECENT_CAPACITY);
        assert_eq!(inner.minutes.len(), SERIES_MINUTES);
    }
}
