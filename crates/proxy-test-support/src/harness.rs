//! Shared pieces of the benchmark and soak programs in `examples/`: where the repository, the Codex CLI
//! and the release proxy binary are; starting the proxy on port 0 and reading its `listening on` line;
//! waiting for `/ready`; the config snippets they write; percentiles; per-process figures read from
//! `/proc`; and scratch directories under `target/`.
//!
//! The examples use it as `proxy_test_support::harness`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root: the root package's directory, two levels above this crate's
/// (`crates/proxy-test-support`).
pub fn manifest_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .expect("crates/proxy-test-support lies two levels below the repository root")
        .to_path_buf()
}

/// The pinned Codex CLI launcher installed by `npm ci`.
pub fn codex_launcher() -> PathBuf {
    manifest_dir().join("node_modules/.bin/codex")
}

/// `$CODEX_BIN` when set, else the pinned launcher (which must be installed).
pub fn codex_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CODEX_BIN").filter(|value| !value.is_empty()) {
        return PathBuf::from(path);
    }
    let launcher = codex_launcher();
    assert!(
        launcher.exists(),
        "the Codex CLI is not installed: run `npm ci` in the repository root or set CODEX_BIN"
    );
    launcher
}

/// Builds the release proxy (a no-op when it is up to date) and returns its path.
pub fn build_release_proxy() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "codex-api-proxy"])
        .current_dir(manifest_dir())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the release proxy failed");
    manifest_dir().join("target/release/codex-api-proxy")
}

/// `$PROXY_BIN` when set, else the release binary, which must already be built.
pub fn prebuilt_proxy() -> PathBuf {
    let binary = std::env::var("PROXY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest_dir().join("target/release/codex-api-proxy"));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release` first",
        binary.display()
    );
    binary
}

/// A running proxy; dropping it sends `stop_signal` (SIGTERM unless changed) and reaps it.
pub struct Proxy {
    pub child: Child,
    pub base_url: String,
    pub stop_signal: libc::c_int,
}

impl Proxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the proxy process.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.child.id(), signal);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        send_signal(self.child.id(), self.stop_signal);
        let _ = self.child.wait();
    }
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) only sends a signal.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// `BINARY start --foreground --port 0 [EXTRA_ARGS…] --config CONFIG` with HOME and CODEX_HOME set;
/// the caller adds its own environment and stdin/stderr handling, then passes it to [`start_proxy`].
pub fn proxy_command(
    binary: &Path,
    extra_args: &[&str],
    config: &Path,
    home: &Path,
    codex_home: &Path,
) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["start", "--foreground", "--port", "0"])
        .args(extra_args)
        .arg("--config")
        .arg(config)
        .env("HOME", home)
        .env("CODEX_HOME", codex_home);
    command
}

/// Spawns the proxy, reads its base URL from the `listening on` line and keeps draining its stdout.
pub fn start_proxy(command: &mut Command) -> Proxy {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("the proxy starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base_url = loop {
        let line = lines
            .next()
            .expect("the proxy printed `listening on`")
            .unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proxy {
        child,
        base_url,
        stop_signal: libc::SIGTERM,
    }
}

/// Polls `{url}/ready` every 50 ms, at most `attempts` times; whether it answered 200.
pub async fn wait_ready(client: &reqwest::Client, url: &str, attempts: usize) -> bool {
    for _ in 0..attempts {
        if client
            .get(format!("{url}/ready"))
            .send()
            .await
            .map(|response| response.status() == 200)
            .unwrap_or(false)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Codex `-c` overrides as the items of a TOML array of literal strings: `'a', 'b'`.
pub fn toml_string_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("'{item}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[server]` with `codex_bin`, one line each.
pub fn server_toml(codex_bin: &Path) -> String {
    format!(
        "[server]\ncodex_bin = {:?}\n",
        codex_bin.display().to_string()
    )
}

/// The head of a profile against the mock model, confined to `workspace`; callers append their settings.
pub fn profile_toml(name: &str, workspace: &Path, codex_config: &str) -> String {
    format!(
        "[profiles.{name}]\nmodel = \"mock-model\"\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\ncodex_config = [{codex_config}]\n",
        ws = workspace.display().to_string(),
    )
}

/// Milliseconds of a duration.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Milliseconds of each duration.
pub fn millis(samples: &[Duration]) -> Vec<f64> {
    samples.iter().copied().map(ms).collect()
}

/// The sample at rank `round(p × (n − 1))` (p from 0 to 1) of the sorted samples; NaN when there are none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The arithmetic mean of the samples; NaN when there are none.
pub fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len() as f64
}

/// A number field (in kB for the Vm* ones) of `/proc/PID/status`, 0 when absent.
pub fn proc_status_value(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Live processes (not zombies, not `except`, not this one) whose environment or command line mentions `dir`.
pub fn processes(dir: &Path, except: &[u32]) -> Vec<u32> {
    let marker = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if except.contains(&pid) || pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&environ).contains(&marker)
            || String::from_utf8_lossy(&cmdline).contains(&marker)
        {
            found.push(pid);
        }
    }
    found
}

/// Sum of VmRSS (MiB) of the proxy and every process that mentions `dir`.
pub fn memory_mib(dir: &Path, proxy_pid: u32) -> f64 {
    let total_kib: u64 = std::iter::once(proxy_pid)
        .chain(processes(dir, &[proxy_pid]))
        .map(|pid| proc_status_value(pid, "VmRSS:"))
        .sum();
    total_kib as f64 / 1024.0
}

/// A fresh directory `PARENT/PREFIX…` (removed on drop) holding the empty subdirectories `subdirs`.
pub fn scratch_dir(parent: &Path, prefix: &str, subdirs: &[&str]) -> tempfile::TempDir {
    std::fs::create_dir_all(parent).unwrap();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .unwrap();
    create_subdirs(dir.path(), subdirs);
    dir
}

/// `target/bench-envs`, where the scratch directories of the benchmarks go.
pub fn bench_envs() -> PathBuf {
    manifest_dir().join("target").join("bench-envs")
}

/// Creates the (possibly nested) subdirectories `subdirs` of `dir`.
pub fn create_subdirs(dir: &Path, subdirs: &[&str]) {
    for sub in subdirs {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
}

/// CPU time (ms) of a process tree at one moment, read from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// utime + stime of the root process (all its threads).
    pub root_ms: f64,
    /// utime + stime of every live descendant (found through `ppid` chains), plus the root's
    /// cutime + cstime (children that exited and were reaped) and the descendants' own cutime + cstime.
    pub children_ms: f64,
}

impl CpuSample {
    /// The CPU spent between `self` (earlier) and `later`, as (root, children) in ms.
    pub fn until(&self, later: &CpuSample) -> (f64, f64) {
        (
            later.root_ms - self.root_ms,
            later.children_ms - self.children_ms,
        )
    }
}

/// Clock ticks per second of the `/proc/PID/stat` times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// (ppid, utime + stime, cutime + cstime) in ticks from `/proc/PID/stat`; `None` when it is gone.
fn stat_times(pid: u32) -> Option<(u32, u64, u64)> {
    stat_times_at(&format!("/proc/{pid}/stat"))
}

/// utime + stime of one thread of this process (`tid` as `gettid` returns it), in ms.
pub fn thread_cpu_ms(tid: i32) -> f64 {
    let (_, own, _) = stat_times_at(&format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    own as f64 * 1000.0 / ticks_per_second()
}

/// (ppid, utime + stime, cutime + cstime) of the `stat` file at `path`.
fn stat_times_at(path: &str) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last `)`.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let number = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
    };
    let ppid = number(1)? as u32;
    Some((ppid, number(11)? + number(12)?, number(13)? + number(14)?))
}

/// Every live process whose `ppid` chain leads to `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((ppid, _, _)) = stat_times(pid) {
            parents.push((pid, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// The CPU times of `root` and its process tree now.
pub fn cpu_sample(root: u32) -> CpuSample {
    let tick_ms = 1000.0 / ticks_per_second();
    let (_, root_own, root_reaped) = stat_times(root).unwrap_or_default();
    let children: u64 = descendants(root)
        .into_iter()
        .filter_map(stat_times)
        .map(|(_, own, reaped)| own + reaped)
        .sum();
    CpuSample {
        root_ms: root_own as f64 * tick_ms,
        children_ms: (root_reaped + children) as f64 * tick_ms,
    }
}

/// CPU of `root` and of its process tree per request between two samples, in ms: (root, children).
pub fn cpu_per_request(before: &CpuSample, after: &CpuSample, requests: usize) -> (f64, f64) {
    let (root, children) = before.until(after);
    let n = requests.max(1) as f64;
    (root / n, children / n)
}

/// cutime + cstime of `pid` in ms: the CPU of its children that exited and were reaped.
pub fn reaped_children_ms(pid: u32) -> f64 {
    let (_, _, reaped) = stat_times(pid).unwrap_or_default();
    reaped as f64 * 1000.0 / ticks_per_second()
}
