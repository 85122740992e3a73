//! HTTP answers read completely, for checks on every byte a client sees: [`Reply`] from a reqwest
//! request ([`send`]) or from a raw socket ([`raw_exchange`], [`read_response`]), and the raw-socket
//! helpers the connection tests need ([`chunked`] bodies, [`closed`] connections).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One HTTP answer, read completely.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names (lower case) and values (lossy UTF-8).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, short(&self.text())))
    }

    /// Everything a client sees, for secret scans.
    pub fn everything(&self) -> String {
        let mut out = format!("{}\n", self.status);
        for (key, value) in &self.headers {
            out.push_str(&format!("{key}: {value}\n"));
        }
        out.push_str(&self.text());
        out
    }
}

pub use proxy_test_support::props::short;

/// Sends `request` and reads the whole answer; an error says what failed.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Reply, String> {
    let response = request
        .send()
        .await
        .map_err(|err| format!("the request failed (no HTTP answer): {err:?}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(key, value)| {
            (
                key.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .bytes()
        .await
        .map_err(|err| format!("the {status} body could not be read: {err:?}"))?
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// One response read from a raw socket: the head and a `Content-Length` body.
pub fn parse_response(buffer: &[u8]) -> Option<Reply> {
    let end = buffer.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buffer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(key, _)| key == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let body = &buffer[end + 4..];
    (body.len() >= length).then(|| Reply {
        status,
        headers,
        body: body[..length].to_vec(),
    })
}

/// Writes `request` on a fresh connection to `127.0.0.1:port` and reads one response, for at most
/// `wait`.
pub fn raw_exchange(port: u16, request: &[u8], wait: Duration) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(request)
        .map_err(|err| format!("write: {err}"))?;
    read_response(&mut stream, wait)
}

/// Reads one response from `stream`, for at most `wait`.
pub fn read_response(stream: &mut TcpStream, wait: Duration) -> Result<Reply, String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut buffer = Vec::new();
    loop {
        if let Some(reply) = parse_response(&buffer) {
            return Ok(reply);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no complete response within {wait:?}; received {:?}",
                short(&String::from_utf8_lossy(&buffer))
            ));
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "the connection closed; received {:?}",
                    short(&String::from_utf8_lossy(&buffer))
                ))
            }
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return Err(format!("read: {err}")),
        }
    }
}

/// `body` in the chunked transfer coding, `chunk_size` bytes a chunk, without the final `0` chunk.
pub fn chunked(body: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(chunk_size) {
        out.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether the server closed (or reset) a raw connection; bytes it sent meanwhile go to `received`.
pub fn closed(stream: &mut TcpStream, received: &mut Vec<u8>) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(read) => received.extend_from_slice(&chunk[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}
