//! `GET /ui`: the dashboard, one self-contained page embedded in the binary (no CDN, no build step),
//! and its feeds under `/ui/`:
//!
//! - `/ui` (and `/ui/`): the HTML; it holds no data, so it is served to anyone. The page asks for the
//!   key once, keeps it in `sessionStorage` and sends it as a bearer to every feed.
//! - `/ui/dashboard.js`, `/ui/dashboard.css`: the page's script and style (served from the binary, so
//!   the Content-Security-Policy can forbid inline script).
//! - `/ui/data`: the live figures `/metrics` does not have: the recent requests, the per-minute series,
//!   the ledger's status and its token totals by profile, key and day. Same access rule as `/metrics`
//!   ([`authorize_ops`]).
//!
//! The page also reads `/metrics` and `/v1/quota` itself. It never shows content or keys: the ledger
//! and the live table hold key names (fingerprints), not keys.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::api::authorize_ops;
use crate::api::guard::Loaded;
use crate::live::state::AppState;
use crate::usage::{ActivityView, LedgerStatus, LedgerSummary};

const PAGE: &str = include_str!("ui/dashboard.html");
const SCRIPT: &str = include_str!("ui/dashboard.js");
const STYLE: &str = include_str!("ui/dashboard.css");

/// How far back the dashboard's token tables reach.
const SUMMARY_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// Scripts only from this server, no inline script, no framing, data only from this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The body of `/ui/data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardData {
    /// The server's clock, in milliseconds since the Unix epoch (the charts' right edge).
    pub now_ms: i64,
    pub ledger: LedgerStatus,
    /// Token totals of the last 7 days; `None` when the ledger is off.
    pub usage: Option<LedgerSummary>,
    /// Why `usage` is missing although the ledger is on (the file could not be read just now).
    pub usage_error: Option<String>,
    pub activity: ActivityView,
}

/// `GET /ui`.
pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// Anything under `/ui/`.
pub async fn sub(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match uri.path() {
        "/ui/" | "/ui/index.html" => asset(PAGE, "text/html; charset=utf-8"),
        "/ui/dashboard.js" => asset(SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/dashboard.css" => asset(STYLE, "text/css; charset=utf-8"),
        "/ui/data" => {
            if let Err(error) = authorize_ops(&snapshot, &headers) {
                return error.into_response();
            }
            drop(snapshot);
            data(state).await
        }
        _ => crate::api::ops::not_found(uri).await,
    }
}

async fn data(state: AppState) -> Response {
    let now = SystemTime::now();
    let since = now.checked_sub(SUMMARY_WINDOW).unwrap_or(now);
    let reader = state.clone();
    let summary = tokio::task::spawn_blocking(move || reader.usage().summary(since)).await;
    let (usage, usage_error) = match summary {
        Ok(None) => (None, None),
        Ok(Some(Ok(summary))) => (Some(summary), None),
        Ok(Some(Err(error))) => {
            tracing::warn!(error = %error, "dashboard: usage ledger read failed");
            (
                None,
                Some("the usage ledger could not be read just now".to_string()),
            )
        }
        Err(_) => (None, Some("the usage ledger read failed".to_string())),
    };
    let recorder = state.usage();
    let body = DashboardData {
        now_ms: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0),
        ledger: recorder.status(),
        usage,
        usage_error,
        activity: recorder.activity().view(now),
    };
    no_store(Json(body).into_response())
}

/// An embedded file with its type and the page's security headers.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    no_store(response)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
