//! Counters for `/metrics`: server-wide counters plus one block per profile.
//!
//! Per-profile stats are keyed by profile *name* and outlive config snapshots, so a reload does not
//! reset them. Hot counters are atomics; the by-status maps are small and behind a `parking_lot` mutex
//! (which cannot be poisoned) that is never held across an `.await`.
//!
//! The Prometheus series that need history (requests by key, tokens by kind, the latency histograms,
//! fallbacks) live in [`Series`], a set of `prometheus-client` families shared through a cheap
//! [`Recorder`] handle; `api::prometheus` adds the figures that are read at scrape time (pools, workers,
//! reloads, accounts) and encodes the whole exposition.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

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
    /// The profile's name (the label of its Prometheus series); set once, when the block is made.
    name: Mutex<String>,
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
    /// The Prometheus series with history (shared with every [`Recorder`]).
    series: Recorder,
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
            series: Recorder::default(),
        }
    }
}

impl Metrics {
    /// The stats block of `profile`, created if new.
    pub fn profile(&self, profile: &str) -> Arc<ProfileStats> {
        let mut profiles = self.profiles.lock();
        profiles
            .entry(profile.to_string())
            .or_insert_with(|| {
                Arc::new(ProfileStats {
                    name: Mutex::new(profile.to_string()),
                    ..ProfileStats::default()
                })
            })
            .clone()
    }

    /// A handle on the Prometheus series with history, for code that records once per request (the
    /// latency log keeps one).
    pub fn recorder(&self) -> Recorder {
        self.series.clone()
    }

    /// Counts a chat request that reached a profile (or `None` when routing failed).
    pub fn request_started(&self, profile: Option<&ProfileStats>) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        if let Some(stats) = profile {
            stats.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a fallback hop's attempt on `profile`: the profile's requests only (the request is
    /// counted once server-wide, by [`Metrics::request_started`]).
    pub fn hop_started(&self, profile: &ProfileStats) {
        profile.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an attempt on `profile` that failed with `status` and moved on to the next profile of
    /// its fallback chain: the profile's errors (JSON and `codex_proxy_errors_total`), not the
    /// server-wide ones, since the request itself goes on.
    pub fn hop_failed(&self, profile: &ProfileStats, status: u16) {
        let profile_name = profile.name.lock().clone();
        self.series.error(&profile_name, status);
        *profile.errors_by_status.lock().entry(status).or_default() += 1;
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

    /// Counts a failed request of `profile` (or `None` when it failed before routing): the JSON
    /// counters and `codex_proxy_errors_total`.
    pub fn request_error(&self, profile: Option<&ProfileStats>, status: u16) {
        self.requests_error.fetch_add(1, Ordering::Relaxed);
        let profile_name = profile.map(|stats| stats.name.lock().clone());
        self.series
            .error(profile_name.as_deref().unwrap_or(""), status);
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

/// Counts one in-flight request of a profile while alive, and keeps whatever else must live exactly as
/// long as the request (the caller's per-key concurrency slot, see [`InFlight::holding`]).
pub struct InFlight(
    Arc<ProfileStats>,
    Option<Box<dyn std::any::Any + Send + Sync>>,
);

impl InFlight {
    pub fn new(stats: Arc<ProfileStats>) -> InFlight {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats, None)
    }

    /// Keeps `guard` alive until the request ends (this `InFlight` is dropped).
    pub fn holding(mut self, guard: impl std::any::Any + Send + Sync) -> InFlight {
        self.1 = Some(Box::new(guard));
        self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The labels of `codex_proxy_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub profile: String,
    /// The API surface (`chat_completions`).
    pub api: String,
    pub status: String,
    /// The key's name (`key-…` fingerprint for unnamed keys, empty without a key); never the key.
    pub key: String,
}

/// The labels of `codex_proxy_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Empty for requests that failed before they were routed.
    pub profile: String,
    pub status: String,
}

/// The labels of `codex_proxy_tokens_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub profile: String,
    pub key: String,
    /// `prompt`, `completion`, `cached` or `reasoning`.
    pub kind: &'static str,
}

/// A label set of one profile.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabel {
    pub profile: String,
}

/// The labels of `codex_proxy_fallbacks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub from: String,
    pub to: String,
}

type HistogramFamily = Family<ProfileLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 25 ms … about 100 s.
    Histogram::new(exponential_buckets(0.025, 2.0, 13))
}

fn queue_histogram() -> Histogram {
    // 1 ms … about 65 s.
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

/// The Prometheus families with history. Each family is an `Arc` inside, so clones share the counts.
#[derive(Clone)]
pub struct Series {
    pub requests: Family<RequestLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub request_duration: HistogramFamily,
    pub time_to_first_token: HistogramFamily,
    pub queue_wait: HistogramFamily,
    pub fallbacks: Family<FallbackLabels, Counter>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            requests: Family::default(),
            errors: Family::default(),
            tokens: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            time_to_first_token: Family::new_with_constructor(latency_histogram),
            queue_wait: Family::new_with_constructor(queue_histogram),
            fallbacks: Family::default(),
        }
    }
}

impl std::fmt::Debug for Series {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Series")
    }
}

/// How one request that reached an engine ended, for [`Recorder::finished`].
pub struct Finished<'a> {
    pub profile: &'a str,
    /// The API surface (`chat_completions`).
    pub api: &'a str,
    pub status: u16,
    /// The caller's key name, never the key.
    pub key_name: Option<&'a str>,
    pub usage: Option<&'a Usage>,
    /// From the request's arrival to its end.
    pub total: Duration,
    /// The admission wait, when the request got that far.
    pub queue_wait: Option<Duration>,
}

/// A cheap handle on the [`Series`]: the one place that records a finished request.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Series>);

impl Recorder {
    pub fn series(&self) -> &Series {
        &self.0
    }

    /// Records a request that ended: `codex_proxy_requests_total`, the token counters, and the
    /// duration and queue-wait histograms of its profile.
    pub fn finished(&self, finished: Finished<'_>) {
        let series = &self.0;
        let key = finished.key_name.unwrap_or("").to_string();
        series
            .requests
            .get_or_create(&RequestLabels {
                profile: finished.profile.to_string(),
                api: finished.api.to_string(),
                status: finished.status.to_string(),
                key: key.clone(),
            })
            .inc();
        let profile = ProfileLabel {
            profile: finished.profile.to_string(),
        };
        series
            .request_duration
            .get_or_create(&profile)
            .observe(finished.total.as_secs_f64());
        if let Some(wait) = finished.queue_wait {
            series
                .queue_wait
                .get_or_create(&profile)
                .observe(wait.as_secs_f64());
        }
        if let Some(usage) = finished.usage {
            let kinds = [
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
                ("cached", usage.cached_tokens),
                ("reasoning", usage.reasoning_tokens),
            ];
            for (kind, count) in kinds {
                series
                    .tokens
                    .get_or_create(&TokenLabels {
                        profile: finished.profile.to_string(),
                        key: key.clone(),
                        kind,
                    })
                    .inc_by(count);
            }
        }
    }

    /// Records the time until a streamed request's first token was handed to the client.
    pub fn first_token(&self, profile: &str, elapsed: Duration) {
        self.0
            .time_to_first_token
            .get_or_create(&ProfileLabel {
                profile: profile.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Makes the `from` → `to` fallback series exist (at zero) before any request moves along it, so
    /// dashboards and alerts see every configured edge.
    pub fn declare_fallback(&self, from: &str, to: &str) {
        let _ = self.0.fallbacks.get_or_create(&FallbackLabels {
            from: from.to_string(),
            to: to.to_string(),
        });
    }

    /// Records that a request moved from profile `from` to profile `to`.
    pub fn fallback(&self, from: &str, to: &str) {
        self.0
            .fallbacks
            .get_or_create(&FallbackLabels {
                from: from.to_string(),
                to: to.to_string(),
            })
            .inc();
    }

    fn error(&self, profile: &str, status: u16) {
        self.0
            .errors
            .get_or_create(&ErrorLabels {
                profile: profile.to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}
