//! Where the time of one warm app-server turn goes (not a test; prints figures).
//!
//! Drives the native Codex binary directly over JSON-RPC against the test suite's mock model, one turn at
//! a time on one warm worker, with the thread options of a `tools = false` profile (the proxy's
//! `protocol::thread_start_params`), and prints the median time from the start of the turn to each step:
//! the `thread/start` reply, the `turn/start` reply, the first occurrence of every notification, and
//! `turn/completed`. Three ways of starting are interleaved, in blocks of 5 turns:
//!
//! - `cold thread, back to back`: `thread/start` then `turn/start`, as a request without a spare thread;
//! - `spare thread (20 ms apart)`: the thread was started before the clock starts, so the turn pays
//!   `turn/start` only;
//! - `rolling spare, back to back`: as the proxy's spare threads do, each turn's thread was started
//!   during the turn before, right after its `turn/start` was answered.
//!
//! It closes with the Codex CPU of a thread started and unsubscribed without a turn, against a whole turn,
//! and with this process's own CPU per turn (the mock model's thread left out): the JSON-RPC exchange
//! alone, through the proxy's `rpc::Connection` and through a blocking loop with no async runtime. The
//! second is the floor of any client that reads the turn's lines as Codex writes them.
//!
//! Run: `cargo run --release --example bench_turn_timeline -- [TURNS]` (default 40; needs `npm ci`).

#[path = "support/direct.rs"]
mod direct;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_api_proxy::codex::launch::{resolve, ResolvedCodex};
use codex_api_proxy::engine::app_server::protocol::{initialize_params, no_tools_config};
use codex_api_proxy::engine::app_server::rpc::Connection;
use codex_api_proxy::engine::app_server::worker::base_args;
use direct::{Worker, TIMEOUT};
use proxy_test_support::harness::{
    self, codex_launcher, cpu_per_request, cpu_sample, percentile, scratch_dir, thread_cpu_ms,
};
use proxy_test_support::mock_model::MockModel;
use serde_json::{json, Value};

/// A worker as the proxy starts one for a `tools = false` profile, with its certificates.
async fn start_worker(codex: &ResolvedCodex, mock: &MockModel, dir: &Path) -> Worker {
    let (args, env) = worker_launch(mock, dir);
    let dirs = (
        &*dir.join("codex-home"),
        &*dir.join("home"),
        &*dir.join("workspace"),
    );
    Worker::start(codex, &args, dirs, &env).await
}

/// The arguments and extra environment of a worker on `mock` under `dir` (see [`start_worker`]).
fn worker_launch(mock: &MockModel, dir: &Path) -> (Vec<String>, Vec<(OsString, OsString)>) {
    let mut args = base_args();
    for item in mock.provider_overrides() {
        args.push("-c".into());
        args.push(item);
    }
    (args, direct::proxy_certificates(&dir.join("codex-home")))
}

fn thread_params(cwd: &str) -> Value {
    json!({
        "cwd": cwd, "approvalPolicy": "never", "sandbox": "read-only", "ephemeral": true,
        "config": no_tools_config(), "dynamicTools": [], "environments": [],
    })
}

async fn start_thread(connection: &Connection, cwd: &str) -> String {
    let thread = connection
        .request("thread/start", thread_params(cwd), TIMEOUT)
        .await
        .expect("thread/start");
    thread["thread"]["id"].as_str().unwrap().to_string()
}

/// One turn; returns (step, ms since `started`) in order of arrival, first occurrence of each step.
/// With `refill`, starts the next turn's thread right after the `turn/start` reply and returns its id.
async fn turn(
    connection: &Arc<Connection>,
    cwd: &str,
    spare: Option<String>,
    refill: Option<&mut Option<tokio::task::JoinHandle<String>>>,
) -> Vec<(String, f64)> {
    let started = Instant::now();
    let at = |started: Instant| started.elapsed().as_secs_f64() * 1000.0;
    let mut steps = Vec::new();
    let thread_id = match spare {
        Some(id) => id,
        None => {
            let id = start_thread(connection, cwd).await;
            steps.push(("reply thread/start".to_string(), at(started)));
            id
        }
    };
    let mut events = connection.subscribe_thread(&thread_id);
    connection
        .request(
            "turn/start",
            json!({"threadId": thread_id, "input": [{"type": "text", "text": "hello"}]}),
            TIMEOUT,
        )
        .await
        .expect("turn/start");
    steps.push(("reply turn/start".to_string(), at(started)));
    if let Some(slot) = refill {
        let connection = connection.clone();
        let cwd = cwd.to_string();
        *slot = Some(tokio::spawn(async move {
            start_thread(&connection, &cwd).await
        }));
    }
    while let Some((method, _params)) = events.recv().await {
        if !steps.iter().any(|(name, _)| *name == method) {
            steps.push((method.clone(), at(started)));
        }
        if method == "turn/completed" {
            break;
        }
    }
    connection.forget_thread(&thread_id);
    let _ = connection
        .request(
            "thread/unsubscribe",
            json!({"threadId": thread_id}),
            TIMEOUT,
        )
        .await;
    steps
}

/// Starts the mock model on a runtime of its own thread, so its CPU can be told apart from the client's;
/// returns it with the thread's id.
fn mock_on_its_own_thread() -> (MockModel, i32) {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mock-model".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mock = MockModel::start().await;
                // SAFETY: gettid has no arguments and cannot fail.
                let tid = unsafe { libc::gettid() };
                sender.send((mock, tid)).unwrap();
                std::future::pending::<()>().await
            });
        })
        .unwrap();
    receiver.recv().unwrap()
}

/// The CPU per turn of the simplest possible client, in ms: a blocking loop on this thread that writes
/// each request and reads Codex's lines one `read` at a time, with no async runtime. The same turns as
/// `turn` without a spare: `thread/start`, `turn/start`, the wait for `turn/completed`,
/// `thread/unsubscribe`. It runs its own worker, started like the one of `start_worker`.
fn blocking_client_cpu(
    codex: &ResolvedCodex,
    mock: &MockModel,
    dir: &Path,
    (cwd, turns, mock_thread): (&str, usize, i32),
) -> f64 {
    use std::io::{BufRead, BufReader, Write};
    let (args, env) = worker_launch(mock, dir);
    let dirs = (
        &*dir.join("codex-home"),
        &*dir.join("home"),
        &*dir.join("workspace"),
    );
    let mut child = direct::command(codex, &args, dirs, &env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("codex app-server starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    writeln!(
        stdin,
        "{}",
        json!({"id": 0, "method": "initialize", "params": initialize_params()})
    )
    .unwrap();
    stdout.read_line(&mut line).unwrap();
    writeln!(stdin, "{}", json!({"method": "initialized"})).unwrap();
    let mut next_id = 0u64;
    // Sends a request and reads until its answer, or (with `until`) until that notification too.
    let mut request = |method: &str, params: Value, until: Option<&str>| -> Value {
        next_id += 1;
        let message = json!({"id": next_id, "method": method, "params": params});
        stdin.write_all(format!("{message}\n").as_bytes()).unwrap();
        let mut answer = Value::Null;
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the worker exited"
            );
            let message: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let notification = message.get("method").and_then(Value::as_str);
            if notification.is_none() && message.get("id").and_then(Value::as_u64) == Some(next_id)
            {
                answer = message;
                if until.is_none() {
                    return answer;
                }
            } else if notification.is_some() && notification == until {
                return answer;
            }
        }
    };
    let mut run = |count: usize| {
        for _ in 0..count {
            let thread = request("thread/start", thread_params(cwd), None);
            let id = thread["result"]["thread"]["id"]
                .as_str()
                .unwrap()
                .to_string();
            let input = json!({"threadId": id, "input": [{"type": "text", "text": "hello"}]});
            request("turn/start", input, Some("turn/completed"));
            request("thread/unsubscribe", json!({"threadId": id}), None);
        }
    };
    run(5);
    let before = (cpu_sample(std::process::id()), thread_cpu_ms(mock_thread));
    run(turns);
    let after = (cpu_sample(std::process::id()), thread_cpu_ms(mock_thread));
    let _ = child.kill();
    let _ = child.wait();
    ((after.0.root_ms - before.0.root_ms) - (after.1 - before.1)) / turns as f64
}

#[tokio::main]
async fn main() {
    let turns = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(40);
    let (mock, mock_thread) = mock_on_its_own_thread();
    let codex = resolve(codex_launcher().to_str().unwrap()).expect("run `npm ci` first");
    let dir = scratch_dir(
        &harness::bench_envs(),
        "timeline-",
        &["codex-home", "workspace", "home"],
    );
    let cwd = dir.path().join("workspace").to_string_lossy().into_owned();
    let worker = start_worker(&codex, &mock, dir.path()).await;
    for _ in 0..5 {
        turn(&worker.connection, &cwd, None, None).await;
    }
    // per variant: step -> (order sum, samples)
    let mut timelines: [BTreeMap<String, (f64, Vec<f64>)>; 3] =
        [BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    let mut rolling: Option<tokio::task::JoinHandle<String>> = None;
    for round in 0..turns * 3 {
        // Blocks of 5 turns per variant, so the rolling spare runs back to back as a sequential client.
        let index = (round / 5) % 3;
        let timeline = &mut timelines[index];
        {
            let spare = match index {
                1 => {
                    let id = start_thread(&worker.connection, &cwd).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some(id)
                }
                2 => match rolling.take() {
                    Some(handle) => Some(handle.await.unwrap()),
                    None => Some(start_thread(&worker.connection, &cwd).await),
                },
                _ => None,
            };
            let refill = (index == 2 && round % 5 != 4).then_some(&mut rolling);
            for (order, (step, ms)) in turn(&worker.connection, &cwd, spare, refill)
                .await
                .into_iter()
                .enumerate()
            {
                let entry = timeline.entry(step).or_insert((0.0, Vec::new()));
                entry.0 += order as f64;
                entry.1.push(ms);
            }
            if index == 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for (label, timeline) in [
        "cold thread, back to back",
        "spare thread (20 ms apart)",
        "rolling spare, back to back",
    ]
    .iter()
    .zip(&timelines)
    {
        println!("== {label}: {turns} turns, median ms from the start of the turn ==");
        let mut rows: Vec<(f64, &String, f64, usize)> = timeline
            .iter()
            .map(|(step, (order, samples))| {
                (
                    order / samples.len() as f64,
                    step,
                    percentile(samples, 0.5),
                    samples.len(),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.2.total_cmp(&b.2));
        for (_, step, p50, count) in rows {
            println!("{step:<44} {p50:8.2}  (n={count})");
        }
    }
    // What starting a thread costs Codex, against a whole turn (thread, turn, unsubscribe).
    let pid = worker.pid();
    let count = turns.max(40);
    let before = cpu_sample(pid);
    for _ in 0..count {
        let id = start_thread(&worker.connection, &cwd).await;
        let _ = worker
            .connection
            .request("thread/unsubscribe", json!({"threadId": id}), TIMEOUT)
            .await;
    }
    let (own, children) = cpu_per_request(&before, &cpu_sample(pid), count);
    let before = cpu_sample(pid);
    let client_before = cpu_sample(std::process::id());
    let mock_before = thread_cpu_ms(mock_thread);
    for _ in 0..count {
        turn(&worker.connection, &cwd, None, None).await;
    }
    let (turn_own, turn_children) = cpu_per_request(&before, &cpu_sample(pid), count);
    let (process, _) = cpu_per_request(&client_before, &cpu_sample(std::process::id()), count);
    let client = process - (thread_cpu_ms(mock_thread) - mock_before) / count as f64;
    println!(
        "== Codex CPU ({count} each): a thread started and unsubscribed {:.1} ms, a whole turn {:.1} ms ==",
        own + children,
        turn_own + turn_children
    );
    // The floor of the proxy's own work on a turn: apart from the mock model's thread, this process does
    // nothing but the turn's JSON-RPC exchange, with the proxy's `rpc::Connection`, on a runtime like
    // the proxy's.
    drop(worker);
    let blocking = blocking_client_cpu(&codex, &mock, dir.path(), (&cwd, count, mock_thread));
    println!(
        "== Client CPU of a whole turn ({count} each, the worker's stderr not read): rpc::Connection on a multi-thread runtime {client:.2} ms, a blocking loop without a runtime {blocking:.2} ms =="
    );
}
