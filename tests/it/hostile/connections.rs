//! Connections: oversized bodies (declared, chunked, streamed) are 413, and slow, stalled and idle
//! clients neither block others nor stay connected forever.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{check_chat_reply, fake_codex_proxy, openai_error, runtime, Proxy};
use super::{profile_section, server_section};
use crate::support;
use support::app::chat_body;
use support::http::{chunked, closed, raw_exchange, read_response, send, short, Reply};

fn post_head(extra_headers: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra_headers}\r\n")
}

/// A valid chat body of exactly `size` bytes (padded with spaces).
fn padded_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"model":"fake","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    assert!(body.len() <= size);
    body.resize(size, b' ');
    body
}

fn expect_too_large(what: &str, reply: Result<Reply, String>) {
    let reply = reply.unwrap_or_else(|err| panic!("{what}: {err}"));
    assert_eq!(reply.status, 413, "{what}: {}", short(&reply.text()));
    let error = openai_error(&reply).unwrap_or_else(|err| panic!("{what}: {err}"));
    assert_eq!(error["code"], "request_too_large", "{what}");
    assert_eq!(error["type"], "invalid_request_error", "{what}");
}

#[test]
fn oversized_bodies_are_413_with_and_without_content_length() {
    let runtime = runtime();
    let limit = 4096;
    let proxy = Proxy::start(
        &runtime,
        |env, fake| {
            format!(
                "{}{}",
                server_section(fake, &format!("max_request_bytes = {limit}")),
                profile_section("fake", &env.workspace, ""),
            )
        },
        &[],
    );
    let wait = Duration::from_secs(10);

    // The boundary: exactly the limit is served, one byte more is not (declared and chunked).
    let reply = runtime
        .block_on(proxy.post_bytes(padded_body(limit), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
    let over = padded_body(limit + 1);
    let mut request = post_head(&format!("Content-Length: {}\r\n", over.len())).into_bytes();
    request.extend_from_slice(&over);
    expect_too_large(
        "Content-Length: limit + 1",
        raw_exchange(proxy.app.port, &request, wait),
    );

    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&padded_body(limit), 1000));
    request.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_exchange(proxy.app.port, &request, wait).unwrap();
    assert_eq!(
        reply.status,
        200,
        "chunked, exactly the limit: {}",
        short(&reply.text())
    );

    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&over, 1000));
    request.extend_from_slice(b"0\r\n\r\n");
    expect_too_large(
        "chunked, limit + 1",
        raw_exchange(proxy.app.port, &request, wait),
    );

    // A huge declared length is refused at once, before any body byte is sent.
    let request = post_head("Content-Length: 1000000000000\r\n");
    expect_too_large(
        "Content-Length 10^12 without a body",
        raw_exchange(proxy.app.port, request.as_bytes(), wait),
    );
    let request = post_head("Content-Length: 1000000000\r\nExpect: 100-continue\r\n");
    expect_too_large(
        "Expect: 100-continue with 10^9 declared",
        raw_exchange(proxy.app.port, request.as_bytes(), wait),
    );

    // Chunked without an end: refused as soon as the limit is passed.
    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&vec![b' '; 3 * 2000], 2000));
    expect_too_large(
        "chunked, unterminated",
        raw_exchange(proxy.app.port, &request, wait),
    );
    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(b"FFFFFFFFFF\r\n");
    request.extend_from_slice(&[b' '; 5000]);
    expect_too_large(
        "one chunk declared 1 TiB",
        raw_exchange(proxy.app.port, &request, wait),
    );

    // reqwest's streamed (chunked) body, the way SDKs upload.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        over.chunks(512).map(|chunk| Ok(chunk.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let request = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    expect_too_large("reqwest stream body", runtime.block_on(send(request)));

    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
}

/// The client timeout the proxy is started with in the connection tests (the proposed knob).
const CLIENT_TIMEOUT_MS: &str = "1000";
/// How long the connection tests wait for the server to give up on a client.
const GIVE_UP_WAIT: Duration = Duration::from_secs(10);

#[test]
fn slow_and_idle_clients_do_not_block_others_and_are_disconnected() {
    let runtime = runtime();
    let proxy = Proxy::start(
        &runtime,
        |env, fake| {
            format!(
                "{}{}",
                server_section(fake, ""),
                profile_section("fake", &env.workspace, "")
            )
        },
        &[("CODEX_PROXY_CLIENT_TIMEOUT_MS", CLIENT_TIMEOUT_MS)],
    );
    // A slow-loris client: a partial request head, then one byte at a time.
    let mut slow = proxy.connect();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    // A client that connects and says nothing.
    let mut idle = proxy.connect();
    for _ in 0..5 {
        slow.write_all(b"a").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    // Others are served meanwhile.
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
    check_chat_reply(&reply, Some("fake")).unwrap();
    assert_eq!(
        runtime.block_on(proxy.get("/health", None)).unwrap().status,
        200
    );

    // Does the server ever give up on them? Keep trickling and watch for the close.
    let started = Instant::now();
    let (mut slow_closed, mut idle_closed) = (false, false);
    let (mut slow_received, mut idle_received) = (Vec::new(), Vec::new());
    while started.elapsed() < GIVE_UP_WAIT && !(slow_closed && idle_closed) {
        if !slow_closed {
            slow_closed = slow.write_all(b"a").is_err() || closed(&mut slow, &mut slow_received);
        }
        if !idle_closed {
            idle_closed = closed(&mut idle, &mut idle_received);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        slow_closed,
        "a client trickling its request head was still connected after {GIVE_UP_WAIT:?} \
         (CODEX_PROXY_CLIENT_TIMEOUT_MS={CLIENT_TIMEOUT_MS}): the server has no header read timeout"
    );
    assert!(
        idle_closed,
        "a client that sent nothing was still connected after {GIVE_UP_WAIT:?} \
         (CODEX_PROXY_CLIENT_TIMEOUT_MS={CLIENT_TIMEOUT_MS})"
    );
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
}

#[test]
fn a_client_that_stalls_in_its_body_gets_408_in_the_openai_shape() {
    let runtime = runtime();
    let proxy = Proxy::start(
        &runtime,
        |env, fake| {
            format!(
                "{}{}",
                server_section(fake, ""),
                profile_section("fake", &env.workspace, "")
            )
        },
        &[("CODEX_PROXY_CLIENT_TIMEOUT_MS", CLIENT_TIMEOUT_MS)],
    );
    // Complete headers, then 9 of the 100 declared body bytes, then nothing.
    let mut stalled = proxy.connect();
    stalled
        .write_all(format!("{}{{\"model\":", post_head("Content-Length: 100\r\n")).as_bytes())
        .unwrap();
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(
        reply.status,
        200,
        "others are served meanwhile: {}",
        short(&reply.text())
    );

    let reply = read_response(&mut stalled, GIVE_UP_WAIT).unwrap_or_else(|err| {
        panic!(
            "a request whose body stalls got no answer (CODEX_PROXY_CLIENT_TIMEOUT_MS={CLIENT_TIMEOUT_MS}): {err}"
        )
    });
    assert_eq!(reply.status, 408, "{}", short(&reply.text()));
    openai_error(&reply).unwrap();
}

/// Raises this process's open-file limit (the proxy inherits it) to `wanted` or the hard limit.
fn raise_open_file_limit(wanted: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}

#[test]
fn a_thousand_idle_connections_do_not_starve_a_normal_request() {
    let available = raise_open_file_limit(4096);
    assert!(available >= 2200, "the open-file limit is only {available}");
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    let mut connections = Vec::with_capacity(1000);
    for index in 0..1000 {
        let mut stream = proxy.connect();
        if index % 2 == 1 {
            stream.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
        }
        connections.push(stream);
    }
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
    check_chat_reply(&reply, Some("fake")).unwrap();
    for path in ["/health", "/v1/models", "/metrics"] {
        assert_eq!(
            runtime.block_on(proxy.get(path, None)).unwrap().status,
            200,
            "{path}"
        );
    }
    // One of the half-sent requests can still be completed.
    let mut last = connections.pop().unwrap();
    last.write_all(b"st: 127.0.0.1\r\n\r\n").unwrap();
    let reply = read_response(&mut last, Duration::from_secs(10)).unwrap();
    assert_eq!(reply.status, 200);
    drop(connections);
}
