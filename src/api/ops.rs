//! Operational endpoints: `/health` (the process answers), `/ready` (every profile's Codex binary runs,
//! and the config's reload state), `/metrics` (JSON counters), `POST /admin/reload`, and the JSON 404/405
//! fallbacks. None of them ever shows an API key. `/health` is public but says only `status` and `pid`
//! to callers that may not read `/ready`; `/ready` and `/metrics` follow [`authorize_ops`].

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

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `status`, and the pid (the daemon commands check that the server answering is the one they started;
/// any local user sees it in `/proc` anyway). Version, uptime and config details only with ops access.
pub async fn health(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
) -> Json<Value> {
    if authorize_ops(&snapshot, &headers).is_err() {
        return Json(json!({"status": "ok", "pid": std::process::id()}));
    }
    Json(json!({
        "status": "ok",
        "version": VERSION,
        "pid": std::process::id(),
        "uptime_seconds": state.metrics().started_at.elapsed().as_secs_f64(),
        "config_generation": snapshot.generation,
        "profiles": snapshot.config.profiles.len(),
    }))
}

fn config_json(state: &AppState, snapshot: &Snapshot) -> Value {
    let status = state.reload_status();
    json!({
        "path": state.config_path().map(|p| p.display().to_string()),
        "generation": snapshot.generation,
        "last_reload_at": status
            .last_reload_at
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        "last_error": status.last_error,
        "reloads_ok": status.reloads_ok,
        "reloads_failed": status.reloads_failed,
        "restart_required": status.restart_required,
        "watch": status.watch,
    })
}

pub async fn ready(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize_ops(&snapshot, &headers) {
        return error.into_response();
    }
    let codex = &snapshot.codex;
    let mut all_ready = true;
    let mut profiles = serde_json::Map::new();
    for (profile, pool) in snapshot.config.profiles.iter().zip(&snapshot.pools) {
        let reason = pool.readiness().err();
        all_ready &= reason.is_none();
        profiles.insert(
            profile.name.clone(),
            json!({
                "ready": reason.is_none(),
                "engine": profile.engine.as_str(),
                "reason": reason,
            }),
        );
    }
    let resolved = codex.resolved.as_ref().ok();
    let body = json!({
        "status": if all_ready { "ready" } else { "not_ready" },
        "codex": {
            "codex_bin": snapshot.config.server.codex_bin,
            "program": resolved.map(|r| r.program.display().to_string()),
            "npm_launcher_bypassed": resolved.and_then(|r| r.bypassed_launcher.as_ref()).map(|p| p.display().to_string()),
            "version": codex.version.as_ref().ok(),
            "error": codex.version.as_ref().err(),
        },
        "profiles": profiles,
        "config": config_json(&state, &snapshot),
    });
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
    let mut body = metrics.global_json();
    let mut profiles = serde_json::Map::new();
    for (profile, pool) in snapshot.config.profiles.iter().zip(&snapshot.pools) {
        let mut block = metrics.profile_json(&profile.name);
        block["engine"] = json!(profile.engine.as_str());
        block["queued"] = json!(pool.queued());
        block["running"] = json!(pool.running());
        block["max_concurrency"] = json!(profile.max_concurrency);
        block["pool"] = json!({"id": pool.id});
        if let Some(app_server) = pool.app_server() {
            block["workers"] = app_server.workers_json().await;
        }
        profiles.insert(profile.name.clone(), block);
    }
    body["profiles"] = Value::Object(profiles);
    body["config"] = config_json(&state, &snapshot);
    Json(body).into_response()
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
