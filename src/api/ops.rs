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
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::api::{authenticate_admin, authorize_ops};
use crate::live::reload::{reload, ReloadError};
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use crate::report::{
    CodexReport, ConfigReport, Health, Metrics as MetricsReport, PoolId, ProfileMetrics,
    ProfileReadiness, Ready, ReadyStatus,
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
        let workers = pool.engine().workers_report().await.map(typed);
        let block = ProfileMetrics {
            counters: typed(metrics.profile_json(&profile.name)),
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
        counters: typed(metrics.global_json()),
        profiles,
        config: config_report(&state, &snapshot),
    };
    Json(body).into_response()
}

/// The typed form of a block the counters and workers build as JSON. They are built from the same
/// field names (`src/metrics.rs`, `src/engine/app_server/worker.rs`); a mismatch is a bug, caught by
/// the `ops_reports_match_their_sources` test, and shows as default figures rather than a failed scrape.
fn typed<T: serde::de::DeserializeOwned + Default>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|err| {
        tracing::error!("a /metrics block does not match its report type: {err}");
        T::default()
    })
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
    use crate::engine::app_server::worker::{Worker, WorkerState};
    use crate::report::{GlobalCounters, ProfileCounters, WorkerReport};

    #[test]
    fn ops_reports_match_their_sources() {
        let metrics = crate::metrics::Metrics::default();
        serde_json::from_value::<GlobalCounters>(metrics.global_json()).unwrap();
        serde_json::from_value::<ProfileCounters>(metrics.profile_json("p")).unwrap();
        let worker = Worker::new(0);
        serde_json::from_value::<WorkerReport>(worker.to_json()).unwrap();
        worker.set_state(WorkerState::Down("exited".into()));
        let report = serde_json::from_value::<WorkerReport>(worker.to_json()).unwrap();
        assert_eq!(report.error.as_deref(), Some("exited"));
    }
}
