//! The checks every request passes before any route sees it, in one middleware ([`guard`]):
//!
//! - `Host` must name this server: a loopback name or address, the bind address (`[server] host`), or a
//!   name in `[server] allowed_hosts`. A web page cannot then reach the proxy through a DNS name it
//!   controls that resolves to 127.0.0.1 (DNS rebinding). A request without `Host` is refused: every
//!   HTTP client this server serves sends one.
//! - A request with `Origin` comes from a browser page; it is refused unless that origin is in
//!   `[server] cors_origins`. Listed origins get CORS headers, and their preflight `OPTIONS` gets 204.
//! - A `POST` with a body must say `Content-Type: application/json`, so an HTML form or a `no-cors`
//!   fetch (which can only send form and `text/plain` bodies) cannot start a Codex run.
//!
//! The middleware loads the request's one snapshot and hands it to the handler as a [`Loaded`]
//! extension, so the settings checked here are the settings the handler uses.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::config::ServerConfig;
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;

/// The request's one snapshot, loaded by [`guard`].
#[derive(Clone)]
pub struct Loaded(pub Arc<Snapshot>);

/// Request headers a listed origin may send when the browser does not name them in its preflight.
const ALLOW_HEADERS: &str =
    "authorization, content-type, accept, openai-organization, openai-project, x-request-id";
/// Response headers a listed origin's scripts may read.
const EXPOSE_HEADERS: &str = "x-request-id, retry-after, www-authenticate";

pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let snapshot = state.snapshot();
    let server = &snapshot.config.server;
    if let Err(error) = check_host(server, request.headers()) {
        return error.into_response();
    }
    let origin = match check_origin(server, request.headers()) {
        Ok(origin) => origin,
        Err(error) => return error.into_response(),
    };
    if let Some(origin) = &origin {
        if request.method() == Method::OPTIONS {
            return preflight(origin, request.headers());
        }
    }
    if let Err(error) = check_content_type(request.method(), request.headers()) {
        return with_cors(error.into_response(), origin.as_ref());
    }
    request.extensions_mut().insert(Loaded(snapshot.clone()));
    drop(snapshot);
    with_cors(next.run(request).await, origin.as_ref())
}

/// The host name of a `Host` value, lower-cased, without port, brackets or a trailing dot.
pub fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    let name = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        inside
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => value,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// Whether a `Host` name is accepted (see the module documentation).
pub fn host_allowed(server: &ServerConfig, name: &str) -> bool {
    if crate::config::is_loopback(name) {
        return true;
    }
    let bind = server
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let unspecified = bind.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    (!unspecified && bind == name) || server.allowed_hosts.iter().any(|host| host == name)
}

fn check_host(server: &ServerConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let Some(value) = value else {
        return Err(ApiError::AccessDenied {
            message: "The request has no Host header; send one (every HTTP/1.1 client does)."
                .to_string(),
            code: "host_not_allowed",
        });
    };
    match host_name(value) {
        Some(name) if host_allowed(server, &name) => Ok(()),
        _ => Err(ApiError::AccessDenied {
            message: format!(
                "The Host {:?} is not accepted by this proxy. Connect through localhost or the bind address, or add the name to [server] allowed_hosts.",
                value.chars().take(256).collect::<String>()
            ),
            code: "host_not_allowed",
        }),
    }
}

/// The request's `Origin`, if it has one and it is allowed; an error if it is not.
fn check_origin(
    server: &ServerConfig,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, ApiError> {
    let Some(value) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let listed = server
        .cors_origins
        .iter()
        .any(|origin| origin == "*" || *origin == text);
    if listed {
        return Ok(Some(value.clone()));
    }
    Err(ApiError::AccessDenied {
        message: format!(
            "Requests from the browser origin {:?} are not allowed. To let a web page use this proxy, add its origin to [server] cors_origins.",
            text.chars().take(256).collect::<String>()
        ),
        code: "origin_not_allowed",
    })
}

/// A `POST` body, when there is one, must be JSON.
fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if method != Method::POST {
        return Ok(());
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|length| length.trim() != "0");
    if !has_body {
        return Ok(());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type.is_some_and(is_json) {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "The request body must be JSON: send it with 'Content-Type: application/json' (got {}).",
        content_type.map_or("no Content-Type".to_string(), |t| format!(
            "{:?}",
            t.chars().take(128).collect::<String>()
        ))
    )))
}

/// `application/json`, with any parameters (such as `charset`), in any case.
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"))
}

/// The 204 answer to a listed origin's preflight.
fn preflight(origin: &HeaderValue, headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    // The SDKs send their own headers (such as `x-stainless-*`); any well-formed list the browser asks
    // for is allowed, since the key, not the header list, is what protects the API.
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.to_str().is_ok_and(|list| {
                list.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
            })
        })
        .cloned();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        requested.unwrap_or(HeaderValue::from_static(ALLOW_HEADERS)),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    with_cors(response, Some(origin))
}

/// Adds the CORS headers for an allowed origin.
fn with_cors(mut response: Response, origin: Option<&HeaderValue>) -> Response {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_port_brackets_and_case() {
        assert_eq!(host_name("LocalHost:8765").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_name("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host_name("a:b"), None);
        assert_eq!(host_name("[::1]x"), None);
        assert_eq!(host_name(""), None);
    }

    #[test]
    fn accepts_loopback_the_bind_address_and_listed_hosts() {
        let mut server = ServerConfig {
            host: "192.168.1.5".into(),
            allowed_hosts: vec!["proxy.lan".into()],
            ..ServerConfig::default()
        };
        for name in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "192.168.1.5",
            "proxy.lan",
        ] {
            assert!(host_allowed(&server, name), "{name}");
        }
        for name in ["evil.example", "192.168.1.6", "localhost.evil.example"] {
            assert!(!host_allowed(&server, name), "{name}");
        }
        server.host = "0.0.0.0".into();
        assert!(!host_allowed(&server, "0.0.0.0"));
        assert!(!host_allowed(&server, "192.168.1.5"));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=y",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
