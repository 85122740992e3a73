//! The side-by-side comparison of `bench_app_server --python`: this proxy and the earlier Python tool
//! (codex-api-proxy 0.1.1 from PyPI, installed at benchmark time by `bench/python_contender.sh`), both
//! with their app-server engine and two workers, against the same mock model and the same native Codex
//! binary.
//!
//! The Python tool starts its non-agent threads with `environments: []` and no dynamic tools (Codex's
//! shell tool cannot run there), which is this proxy's `tools = false`; so this proxy runs three times:
//! with a `tools = false` profile (the like-for-like row), the same with `spare_threads = false` (what
//! spare threads are worth), and with `tools = true` (labelled). The workloads run interleaved (each contender in turn, the order rotated every round)
//! over [`ROUNDS`] rounds; the medians of the rounds and their ratios against the Python tool are printed.
//! CPU per request is counted over a whole round, at least [`MIN_ROUND_REQUESTS`] requests, so that the
//! 10 ms clock tick of `/proc` gives it a resolution better than 0.1 ms.
//!
//! With `BENCH_PERF_DATA=FILE` the 4-client workload of the `tools = false` proxy runs under
//! `perf record --call-graph dwarf` (FILE keeps the last round's profile; the profiler's overhead skews
//! that proxy's figures, so use it for profiles only).
//!
//! [`probe`] (`bench_app_server N --probe`) runs one round's workloads once on this proxy alone
//! (`tools = false`), for counting work rather than timing it: with `BENCH_OBSERVE="COMMAND"` they run
//! under that command, `{pid}` being the proxy's (for example `strace -c -f -p {pid} -o FILE` for
//! syscall counts, `perf stat -e task-clock,context-switches -p {pid} -o FILE`), stopped with SIGINT;
//! divide by the requests printed. With `PROXY_BIN` pointing at a wrapper that starts the proxy under
//! `valgrind --tool=callgrind`, two runs of different N give the instructions per request.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use codex_api_proxy::codex::launch::resolve;
use serde_json::json;

use proxy_test_support::harness::{
    self, cpu_per_request, cpu_sample, manifest_dir, percentile, prebuilt_proxy, profile_toml,
    proxy_command, scratch_dir, server_toml, toml_string_list, Proxy,
};
use proxy_test_support::mock_model::MockModel;

/// Interleaved rounds; the medians of their figures are reported.
pub const ROUNDS: usize = 3;
/// Concurrent clients of the throughput workload.
const CLIENTS: usize = 4;
/// Requests per client in the throughput workload.
const PER_CLIENT: usize = 40;
/// The fewest requests of one round (CPU ticks are 10 ms: 150 requests give 0.07 ms per request).
pub const MIN_ROUND_REQUESTS: usize = 150;
/// Warm-up requests per contender before the first round.
const WARMUP: usize = 6;

/// One contender: its base URL, the model name its requests use, and the process to measure.
struct Side {
    label: &'static str,
    /// Whether this is this proxy with `tools = false` (the one `BENCH_PERF_DATA` profiles).
    profiled: bool,
    proxy: Proxy,
    model: &'static str,
}

/// One round's figures of one contender.
#[derive(Default, Clone, Copy)]
struct Figures {
    sequential_p50: f64,
    streamed_p50: f64,
    first_chunk_p50: f64,
    throughput: f64,
    proxy_cpu: f64,
    codex_cpu: f64,
}

/// Installs the Python tool (a no-op when its venv is there) and returns its `codex-api-proxy` script.
fn install_python_tool() -> PathBuf {
    let output = Command::new(manifest_dir().join("bench/python_contender.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("bench/python_contender.sh runs");
    assert!(
        output.status.success(),
        "installing codex-api-proxy 0.1.1 failed: check that python3 has venv and PyPI is reachable"
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the Python tool in the foreground with its app-server engine, two workers and the mock model.
fn start_python(mock: &MockModel, codex_bin: &Path, workspace: &Path, dir: &Path) -> Proxy {
    let script = install_python_tool();
    let codex = resolve(codex_bin.to_str().unwrap()).expect("the Codex CLI resolves");
    let port = free_port();
    let mut command = Command::new(script);
    command
        .args(["start", "--foreground", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--engine", "app-server", "--workers", "2"])
        .args(["--max-concurrency", "8", "--log-level", "warning"])
        .arg("--codex-bin")
        .arg(&codex.program)
        .args(["--model", "mock-model"])
        .arg("--default-cwd")
        .arg(workspace)
        .arg("--allowed-root")
        .arg(workspace)
        .arg("--app-server-codex-home")
        .arg(dir.join("codex-home"))
        .args(["--pid-file", "/dev/null"])
        .envs(codex.env.iter().map(|(k, v)| (k, v)))
        .env("HOME", dir.join("home"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for item in mock.provider_overrides() {
        command.arg("--codex-config").arg(item);
    }
    let child = command.spawn().expect("the Python tool starts");
    Proxy {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
        stop_signal: libc::SIGTERM,
    }
}

/// Starts this proxy with one app-server profile `bench` of two workers and the given `tools` and
/// `spare_threads`.
fn start_rust(
    mock: &MockModel,
    codex_bin: &Path,
    workspace: &Path,
    dir: &Path,
    (tools, spare_threads): (bool, bool),
) -> Proxy {
    let config = format!(
        "{}{}engine = \"app-server\"\nworkers = 2\nmax_concurrency = 8\nmax_queue_size = 64\ntools = {tools}\nspare_threads = {spare_threads}\n",
        server_toml(codex_bin),
        profile_toml(
            "bench",
            workspace,
            &toml_string_list(&mock.provider_overrides())
        ),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    harness::start_proxy(
        proxy_command(
            &prebuilt_proxy(),
            &["--log-level", "warning"],
            &path,
            &dir.join("home"),
            &dir.join("codex-home"),
        )
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(Stdio::null()),
    )
}

/// One streamed request: (time to the first `data:` chunk, time to the end of the stream), in ms.
async fn post_streamed(client: &reqwest::Client, url: &str, model: &str) -> (f64, f64) {
    let started = Instant::now();
    let mut response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut first = None;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
        body.extend_from_slice(&chunk);
    }
    let total = started.elapsed().as_secs_f64() * 1000.0;
    assert!(
        String::from_utf8_lossy(&body).contains("[DONE]"),
        "the stream ended without [DONE]"
    );
    (first.unwrap_or(total), total)
}

/// `requests` plain requests one after another: their p50.
async fn sequential(client: &reqwest::Client, side: &Side, requests: usize) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..requests {
        samples.push(crate::post(client, &side.proxy.base_url, side.model, "hello").await);
    }
    percentile(&samples, 0.5)
}

/// `requests` streamed requests one after another: (first chunk p50, whole stream p50).
async fn streamed(client: &reqwest::Client, side: &Side, requests: usize) -> (f64, f64) {
    let mut first = Vec::new();
    let mut total = Vec::new();
    for _ in 0..requests {
        let (head, whole) = post_streamed(client, &side.proxy.base_url, side.model).await;
        first.push(head);
        total.push(whole);
    }
    (percentile(&first, 0.5), percentile(&total, 0.5))
}

/// [`CLIENTS`] clients sending [`PER_CLIENT`] requests each: requests per second.
async fn throughput(client: &reqwest::Client, side: &Side) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, model) = (client.clone(), side.proxy.base_url.clone(), side.model);
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_CLIENT {
                crate::post(&client, &url, model, "hello").await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (CLIENTS * PER_CLIENT) as f64 / started.elapsed().as_secs_f64()
}

/// `perf record` with DWARF call graphs on `pid`, writing `output` (overwritten each round).
fn start_perf(pid: u32, output: &Path) -> std::process::Child {
    let child = Command::new("perf")
        .args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(output)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf starts (install linux-perf)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

/// Starts `command` (whitespace-separated, `{pid}` replaced by `pid`) to observe the proxy; it is
/// stopped with SIGINT, as `strace` and `perf` expect.
fn start_observer(command: &str, pid: u32) -> std::process::Child {
    let words: Vec<String> = command
        .split_whitespace()
        .map(|word| word.replace("{pid}", &pid.to_string()))
        .collect();
    let child = Command::new(&words[0])
        .args(&words[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command}: {err}"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    child
}

/// Runs one round of every workload on this proxy alone (`tools = false`) and prints the requests and
/// the CPU per request (see the module comment for counting syscalls and instructions).
pub async fn probe(
    client: &reqwest::Client,
    mock: &MockModel,
    codex_bin: &Path,
    workspace: &Path,
    requests: usize,
) {
    let dir = scratch_dir(&harness::bench_envs(), "probe-", &["home", "codex-home"]);
    let side = Side {
        label: "tools=false",
        profiled: false,
        proxy: start_rust(mock, codex_bin, workspace, dir.path(), (false, true)),
        model: "bench",
    };
    assert!(
        harness::wait_ready(client, &side.proxy.base_url, 3000).await,
        "the proxy never became ready"
    );
    for _ in 0..WARMUP {
        crate::post(client, &side.proxy.base_url, side.model, "warm").await;
    }
    let observer = std::env::var("BENCH_OBSERVE")
        .ok()
        .map(|command| start_observer(&command, side.proxy.pid()));
    let result = round(client, &side, requests).await;
    if let Some(mut observer) = observer {
        harness::send_signal(observer.id(), libc::SIGINT);
        let _ = observer.wait();
    }
    println!(
        "probe: {} requests ({requests} sequential, {requests} streamed, {} from {CLIENTS} clients), CPU/req proxy {:.2} ms, codex {:.1} ms",
        2 * requests + CLIENTS * PER_CLIENT,
        CLIENTS * PER_CLIENT,
        result.proxy_cpu,
        result.codex_cpu
    );
}

/// One round of every workload for one side, with the CPU per request over the whole round.
async fn round(client: &reqwest::Client, side: &Side, requests: usize) -> Figures {
    let before = cpu_sample(side.proxy.pid());
    let sequential_p50 = sequential(client, side, requests).await;
    let (first_chunk_p50, streamed_p50) = streamed(client, side, requests).await;
    let profiler = std::env::var_os("BENCH_PERF_DATA")
        .filter(|_| side.profiled)
        .map(|path| start_perf(side.proxy.pid(), Path::new(&path)));
    let throughput = throughput(client, side).await;
    if let Some(mut perf) = profiler {
        harness::send_signal(perf.id(), libc::SIGINT);
        let _ = perf.wait();
    }
    let (proxy_cpu, codex_cpu) = cpu_per_request(
        &before,
        &cpu_sample(side.proxy.pid()),
        round_requests(requests),
    );
    Figures {
        sequential_p50,
        streamed_p50,
        first_chunk_p50,
        throughput,
        proxy_cpu,
        codex_cpu,
    }
}

/// The requests of one round of one side.
fn round_requests(requests: usize) -> usize {
    2 * requests + CLIENTS * PER_CLIENT
}

fn median(rounds: &[Figures], field: fn(&Figures) -> f64) -> f64 {
    percentile(&rounds.iter().map(field).collect::<Vec<_>>(), 0.5)
}

/// The 1-minute load average of the machine (how busy the other users of a shared machine were).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// How many contenders run.
const SIDES: usize = 4;

/// Starts the contenders: this proxy with `tools = false` (spare threads on, then off), with
/// `tools = true`, and the Python tool (last).
fn start_sides(
    mock: &MockModel,
    codex_bin: &Path,
    workspace: &Path,
    dirs: &[tempfile::TempDir; SIDES],
) -> [Side; SIDES] {
    let rust = |label, index: usize, settings| Side {
        label,
        profiled: index == 0,
        proxy: start_rust(mock, codex_bin, workspace, dirs[index].path(), settings),
        model: "bench",
    };
    [
        rust("tools=false", 0, (false, true)),
        rust("no spares", 1, (false, false)),
        rust("tools=true", 2, (true, true)),
        Side {
            label: "Python 0.1.1",
            profiled: false,
            proxy: start_python(mock, codex_bin, workspace, dirs[3].path()),
            model: "codex-local",
        },
    ]
}

/// Runs the comparison and prints it.
pub async fn compare(
    client: &reqwest::Client,
    mock: &MockModel,
    codex_bin: &Path,
    workspace: &Path,
    requests: usize,
) {
    // Enough requests per round for a CPU resolution better than 0.1 ms per request.
    let requests = requests.max(
        MIN_ROUND_REQUESTS
            .saturating_sub(CLIENTS * PER_CLIENT)
            .div_ceil(2),
    );
    let dirs = ["rust-false-", "rust-nospare-", "rust-true-", "python-"]
        .map(|prefix| scratch_dir(&harness::bench_envs(), prefix, &["home", "codex-home"]));
    let sides = start_sides(mock, codex_bin, workspace, &dirs);
    for side in &sides {
        assert!(
            harness::wait_ready(client, &side.proxy.base_url, 600).await,
            "{} never became ready",
            side.label
        );
        for _ in 0..WARMUP {
            crate::post(client, &side.proxy.base_url, side.model, "warm").await;
        }
    }
    let mut figures: [Vec<Figures>; SIDES] = Default::default();
    let mut loads = vec![load_average()];
    for number in 0..ROUNDS {
        for offset in 0..sides.len() {
            // The order rotates every round, so no contender always runs after the same one.
            let index = (number + offset) % sides.len();
            let side = &sides[index];
            let result = round(client, side, requests).await;
            println!(
                "round {} {:<13} seq p50 {:6.1} ms  stream p50 {:6.1} ms (first chunk {:6.1})  {CLIENTS} clients {:6.1} req/s  CPU/req proxy {:5.2} ms, codex {:5.1} ms",
                number + 1, side.label, result.sequential_p50, result.streamed_p50, result.first_chunk_p50,
                result.throughput, result.proxy_cpu, result.codex_cpu
            );
            figures[index].push(result);
            loads.push(load_average());
        }
    }
    print_medians(&sides, &figures, requests);
    println!(
        "load average (1 min) during the rounds: min {:.1}, median {:.1}, max {:.1}",
        percentile(&loads, 0.0),
        percentile(&loads, 0.5),
        percentile(&loads, 1.0)
    );
}

/// A printed row: label, the figure it shows, and the goal it is held against.
type Row = (&'static str, fn(&Figures) -> f64, &'static str);

fn print_medians(sides: &[Side; SIDES], figures: &[Vec<Figures>; SIDES], requests: usize) {
    println!(
        "== this proxy vs the Python tool 0.1.1, app-server engine, 2 workers, medians of {ROUNDS} interleaved rounds =="
    );
    println!(
        "({requests} sequential and {requests} streamed requests, then {CLIENTS} clients × {PER_CLIENT} requests, per round; CPU over all {} requests of a round)",
        round_requests(requests)
    );
    let mut header = format!("{:<30}", "");
    for side in sides {
        header += &format!(" {:>12}", side.label);
    }
    println!(
        "{header} {:>9} {:>9} {:>9}",
        "false/Py", "nospr/Py", "true/Py"
    );
    let rows: [Row; 6] = [
        (
            "warm sequential p50 (ms)",
            |f| f.sequential_p50,
            "goal false/Py ≤ 0.8",
        ),
        ("streamed p50 (ms)", |f| f.streamed_p50, ""),
        ("streamed first chunk p50 (ms)", |f| f.first_chunk_p50, ""),
        (
            "4 clients, 2 workers (req/s)",
            |f| f.throughput,
            "goal false/Py ≥ 1.3",
        ),
        (
            "proxy CPU per request (ms)",
            |f| f.proxy_cpu,
            "goal < 0.5 ms",
        ),
        ("Codex CPU per request (ms)", |f| f.codex_cpu, ""),
    ];
    for (label, field, goal) in rows {
        let values: Vec<f64> = figures.iter().map(|f| median(f, field)).collect();
        let python = values[SIDES - 1];
        let mut line = format!("{label:<30}");
        for value in &values {
            line += &format!(" {value:>12.2}");
        }
        for value in &values[..SIDES - 1] {
            line += &format!(" {:>8.2}×", value / python);
        }
        println!("{line}  {goal}");
    }
    print_ceiling(figures);
}

/// The most 4-client throughput the first contender could reach against the Python tool's measured one:
/// if its Codex and proxy processes had every core to themselves (the mock model and the load generator
/// cost nothing), a request could not take less than its CPU divided by the cores.
fn print_ceiling(figures: &[Vec<Figures>; SIDES]) {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get()) as f64;
    let cpu = median(&figures[0], |f| f.proxy_cpu + f.codex_cpu);
    let ceiling = cores * 1000.0 / cpu;
    let python = median(&figures[SIDES - 1], |f| f.throughput);
    println!(
        "CPU ceiling of tools=false at {CLIENTS} clients: {cores} cores / {cpu:.1} ms of Codex and proxy CPU per request = {ceiling:.1} req/s, {:.2}× the Python tool's measured {python:.1}",
        ceiling / python
    );
}
