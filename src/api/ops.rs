//! Operational endpoints: `/health` (the process answers), `/ready` (every profile's Codex binary runs,
//! and the config's reload state), `/metrics` (JSON counters), `POST /admin/reload`, and the JSON 404/405
//! fallbacks. None of them ever shows an API key. `/health` is public but says only `status` and `pid`
//! to callers that may not read `/ready`; `/ready` and `/metrics` follow [`authorize_ops`].

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde_json::json;

use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::api::{authenticate_admin, authorize_ops};
use crate::engine::app_server::worker::{WorkerFigures, WorkerState};
use crate::live::reload::{reload, ReloadError};
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use crate::metrics::{GlobalFigures, ProfileFigures};
use crate::report::{
    CodexReport, ConfigReport, GlobalCounters, Health, Metrics as MetricsReport, PoolId,
    ProfileCounters, ProfileMetrics, ProfileReadiness, Ready, ReadyStatus, Tokens, WorkerReport,
    WorkerStateName,
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
    let mut profiles = BTreeMap::new();
    for (profile, pool) in snapshot.config.profiles.iter().zip(&snapshot.pools) {
        let readiness = pool.readiness();
        profiles.insert(
            profile.name.clone(),
            ProfileReadiness {
                ready: readiness.is_ready(),
                engine: profile.runtime.engine.as_str().to_string(),
                reason: readiness.reason(),
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
    };
    Json(body).into_response()
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
        "Unknown path {}. This proxy serves /v1/chat/completions, /v1/models, /health, /ready and /metrics.",
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
                   "turns_served": 0, "restarts": 0, "threads_loaded": null})
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
