//! Operational endpoints: `/health` (the process answers), `/ready` (every profile's Codex binary runs
//! and its account is logged in, and the config's reload state), `/metrics` (JSON counters, or the
//! Prometheus / OpenMetrics exposition of `api::prometheus` when `Accept` asks for it), `/v1/quota`
//! (each account's login and rate-limit windows), `POST /admin/reload`, and the JSON 404/405
//! fallbacks. None of them ever shows an API key. `/health` is public but says only `status` and `pid`
//! to callers that may not read `/ready`; `/ready`, `/metrics` and `/v1/quota` follow
//! [`authorize_ops`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde_json::json;

use crate::account::{not_logged_in_reason, Account, Login};
use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::api::prometheus::{self, AccountScrape, ProfileScrape, Scrape};
use crate::api::{authenticate_admin, authorize_ops};
use crate::engine::app_server::worker::{WorkerFigures, WorkerState};
use crate::live::reload::{reload, ReloadError};
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use crate::metrics::{GlobalFigures, ProfileFigures};
use crate::report::{
    AccountQuota, CodexReport, ConfigReport, GlobalCounters, Health, LoginReport,
    Metrics as MetricsReport, PoolId, ProfileCounters, ProfileMetrics, ProfileReadiness, Quota,
    QuotaWindowReport, Ready, ReadyStatus, Tokens, WorkerReport, WorkerStateName,
};

pub use crate::report::VERSION;

/// `status`, and the pid (the daemon commands check that the server answering is the one they started;
/// any local user sees it in `/proc` anyway). Version, uptime and config details only with ops access.
pub async fn health(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
) -> Json<Health> {
    let mut health = Health {
        status: "ok".to_string(),
        pid: std::process::id(),
        ..Health::default()
    };
    if authorize_ops(&snapshot, &headers).is_ok() {
        health.version = Some(VERSION.to_string());
        health.uptime_seconds = Some(state.metrics().started_at.elapsed().as_secs_f64());
        health.config_generation = Some(snapshot.generation);
        health.profiles = Some(snapshot.config.profiles.len());
    }
    Json(health)
}

fn config_report(state: &AppState, snapshot: &Snapshot) -> ConfigReport {
    let status = state.reload_status();
    ConfigReport {
        path: state.config_path().map(|p| p.display().to_string()),
        generation: snapshot.generation,
        last_reload_at: status
            .last_reload_at
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        last_error: status.last_error,
        reloads_ok: status.reloads_ok,
        reloads_failed: status.reloads_failed,
        restart_required: status.restart_required,
        watch: status.watch,
    }
}

fn codex_report(snapshot: &Snapshot) -> CodexReport {
    let codex = &snapshot.codex;
    let resolved = codex.resolved.as_ref().ok();
    CodexReport {
        codex_bin: snapshot.config.server.codex_bin.clone(),
        program: resolved.map(|r| r.program.display().to_string()),
        npm_launcher_bypassed: resolved
            .and_then(|r| r.bypassed_launcher.as_ref())
            .map(|p| p.display().to_string()),
        version: codex.version.as_ref().ok().cloned(),
        error: codex.version.as_ref().err().map(|err| err.0.clone()),
    }
}

pub async fn ready(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize_ops(&snapshot, &headers) {
        return error.into_response();
    }
    // A home not checked yet (the server just started) is checked now, so `/ready` never says ready
    // for an account that is not logged in.
    if let Some(watcher) = &snapshot.login_watcher {
        crate::account::login::refresh_unknown(&watcher.targets).await;
    }
    let mut profiles = BTreeMap::new();
    for ((profile, pool), account) in snapshot
        .config
        .profiles
        .iter()
        .zip(&snapshot.pools)
        .zip(&snapshot.accounts)
    {
        let readiness = pool.readiness();
        let logged_out = account.needs_login
            && crate::account::book().login(&account.codex_home) == Login::NotLoggedIn;
        let (ready, reason) = if logged_out && readiness.is_ready() {
            (false, Some(not_logged_in_reason(&account.codex_home)))
        } else {
            (readiness.is_ready(), readiness.reason())
        };
        profiles.insert(
            profile.name.clone(),
            ProfileReadiness {
                ready,
                engine: profile.runtime.engine.as_str().to_string(),
                reason,
            },
        );
    }
    let all_ready = profiles.values().all(|profile| profile.ready);
    let body = Ready {
        status: if all_ready {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
        codex: codex_report(&snapshot),
        profiles,
        config: config_report(&state, &snapshot),
    };
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn metrics(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize_ops(&snapshot, &headers) {
        return error.into_response();
    }
    if let Some(format) = prometheus::negotiate(&headers) {
        let text = prometheus::encode(
            &state.metrics().recorder(),
            &scrape(&state, &snapshot),
            format,
        );
        return ([(header::CONTENT_TYPE, format.content_type())], text).into_response();
    }
    let metrics = state.metrics();
    let mut profiles = BTreeMap::new();
    for (profile, pool) in snapshot.config.profiles.iter().zip(&snapshot.pools) {
        let workers = pool
            .engine()
            .workers_figures()
            .map(|workers| workers.into_iter().map(worker_report).collect());
        let block = ProfileMetrics {
            counters: profile_counters(metrics.profile_figures(&profile.name)),
            engine: profile.runtime.engine.as_str().to_string(),
            queued: pool.queued(),
            running: pool.running(),
            max_concurrency: profile.runtime.max_concurrency,
            pool: PoolId { id: pool.id },
            workers,
        };
        profiles.insert(profile.name.clone(), block);
    }
    let body = MetricsReport {
        counters: global_counters(metrics.global_figures()),
        profiles,
        config: config_report(&state, &snapshot),
        usage_dropped: state.usage().dropped(),
    };
    Json(body).into_response()
}

/// The figures a Prometheus scrape reads besides the recorded series.
fn scrape(state: &AppState, snapshot: &Snapshot) -> Scrape {
    let metrics = state.metrics();
    let recorder = metrics.recorder();
    for profile in &snapshot.config.profiles {
        for next in &profile.fallbacks {
            recorder.declare_fallback(&profile.name, next);
        }
    }
    let profiles = snapshot
        .config
        .profiles
        .iter()
        .zip(&snapshot.pools)
        .map(|(profile, pool)| ProfileScrape {
            name: profile.name.clone(),
            in_flight: metrics.profile_figures(&profile.name).in_flight,
            tool_turns: tool_turns(&metrics.profile_figures(&profile.name)),
            queued: pool.queued() as u64,
            workers: pool
                .engine()
                .workers_figures()
                .unwrap_or_default()
                .into_iter()
                .map(|worker| {
                    let report = worker_report(worker);
                    let state = match report.state {
                        WorkerStateName::Starting => "starting",
                        WorkerStateName::Ready => "ready",
                        WorkerStateName::Down => "down",
                        WorkerStateName::Stopped => "stopped",
                    };
                    (state, report.restarts)
                })
                .collect(),
        })
        .collect();
    let status = state.reload_status();
    Scrape {
        profiles,
        reloads_ok: status.reloads_ok,
        reloads_failed: status.reloads_failed,
        generation: snapshot.generation,
        uptime_seconds: metrics.started_at.elapsed().as_secs_f64(),
        usage_dropped: state.usage().dropped(),
        key_refusals: snapshot
            .key_limits
            .refusals()
            .into_iter()
            .flat_map(|key| {
                [
                    (key.name.clone(), "max_concurrency", key.concurrency),
                    (key.name, "requests_per_minute", key.requests_per_minute),
                ]
            })
            .collect(),
        accounts: accounts(snapshot)
            .into_iter()
            .map(|(home, _, account)| AccountScrape {
                codex_home: home.display().to_string(),
                login: account.login,
                windows: account.windows.into_values().collect(),
            })
            .collect(),
    }
}

/// A profile's tool-turn counters by outcome, for `codex_proxy_tool_turns_total`.
fn tool_turns(figures: &crate::metrics::ProfileFigures) -> [(&'static str, u64); 4] {
    [
        ("held", figures.tool_turns_held),
        ("continued", figures.tool_turns_continued),
        ("expired", figures.tool_turns_expired),
        ("replayed", figures.tool_turns_replayed),
    ]
}

/// Each distinct Codex home of the snapshot's profiles (in profile order), the profiles that run
/// under it, and what is known about it; a home only exempt profiles use shows no login state.
pub fn accounts(snapshot: &Snapshot) -> Vec<(PathBuf, Vec<String>, Account)> {
    let mut homes: Vec<(PathBuf, Vec<String>, bool)> = Vec::new();
    for (profile, account) in snapshot.config.profiles.iter().zip(&snapshot.accounts) {
        match homes
            .iter_mut()
            .find(|(home, _, _)| *home == account.codex_home)
        {
            Some((_, names, needs_login)) => {
                names.push(profile.name.clone());
                *needs_login |= account.needs_login;
            }
            None => homes.push((
                account.codex_home.clone(),
                vec![profile.name.clone()],
                account.needs_login,
            )),
        }
    }
    homes
        .into_iter()
        .map(|(home, names, needs_login)| {
            let mut account = crate::account::book().account(&home);
            if !needs_login {
                account.login = Login::Unknown;
            }
            (home, names, account)
        })
        .collect()
}

/// `GET /v1/quota`: each account's login and rate-limit windows (same access as `/metrics`).
pub async fn quota(Extension(Loaded(snapshot)): Extension<Loaded>, headers: HeaderMap) -> Response {
    if let Err(error) = authorize_ops(&snapshot, &headers) {
        return error.into_response();
    }
    Json(quota_report(&snapshot)).into_response()
}

/// The `/v1/quota` body of `snapshot`'s accounts.
pub fn quota_report(snapshot: &Snapshot) -> Quota {
    let accounts = accounts(snapshot)
        .into_iter()
        .map(|(home, profiles, account)| {
            let login = match account.login {
                Login::LoggedIn(method) => LoginReport {
                    logged_in: Some(true),
                    method: method.map(|method| method.as_str().to_string()),
                },
                Login::NotLoggedIn => LoginReport {
                    logged_in: Some(false),
                    method: None,
                },
                Login::Unknown => LoginReport {
                    logged_in: None,
                    method: None,
                },
            };
            AccountQuota {
                codex_home: home.display().to_string(),
                profiles,
                login,
                windows: account
                    .windows
                    .into_values()
                    .map(|window| QuotaWindowReport {
                        id: window.id,
                        used_percent: window.used_percent,
                        window_minutes: window.window_minutes,
                        resets_at: window.resets_at,
                    })
                    .collect(),
                updated_at: account.quota_updated_at,
            }
        })
        .collect();
    Quota {
        object: "quota".to_string(),
        accounts,
    }
}

/// HTTP status → count, with the statuses as the JSON object keys they become.
fn by_status(errors: BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    errors
        .into_iter()
        .map(|(status, count)| (status.to_string(), count))
        .collect()
}

fn global_counters(figures: GlobalFigures) -> GlobalCounters {
    GlobalCounters {
        requests_total: figures.requests_total,
        requests_ok: figures.requests_ok,
        requests_error: figures.requests_error,
        errors_by_status: by_status(figures.errors_by_status),
        uptime_seconds: figures.uptime_seconds,
    }
}

fn profile_counters(figures: ProfileFigures) -> ProfileCounters {
    ProfileCounters {
        requests: figures.requests,
        ok: figures.ok,
        errors_by_status: by_status(figures.errors_by_status),
        in_flight: figures.in_flight,
        tokens: Tokens {
            prompt: figures.prompt_tokens,
            completion: figures.completion_tokens,
            total: figures.total_tokens,
        },
        tool_turns_held: figures.tool_turns_held,
        tool_turns_continued: figures.tool_turns_continued,
        tool_turns_expired: figures.tool_turns_expired,
        tool_turns_replayed: figures.tool_turns_replayed,
    }
}

fn worker_report(figures: WorkerFigures) -> WorkerReport {
    let (state, error) = match figures.state {
        WorkerState::Starting => (WorkerStateName::Starting, None),
        WorkerState::Ready(_) => (WorkerStateName::Ready, None),
        WorkerState::Down(reason) => (WorkerStateName::Down, Some(reason)),
        WorkerState::Stopped => (WorkerStateName::Stopped, None),
    };
    WorkerReport {
        index: figures.index,
        pid: figures.pid,
        state,
        turns_in_flight: figures.turns_in_flight,
        turns_served: figures.turns_served,
        restarts: figures.restarts,
        threads_loaded: figures.threads_loaded,
        spare_threads: figures.spare_threads,
        spare_threads_used: figures.spare_threads_used,
        error,
    }
}

pub async fn admin_reload(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authenticate_admin(&snapshot, &headers) {
        return error.into_response();
    }
    drop(snapshot);
    match reload(&state, "admin").await {
        Ok(outcome) => Json(json!({"status": "ok", "reload": outcome})).into_response(),
        Err(ReloadError::NoConfigFile) => ApiError::invalid(
            "The server was started without --config: there is no config file to reload.",
            None,
        )
        .into_response(),
        Err(ReloadError::Invalid(errors)) => {
            let problems: Vec<String> = errors
                .problems
                .iter()
                .map(|problem| errors.describe(problem))
                .collect();
            let mut response = ApiError::InvalidRequest {
                message: format!(
                    "The config file is invalid; the previous configuration is still serving. {}",
                    problems.join("; ")
                ),
                param: None,
                code: Some("invalid_config"),
            }
            .into_response();
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
    }
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::RouteNotFound(format!(
        "Unknown path {}. This proxy serves /v1/chat/completions, /v1/models, /v1/quota, /health, /ready and /metrics.",
        uri.path()
    ))
    .into_response()
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}.", uri.path()))
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{global_counters, profile_counters, worker_report};
    use crate::engine::app_server::worker::{Worker, WorkerState};
    use crate::turn::Usage;

    #[test]
    fn worker_reports_keep_their_json_shape() {
        let worker = Worker::new(3);
        let report = serde_json::to_value(worker_report(worker.figures())).unwrap();
        assert_eq!(
            report,
            json!({"index": 3, "pid": null, "state": "starting", "turns_in_flight": 0,
                   "turns_served": 0, "restarts": 0, "threads_loaded": null,
                   "spare_threads": 0, "spare_threads_used": 0})
        );
        worker.set_state(WorkerState::Down("exited".into()));
        worker
            .threads_loaded
            .store(2, std::sync::atomic::Ordering::Relaxed);
        worker.pid.store(42, std::sync::atomic::Ordering::Relaxed);
        let report = serde_json::to_value(worker_report(worker.figures())).unwrap();
        assert_eq!(report["state"], json!("down"));
        assert_eq!(report["error"], json!("exited"));
        assert_eq!(report["threads_loaded"], json!(2));
        assert_eq!(report["pid"], json!(42));
    }

    #[test]
    fn counters_keep_their_json_shape() {
        let metrics = crate::metrics::Metrics::default();
        let stats = metrics.profile("p");
        metrics.request_started(Some(&stats));
        metrics.request_error(Some(&stats), 429);
        metrics.request_started(Some(&stats));
        let usage = Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            total_tokens: 7,
            ..Usage::default()
        };
        metrics.request_ok(&stats, &usage);
        let profile = serde_json::to_value(profile_counters(metrics.profile_figures("p"))).unwrap();
        assert_eq!(
            profile,
            json!({"requests": 2, "ok": 1, "errors_by_status": {"429": 1}, "in_flight": 0,
                   "tokens": {"prompt": 5, "completion": 2, "total": 7},
                   "tool_turns_held": 0, "tool_turns_continued": 0, "tool_turns_expired": 0,
                   "tool_turns_replayed": 0})
        );
        let mut global = serde_json::to_value(global_counters(metrics.global_figures())).unwrap();
        assert!(global["uptime_seconds"].as_f64().unwrap() >= 0.0);
        global.as_object_mut().unwrap().remove("uptime_seconds");
        assert_eq!(
            global,
            json!({"requests_total": 2, "requests_ok": 1, "requests_error": 1,
                   "errors_by_status": {"429": 1}})
        );
    }
}
