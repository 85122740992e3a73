//! `GET /v1/usage?since=7d&by=day`: the usage ledger's summary as JSON, the same
//! [`crate::usage::UsageReport`] that `codex-api-proxy usage --json` prints. Access follows
//! [`authorize_ops`] (a server key, as `/metrics`). The file is read on a blocking thread through a
//! read-only connection, so a busy ledger never slows the async workers.
//!
//! Errors: a bad `since` or `by` is a 400 naming the parameter; a ledger that is off is a 404 saying
//! how to turn it on; a file that cannot be read is a 503.

use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api::authorize_ops;
use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::live::state::AppState;
use crate::usage::{parse_since, By, Reader, UsageError};

/// The query string; both parameters optional.
#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    /// A window like `30m`, `24h`, `7d` (the default) or `2w`.
    since: Option<String>,
    /// `day` (the default), `profile`, `key` or `model`.
    by: Option<String>,
}

pub async fn get_usage(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(error) = authorize_ops(&snapshot, &headers) {
        return error.into_response();
    }
    drop(snapshot);
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return ApiError::invalid(format!("Invalid query string: {rejection}"), None)
                .into_response()
        }
    };
    let window = match parse_since(query.since.as_deref().unwrap_or("7d")) {
        Ok(window) => window,
        Err(error) => return ApiError::invalid(error.to_string(), Some("since")).into_response(),
    };
    let by: By = match query.by.as_deref().unwrap_or("day").parse() {
        Ok(by) => by,
        Err(error) => return ApiError::invalid(error.to_string(), Some("by")).into_response(),
    };
    let since = SystemTime::now()
        .checked_sub(window)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let Some(path) = state.usage().readable_path().map(|path| path.to_path_buf()) else {
        return ledger_off(&state).into_response();
    };
    let read = tokio::task::spawn_blocking(move || Reader::open(&path)?.report(since, by)).await;
    match read {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(error)) => unreadable(&error).into_response(),
        Err(join) => {
            tracing::error!(error = %join, "usage ledger read panicked");
            ApiError::Unavailable {
                message: "The usage ledger could not be read; see the server log.".to_string(),
                code: "usage_unavailable",
            }
            .into_response()
        }
    }
}

/// The 404 of a server without a ledger, saying why.
fn ledger_off(state: &AppState) -> ApiError {
    let status = state.usage().status();
    let message = match status.error {
        Some(_) => "The usage ledger could not be opened when the server started, so there is no usage to report; the server log says why.".to_string(),
        None => "The usage ledger is off: set [server] usage_db to a file path (the default is ~/.codex-api-proxy/usage.sqlite3) and restart.".to_string(),
    };
    ApiError::RouteNotFound(message)
}

/// A 503 for a ledger file that exists but cannot be read now; details go to the log only.
fn unreadable(error: &UsageError) -> ApiError {
    tracing::warn!(error = %error, "usage ledger read failed");
    ApiError::Unavailable {
        message: "The usage ledger could not be read right now; see the server log.".to_string(),
        code: "usage_unavailable",
    }
}
