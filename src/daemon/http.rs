//! The minimal HTTP/1.1 client the commands talk to a running server with: one request per connection
//! (`Connection: close`) under a timeout, plain or chunked answers ([`http`]), the probes the commands
//! share (`/health`, `/ready`, `/metrics`, `/v1/models`), and where to connect to a bound address.
//!
//! No client dependency: no keep-alive, redirects, TLS or request bodies. It prints nothing and reads
//! nothing into an answer beyond its status and (JSON) body.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::anyhow;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::VERSION;

/// Timeout of one health/status request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One HTTP answer.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    body: String,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
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

/// One HTTP/1.1 request with `Connection: close`.
pub(super) async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: codex-api-proxy/{VERSION}\r\n\
             Accept: application/json\r\nConnection: close\r\n"
        );
        if let Some(key) = key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        if method != "GET" {
            request.push_str("Content-Length: 0\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {} s", timeout.as_secs()))??;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> anyhow::Result<Reply> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    let chunked = lines.any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// `GET /health`, whatever its status.
pub(super) async fn get_health(address: SocketAddr) -> anyhow::Result<Reply> {
    http(address, "GET", "/health", None, PROBE_TIMEOUT).await
}

/// The pid a `/health` body names, `None` if it names none.
pub(super) fn health_pid(health: &Value) -> Option<u64> {
    health.get("pid").and_then(Value::as_u64)
}

/// A GET whose answer is JSON with status 200, else `None`.
pub(super) async fn get_json(address: SocketAddr, path: &str, key: Option<&str>) -> Option<Value> {
    match http(address, "GET", path, key, PROBE_TIMEOUT).await {
        Ok(reply) if reply.status == 200 => Some(reply.json()),
        _ => None,
    }
}

/// `/ready` (with the first key the server accepts) answers 503 while not ready, with the same body.
pub(super) async fn get_ready(address: SocketAddr, keys: &[String]) -> Option<Value> {
    for key in key_candidates(keys) {
        match http(address, "GET", "/ready", key, PROBE_TIMEOUT).await {
            Ok(reply) if reply.status == 200 || reply.status == 503 => return Some(reply.json()),
            _ => {}
        }
    }
    None
}

/// Each key, or no key when there are none.
fn key_candidates(keys: &[String]) -> Vec<Option<&str>> {
    if keys.is_empty() {
        return vec![None];
    }
    keys.iter().map(|key| Some(key.as_str())).collect()
}

/// A GET with the first key the server accepts (`/v1/models`, `/metrics`).
pub(super) async fn get_json_keyed(
    address: SocketAddr,
    path: &str,
    keys: &[String],
) -> Option<Value> {
    for key in key_candidates(keys) {
        if let Some(value) = get_json(address, path, key).await {
            return Some(value);
        }
    }
    None
}

/// `/v1/models` with the first key the server accepts.
pub(super) async fn get_models(address: SocketAddr, keys: &[String]) -> Option<Value> {
    get_json_keyed(address, "/v1/models", keys).await
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
    fn parses_plain_and_chunked_replies() {
        let reply = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "{}"));
        let reply = parse_reply(
            b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (422, "abcde"));
        assert!(parse_reply(b"garbage").is_err());
    }
}
