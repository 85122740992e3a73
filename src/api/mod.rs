//! The HTTP surface. [`router`] is the only place routes are listed; it adds the request-id layer and
//! [`guard::guard`] (Host, Origin and Content-Type checks, which loads the request's one snapshot).
//! Authentication helpers live here; each handler calls them with that snapshot.
//!
//! Who may use what: a server key (`[server] api_keys`) opens every profile that sets no `api_keys`; a
//! profile key opens only the profiles that list it. Without server keys, profiles without `api_keys`
//! are open to every caller, whatever key it sends. `/ready`, `/metrics` and `/v1/quota` need a server
//! key whenever any key is configured, unless `[server] public_metrics = true`.
//!
//! A key written as a table (`{ name, key, max_concurrency, requests_per_minute, profiles }`) is
//! known by its name; a plain key by its fingerprint ([`key_fingerprint`]). [`authorize_profile`] also
//! admits the request to the profile's account (logged in, not out of quota) and to the key's limits.

pub mod body;
pub mod chat;
pub mod error;
pub mod guard;
pub mod messages;
pub mod models;
pub mod ops;
pub mod pipeline;
pub mod prometheus;
pub mod request_log;
pub mod responses;
pub mod sse;
pub mod ui;
pub mod usage;

/// The chat request parser under its earlier path.
pub use chat::request as types;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use std::sync::Arc;

use crate::account::keys::{KeyGuard, Limits as KeyLimitsOf, Refusal};
use crate::account::{not_logged_in_reason, Login};
use crate::config::{NamedKey, Profile};
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use error::ApiError;

/// All routes of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*model}", get(models::get_model))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/v1/quota", get(ops::quota))
        .route("/admin/reload", post(ops::admin_reload))
        .route("/v1/usage", get(usage::get_usage))
        .route("/ui", get(ui::page))
        .route("/ui/{*rest}", get(ui::sub))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
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

/// Gives each request its id (`X-Request-Id`) and names the profile that served it
/// (`X-Codex-Proxy-Profile`, noted by the pipeline: after fallbacks, the last profile tried).
async fn request_id_layer(mut request: Request, next: Next) -> Response {
    let id = new_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let (mut response, profile) = pipeline::with_served_by(next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    if let Some(value) = profile.and_then(|name| HeaderValue::from_str(&name).ok()) {
        response
            .headers_mut()
            .insert("x-codex-proxy-profile", value);
    }
    response
}

/// The API key a request carries: the `Authorization: Bearer` token, else the `x-api-key` header
/// (Anthropic's clients send their key there). Every key check goes through this one function.
pub fn request_key(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| {
        headers
            .get("x-api-key")?
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|key| !key.is_empty())
    })
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
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

/// Compares two secrets in time that depends only on their lengths (`subtle`'s slice comparison).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Whether `key` is one of `keys`, checking every entry (no early exit that would leak which matched).
fn key_in(keys: &[String], key: &str) -> bool {
    keys.iter().fold(false, |found, candidate| {
        constant_time_eq(candidate.as_bytes(), key.as_bytes()) | found
    })
}

/// Who sent a request, as far as the keys tell.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The bearer token, if any (checked against profile keys later).
    pub token: Option<String>,
    /// The token is one of `[server] api_keys`.
    pub server_key: bool,
    /// The key's table entry (name, limits, profiles), when it was written as one.
    pub named: Option<NamedKey>,
    /// The key's concurrency slot, once [`authorize_profile`] admitted the request; the pipeline moves
    /// it into the request's `InFlight` ([`Caller::take_key_guard`]) so it lives until the response
    /// ends. Shared by clones.
    key_guard: Arc<parking_lot::Mutex<Option<KeyGuard>>>,
}

impl Caller {
    /// The name logs, metrics and the usage ledger show for the caller's key, never the key itself:
    /// the `name` of a key table, else `key-` and a short SHA-256 fingerprint. `None` without a key.
    pub fn key_name(&self) -> Option<String> {
        match &self.named {
            Some(named) => Some(named.name.clone()),
            None => self.token.as_deref().map(key_fingerprint),
        }
    }

    /// The per-key concurrency slot taken by [`authorize_profile`], for the request to hold until its
    /// response has ended (`InFlight::holding`).
    pub fn take_key_guard(&self) -> Option<KeyGuard> {
        self.key_guard.lock().take()
    }
}

/// The table entry of `token` among every `api_keys` table of the config, comparing each in constant
/// time and all of them (the first match wins; `check` allows one name per key).
fn named_key(snapshot: &Snapshot, token: &str) -> Option<NamedKey> {
    let config = &snapshot.config;
    let tables = config.server.named_keys.iter().chain(
        config
            .profiles
            .iter()
            .flat_map(|profile| profile.access.named_keys.iter()),
    );
    tables.fold(None, |found, named| {
        let matches = constant_time_eq(named.key.as_bytes(), token.as_bytes());
        match found {
            Some(found) => Some(found),
            None if matches => Some(named.clone()),
            None => None,
        }
    })
}

/// `key-` and the first 8 hex digits of the key's SHA-256: stable, short, and not reversible.
pub fn key_fingerprint(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("key-{hex}")
}

/// Whether any key is configured: server keys or any profile's keys.
pub fn keys_configured(snapshot: &Snapshot) -> bool {
    !snapshot.config.server.api_keys.is_empty()
        || snapshot
            .config
            .profiles
            .iter()
            .any(|profile| !profile.access.api_keys.is_empty())
}

/// Server-level authentication. With no server keys configured, anyone passes (the bearer, if any, is
/// kept for per-profile checks); otherwise the bearer must be a server key or a profile key.
pub fn authenticate(snapshot: &Snapshot, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = request_key(headers).map(str::to_string);
    let server_keys = &snapshot.config.server.api_keys;
    let server_key = token
        .as_deref()
        .is_some_and(|token| key_in(server_keys, token));
    let named = token
        .as_deref()
        .and_then(|token| named_key(snapshot, token));
    if server_keys.is_empty() {
        return Ok(Caller {
            token,
            server_key,
            named,
            ..Caller::default()
        });
    }
    let Some(token) = token else {
        return Err(ApiError::Unauthorized(
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
                .to_string(),
        ));
    };
    let profile_key = snapshot
        .config
        .profiles
        .iter()
        .fold(false, |found, profile| {
            key_in(&profile.access.api_keys, &token) | found
        });
    if server_key | profile_key {
        Ok(Caller {
            token: Some(token),
            server_key,
            named,
            ..Caller::default()
        })
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
    match request_key(headers) {
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

/// Access to `/ready` and `/metrics` (and the details of `/health`): open when no key is configured
/// or `public_metrics` is set, else only with a server key.
pub fn authorize_ops(snapshot: &Snapshot, headers: &HeaderMap) -> Result<(), ApiError> {
    if snapshot.config.server.public_metrics || !keys_configured(snapshot) {
        return Ok(());
    }
    let server_keys = &snapshot.config.server.api_keys;
    match request_key(headers) {
        Some(token) if key_in(server_keys, token) => Ok(()),
        _ => Err(ApiError::Unauthorized(
            "This endpoint needs a server-level key (one of [server] api_keys) as 'Authorization: Bearer <key>'. To open it to scrapers on a trusted network, set [server] public_metrics = true."
                .to_string(),
        )),
    }
}

/// Whether `caller` may use `profile`: a profile with `api_keys` only with one of them; any other
/// profile with a server key, or by anyone when no server keys are configured. A key table's
/// `profiles` narrows that to the profiles it lists.
pub fn may_use(snapshot: &Snapshot, profile: &Profile, caller: &Caller) -> bool {
    let listed = caller
        .named
        .as_ref()
        .and_then(|named| named.profiles.as_ref())
        .is_none_or(|profiles| profiles.contains(&profile.name));
    if !listed {
        return false;
    }
    if !profile.access.api_keys.is_empty() {
        return caller
            .token
            .as_deref()
            .is_some_and(|key| key_in(&profile.access.api_keys, key));
    }
    snapshot.config.server.api_keys.is_empty() || caller.server_key
}

/// Per-profile authorisation: 401 without a key, 403 with a key that may not use the profile.
pub fn authorize_profile(
    snapshot: &Snapshot,
    profile: &Profile,
    model: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    if may_use(snapshot, profile, caller) {
        check_account(snapshot, profile)?;
        return admit_key(snapshot, caller);
    }
    Err(refusal(model, caller))
}

/// The refusal of a caller that may not use the profile `model` routed to: 401 without a key, 403
/// with a key that does not open it.
pub fn refusal(model: &str, caller: &Caller) -> ApiError {
    match caller.token {
        None => ApiError::Unauthorized(format!(
            "The model `{model}` requires an API key: send it as 'Authorization: Bearer <key>'."
        )),
        Some(_) => ApiError::Forbidden(format!(
            "This API key is not allowed to use the model `{model}`: a profile's own key opens only that profile; use a server key or the key listed in its api_keys."
        )),
    }
}

/// The profile's account can serve: logged in (503 `codex_not_logged_in` when Codex said it is not)
/// and not out of quota (429 `insufficient_quota`, `Retry-After` at the window's reset). Part of
/// [`authorize_profile`]; a fallback hop calls it (with [`may_use`]) without admitting the key again.
pub fn check_account(snapshot: &Snapshot, profile: &Profile) -> Result<(), ApiError> {
    let Some(account) = snapshot.account_of(&profile.name) else {
        return Ok(());
    };
    let book = crate::account::book();
    if account.needs_login && book.login(&account.codex_home) == Login::NotLoggedIn {
        return Err(ApiError::Unavailable {
            message: format!(
                "Codex is {}, so profile `{}` cannot answer. Log in on the proxy's machine and retry; no restart is needed.",
                not_logged_in_reason(&account.codex_home),
                profile.name
            ),
            code: "codex_not_logged_in",
        });
    }
    let now = crate::account::unix_now();
    if let Some(reset) = book.account(&account.codex_home).exhausted_until(now) {
        return Err(ApiError::RateLimited {
            message: format!(
                "The Codex account of profile `{}` has used its quota; it resets at unix time {reset}.",
                profile.name
            ),
            code: "insufficient_quota",
            retry_after_seconds: Some(reset - now),
        });
    }
    Ok(())
}

/// Applies the caller's per-key limits (429 `rate_limit_exceeded` with `Retry-After`), keeping the
/// concurrency slot in the caller for the pipeline to hold. Part of [`authorize_profile`]; the
/// pipeline's fallback loop calls it once per request, whichever profile serves.
pub fn admit_key(snapshot: &Snapshot, caller: &Caller) -> Result<(), ApiError> {
    let Some(named) = &caller.named else {
        return Ok(());
    };
    let limits = KeyLimitsOf {
        max_concurrency: named.max_concurrency,
        requests_per_minute: named.requests_per_minute,
    };
    match snapshot
        .key_limits
        .admit(&named.name, limits, std::time::Instant::now())
    {
        Ok(guard) => {
            *caller.key_guard.lock() = Some(guard);
            Ok(())
        }
        Err(Refusal::Concurrency { limit }) => Err(ApiError::RateLimited {
            message: format!(
                "The API key `{}` already has {limit} requests running, its max_concurrency; retry when one ends.",
                named.name
            ),
            code: "rate_limit_exceeded",
            retry_after_seconds: Some(1),
        }),
        Err(Refusal::RequestsPerMinute {
            limit,
            retry_after_seconds,
        }) => Err(ApiError::RateLimited {
            message: format!(
                "The API key `{}` has started {limit} requests in the last minute, its requests_per_minute; retry in {retry_after_seconds} s.",
                named.name
            ),
            code: "rate_limit_exceeded",
            retry_after_seconds: Some(retry_after_seconds),
        }),
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
    fn the_key_comes_from_the_bearer_else_from_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_key(&headers), None);
        headers.insert("x-api-key", HeaderValue::from_static(" sk-ant "));
        assert_eq!(request_key(&headers), Some("sk-ant"));
        // A bearer token wins over x-api-key.
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-openai"),
        );
        assert_eq!(request_key(&headers), Some("sk-openai"));
        // Another scheme is no key: x-api-key is used.
        headers.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(request_key(&headers), Some("sk-ant"));
        headers.insert("x-api-key", HeaderValue::from_static(""));
        assert_eq!(request_key(&headers), None);
    }

    #[test]
    fn x_api_key_authenticates_every_check() {
        let config = crate::config::parse(
            "[server]\napi_keys = [\"sk-server\"]\n[profiles.p]\n",
            std::path::Path::new("c.toml"),
            &crate::config::ServerOverrides::default(),
            &|_| None,
        )
        .unwrap();
        let snapshot = Snapshot::for_tests(config);
        let mut headers = HeaderMap::new();
        assert!(authenticate(&snapshot, &headers).is_err());
        assert!(authenticate_admin(&snapshot, &headers).is_err());
        assert!(authorize_ops(&snapshot, &headers).is_err());
        headers.insert("x-api-key", HeaderValue::from_static("sk-server"));
        let caller = authenticate(&snapshot, &headers).expect("x-api-key accepted");
        assert!(caller.server_key);
        assert!(authenticate_admin(&snapshot, &headers).is_ok());
        assert!(authorize_ops(&snapshot, &headers).is_ok());
        headers.insert("x-api-key", HeaderValue::from_static("sk-wrong"));
        assert!(authenticate(&snapshot, &headers).is_err());
    }

    #[test]
    fn key_names_are_fingerprints() {
        assert_eq!(key_fingerprint("secret"), key_fingerprint("secret"));
        assert_ne!(key_fingerprint("secret"), key_fingerprint("secret2"));
        let name = key_fingerprint("sk-very-secret-key");
        assert!(name.starts_with("key-") && name.len() == 12, "{name}");
        assert!(!name.contains("secret"));
    }

    #[test]
    fn ids_are_distinct() {
        assert_ne!(new_id(), new_id());
        assert_eq!(new_id().len(), 24);
    }
}
