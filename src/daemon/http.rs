//! How the commands talk to a running server: one `reqwest` client per request under a timeout
//! (plain HTTP to a loopback or bind address, no proxy from the environment), the probes the
//! commands share (`/health`, `/ready`, `/metrics`, `/v1/models`), read into the typed bodies of
//! `crate::report`, and where to connect to a bound address.
//!
//! It prints nothing and reads nothing of an answer beyond its status and (JSON) body.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub(super) use reqwest::Method;

use crate::report::{Health, Metrics, Ready, VERSION};

/// Timeout of one health/status request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One HTTP answer.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    body: String,
}

impl Reply {
    /// The body as JSON (`null` if it is not JSON).
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The body as `T`; an error says which field is missing or wrong.
    pub(super) fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.body).context("the server's answer is not in the expected shape")
    }

    /// The `error.message` of an OpenAI-shaped error body, else the body.
    pub(super) fn error_message(&self) -> String {
        self.json()
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.body.trim().to_string())
    }
}

/// One request to `address` with an empty body (with `Authorization: Bearer KEY` given a key).
pub(super) async fn http(
    address: SocketAddr,
    method: Method,
    path: &str,
    key: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    // The environment's HTTP proxy must not see loopback requests carrying keys.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .user_agent(format!("codex-api-proxy/{VERSION}"))
        .build()
        .context("cannot set up the HTTP client")?;
    let mut request = client
        .request(method, format!("http://{address}{path}"))
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|err| {
        if err.is_timeout() {
            anyhow!("no answer within {} s", timeout.as_secs())
        } else {
            anyhow!("{}", error_chain(&err))
        }
    })?;
    let status = response.status().as_u16();
    let body = response.text().await.context("the answer broke off")?;
    Ok(Reply { status, body })
}

/// An error and its causes on one line (reqwest's own message is only the outermost).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `GET /health`, whatever its status.
pub(super) async fn get_health(address: SocketAddr) -> anyhow::Result<Reply> {
    http(address, Method::GET, "/health", None, PROBE_TIMEOUT).await
}

/// The pid a `/health` answer names, `None` if it is not a `/health` body.
pub(super) fn health_pid(health: &Reply) -> Option<u32> {
    health.parse::<Health>().ok().map(|health| health.pid)
}

/// Each key, or no key when there are none.
fn key_candidates(keys: &[String]) -> Vec<Option<&str>> {
    if keys.is_empty() {
        return vec![None];
    }
    keys.iter().map(|key| Some(key.as_str())).collect()
}

/// A GET with the first key the server accepts whose status is one of `accepted`, parsed as `T`.
async fn get_keyed<T: DeserializeOwned>(
    address: SocketAddr,
    path: &str,
    keys: &[String],
    accepted: &[u16],
) -> anyhow::Result<T> {
    let mut last = anyhow!("no key to try");
    for key in key_candidates(keys) {
        match http(address, Method::GET, path, key, PROBE_TIMEOUT).await {
            Ok(reply) if accepted.contains(&reply.status) => {
                return reply.parse().with_context(|| path.to_string())
            }
            Ok(reply) => last = anyhow!("{path} answered HTTP {}", reply.status),
            Err(err) => last = err.context(path.to_string()),
        }
    }
    Err(last)
}

/// `/ready` (it answers 503 while not ready, with the same body).
pub(super) async fn get_ready(address: SocketAddr, keys: &[String]) -> anyhow::Result<Ready> {
    get_keyed(address, "/ready", keys, &[200, 503]).await
}

/// `/metrics`.
pub(super) async fn get_metrics(address: SocketAddr, keys: &[String]) -> anyhow::Result<Metrics> {
    get_keyed(address, "/metrics", keys, &[200]).await
}

/// `/v1/quota`: each account's login and rate-limit windows.
pub(super) async fn get_quota(
    address: SocketAddr,
    keys: &[String],
) -> anyhow::Result<crate::report::Quota> {
    get_keyed(address, "/v1/quota", keys, &[200]).await
}

/// `/health` with a key, which adds the version and uptime when the server has keys.
pub(super) async fn get_keyed_health(
    address: SocketAddr,
    keys: &[String],
) -> anyhow::Result<Health> {
    get_keyed(address, "/health", keys, &[200]).await
}

/// `/v1/models` (an OpenAI list, not a report of this proxy's own, so left as JSON).
pub(super) async fn get_models(address: SocketAddr, keys: &[String]) -> Option<Value> {
    get_keyed(address, "/v1/models", keys, &[200]).await.ok()
}

/// Where to connect to a server bound to `bound` (an unspecified address is reached over loopback).
pub(super) fn connect_address(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_binds_are_reached_over_loopback() {
        assert_eq!(
            connect_address("0.0.0.0:5".parse().unwrap()),
            "127.0.0.1:5".parse().unwrap()
        );
        assert_eq!(
            connect_address("[::]:5".parse().unwrap()),
            "[::1]:5".parse().unwrap()
        );
    }

    #[test]
    fn a_report_with_a_missing_field_is_an_error() {
        let reply = Reply {
            status: 200,
            body: r#"{"status":"ready","codex":{}}"#.to_string(),
        };
        assert!(reply.parse::<Ready>().is_err());
        let reply = Reply {
            status: 200,
            body: r#"{"status":"ok","pid":42}"#.to_string(),
        };
        assert_eq!(health_pid(&reply), Some(42));
    }
}
