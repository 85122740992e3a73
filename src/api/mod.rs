//! The HTTP surface. [`router`] is the only place routes are listed; it adds the request-id layer.
//! Authentication helpers live here because every protected handler uses the snapshot it already loaded
//! (one snapshot load per request), rather than a middleware that would load its own.

pub mod chat;
pub mod error;
pub mod models;
pub mod ops;
pub mod types;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::config::Profile;
use crate::snapshot::Snapshot;
use crate::state::AppState;
use error::ApiError;

/// All routes of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*model}", get(models::get_model))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/admin/reload", post(ops::admin_reload))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn(request_id_layer))
        .with_state(state)
}

/// The id of one HTTP request, also sent back as `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A new random hex id (not a secret; unique enough to correlate logs).
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    hasher.write_u64(nanos);
    let high = hasher.finish();
    hasher.write_u64(high);
    format!("{high:016x}{:08x}", hasher.finish() as u32)
}

async fn request_id_layer(mut request: Request, next: Next) -> Response {
    let id = new_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = (a.len() ^ b.len()) as u64;
    for index in 0..a.len().max(b.len()) {
        let x = a.get(index).copied().unwrap_or(0);
        let y = b.get(index).copied().unwrap_or(0);
        difference |= u64::from(x ^ y);
    }
    difference == 0
}

/// Whether `key` is one of `keys`, checking every entry (no early exit that would leak which matched).
fn key_in(keys: &[String], key: &str) -> bool {
    keys.iter().fold(false, |found, candidate| {
        constant_time_eq(candidate.as_bytes(), key.as_bytes()) | found
    })
}

/// Server-level authentication. With no server keys configured, anyone passes (the bearer, if any, is
/// returned for per-profile checks); otherwise the bearer must be a server key or a profile key.
pub fn authenticate(snapshot: &Snapshot, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let token = bearer(headers).map(str::to_string);
    let server_keys = &snapshot.config.server.api_keys;
    if server_keys.is_empty() {
        return Ok(token);
    }
    let Some(token) = token else {
        return Err(ApiError::Unauthorized(
            "Missing API key: send it as 'Authorization: Bearer <key>'.".to_string(),
        ));
    };
    let known = key_in(server_keys, &token)
        | snapshot
            .config
            .profiles
            .iter()
            .fold(false, |found, profile| {
                key_in(&profile.api_keys, &token) | found
            });
    if known {
        Ok(Some(token))
    } else {
        Err(ApiError::Unauthorized(
            "Incorrect API key provided. Use a key listed in the proxy's api_keys.".to_string(),
        ))
    }
}

/// Server-level authentication that accepts only server keys (for `/admin/*`).
pub fn authenticate_admin(snapshot: &Snapshot, headers: &HeaderMap) -> Result<(), ApiError> {
    let server_keys = &snapshot.config.server.api_keys;
    if server_keys.is_empty() {
        return Ok(());
    }
    match bearer(headers) {
        Some(token) if key_in(server_keys, token) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(
            "Incorrect API key provided: admin endpoints need a server-level key.".to_string(),
        )),
        None => Err(ApiError::Unauthorized(
            "Missing API key: send a server-level key as 'Authorization: Bearer <key>'."
                .to_string(),
        )),
    }
}

/// Whether `key` may use `profile` (its own `api_keys`, when set).
pub fn may_use(profile: &Profile, key: Option<&str>) -> bool {
    profile.api_keys.is_empty() || key.is_some_and(|key| key_in(&profile.api_keys, key))
}

/// Per-profile authorisation: 401 without a key, 403 with a key the profile does not list.
pub fn authorize_profile(
    profile: &Profile,
    model: &str,
    key: Option<&str>,
) -> Result<(), ApiError> {
    if may_use(profile, key) {
        return Ok(());
    }
    match key {
        None => Err(ApiError::Unauthorized(format!(
            "The model `{model}` requires an API key: send it as 'Authorization: Bearer <key>'."
        ))),
        Some(_) => Err(ApiError::Forbidden(format!(
            "This API key is not allowed to use the model `{model}`."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn parses_bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", HeaderValue::from_static("Bearer  abc "));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn ids_are_distinct() {
        assert_ne!(new_id(), new_id());
        assert_eq!(new_id().len(), 24);
    }
}
