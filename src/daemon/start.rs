//! `start` in the background: check that no server of ours runs (clearing a stale pid file), validate
//! the config, spawn the server with its log, hand it the api key and the config's `${VAR}` values,
//! wait until `/health` answers with its pid (reading the real port from its `listening on` line),
//! then save the state file and print what runs where. [`start_locked`] is also `restart`'s second
//! half.
//!
//! A start that fails once the server is spawned ends its whole session, removes its pid file and
//! shows the log tail: nothing is left running. It does not stop a running server (`stop`) and never
//! serves itself (`start --foreground` is `crate::server`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use serde_json::Value;

use crate::cli::{Settings, StartArgs};
use crate::config::{self, Config};
use crate::report::{Ready, VERSION};

use super::display::{
    display_flags, format_unix_time, pid_or_unknown, print_endpoints, print_files, profile_lines,
    redact, url_of, REDACTED,
};
use super::files::{lock, read_from, remove_pid_file, write_pid_file, DaemonFiles, DaemonState};
use super::http::{connect_address, get_health, get_models, get_ready, health_pid};
use super::process::{kill_session, send_signal, spawn_server, PidFile};

/// How long `start` waits for a new server to answer `/health` (its first snapshot runs
/// `codex --version`, which can be slow on a cold disk).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the log shown when a start fails.
const LOG_TAIL_LINES: usize = 20;

pub(super) async fn run(args: StartArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let _lock = lock(&files).await?;
    start_locked(args.into_settings(), &files).await
}

/// Why a new server did not come up.
struct StartFailure {
    reason: String,
}

/// Starts a server with `args` unless ours already runs; the caller holds the management lock.
pub(super) async fn start_locked(mut args: Settings, files: &DaemonFiles) -> anyhow::Result<i32> {
    if already_running(files) {
        return Ok(0);
    }
    args.resolve_for_daemon().map_err(anyhow::Error::msg)?;
    // Every problem of the config is reported here, before anything starts.
    let config = args.load_config()?;
    args.keep_config_env(&config);
    super::print_warnings(&config);
    let keys: Vec<String> = args
        .api_key
        .iter()
        .cloned()
        .chain(config.server.api_keys.iter().cloned())
        .collect();
    let (mut child, offset) = spawn(&args, files, &config).await?;
    let failed = |reason: String| StartFailure { reason };
    let waited = tokio::select! {
        waited = wait_ready(&mut child, files, offset) => waited,
        _ = tokio::signal::ctrl_c() => Err(failed("interrupted while waiting for /health".to_string())),
    };
    let address = match waited {
        Ok(address) => address,
        Err(failure) => {
            return Err(report_failed_start(&mut child, files, offset, failure, &keys).await)
        }
    };
    let connect = connect_address(address);
    let ready = get_ready(connect, &keys).await.ok();
    if let Some(error) = ready
        .as_ref()
        .and_then(|ready| ready.codex.error.as_deref())
    {
        let failure = failed(format!("Codex cannot run: {error}"));
        return Err(report_failed_start(&mut child, files, offset, failure, &keys).await);
    }
    let models = get_models(connect, &keys).await;
    let state = DaemonState {
        server_keys: config.server.api_keys.clone(),
        pid: child.id(),
        host: config.server.host.clone(),
        port: address.port(),
        url: url_of(&config.server.host, address.port()),
        address: connect,
        config: config.source.clone(),
        pid_file: files.pid.clone(),
        log_file: files.log.clone(),
        started_at: now_unix(),
        version: VERSION.to_string(),
        settings: args,
    };
    state.save(&files.state)?;
    print_started(&state, files, &config, ready.as_ref(), models.as_ref());
    Ok(0)
}

/// Whether our server already runs (said so); a stale pid file is reported and removed.
fn already_running(files: &DaemonFiles) -> bool {
    let pid_file = PidFile::read(&files.pid);
    if let PidFile::Ours(pid) = pid_file {
        let state = DaemonState::load(&files.state)
            .ok()
            .flatten()
            .filter(|state| state.pid == pid);
        match state {
            Some(state) => println!(
                "codex-api-proxy is already running (pid {pid}) at {}",
                state.url
            ),
            None => println!("codex-api-proxy is already running (pid {pid})"),
        }
        println!("To apply other settings use `codex-api-proxy restart [flags]`.");
        return true;
    }
    if let Some(reason) = pid_file.stale_reason(&files.pid) {
        println!("{reason}; removing it");
        let _ = std::fs::remove_file(&files.pid);
    }
    false
}

/// Spawns the server with its log, hands it its secrets and writes the pid file; returns the child
/// and where its output starts in the log. A failure here leaves nothing running.
async fn spawn(
    args: &Settings,
    files: &DaemonFiles,
    config: &Config,
) -> anyhow::Result<(Child, u64)> {
    files.create_parents()?;
    let mut log = files.open_log()?;
    writeln!(
        log,
        "=== {} codex-api-proxy {VERSION}: starting in the background",
        format_unix_time(now_unix())
    )?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = spawn_server(args, log)?;
    let pid = child.id();
    if let Some(mut stdin) = child.stdin.take() {
        let secrets = crate::cli::Secrets {
            api_key: args.api_key.clone(),
            env: args.config_env.clone(),
        };
        let line = format!("{}\n", serde_json::to_string(&secrets)?);
        // A pipe holds far more than one line; dropping `stdin` closes it.
        if let Err(err) = stdin.write_all(line.as_bytes()) {
            end_failed_start(&mut child, files).await;
            return Err(err).context("cannot hand the api key and config variables to the server");
        }
    }
    if let Err(err) = write_pid_file(&files.pid, pid) {
        end_failed_start(&mut child, files).await;
        return Err(err);
    }
    if config.server.port == 0 {
        println!("started pid {pid}; waiting for it to pick a port and answer /health ...");
    } else {
        println!(
            "started pid {pid}; waiting for {}/health ...",
            url_of(&config.server.host, config.server.port)
        );
    }
    Ok((child, offset))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The address of the first `listening on http://ADDR` line in `text`.
fn listening_address(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        line.trim()
            .strip_prefix("listening on http://")?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until the child answers `/health` with its own pid; returns its bound address.
async fn wait_ready(
    child: &mut Child,
    files: &DaemonFiles,
    offset: u64,
) -> Result<SocketAddr, StartFailure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid = child.id();
    let mut address = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartFailure {
                reason: format!("the server exited ({status}) before answering /health"),
            });
        }
        if address.is_none() {
            address = listening_address(&read_from(&files.log, offset));
        }
        if let Some(bound) = address {
            if let Ok(reply) = get_health(connect_address(bound)).await {
                if reply.status == 200 {
                    let answered_by = health_pid(&reply);
                    if answered_by == Some(pid) {
                        return Ok(bound);
                    }
                    return Err(StartFailure {
                        reason: format!(
                            "{bound} is answered by another server (pid {})",
                            pid_or_unknown(answered_by)
                        ),
                    });
                }
            }
        }
        if Instant::now() > deadline {
            return Err(StartFailure {
                reason: format!(
                    "the server did not answer /health within {} s",
                    READY_TIMEOUT.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends a server that did not start properly (its whole session) and removes its pid file.
async fn end_failed_start(child: &mut Child, files: &DaemonFiles) {
    let pid = child.id();
    if let Ok(None) = child.try_wait() {
        send_signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    kill_session(pid);
    let _ = child.wait();
    remove_pid_file(&files.pid, Some(pid));
}

/// Prints why a start failed and the log tail; returns the error `main` prints last.
async fn report_failed_start(
    child: &mut Child,
    files: &DaemonFiles,
    offset: u64,
    failure: StartFailure,
    keys: &[String],
) -> anyhow::Error {
    end_failed_start(child, files).await;
    let output = redact(&read_from(&files.log, offset), keys);
    // The server's own last word, printed by main as `codex-api-proxy: …`.
    let cause = output
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("codex-api-proxy: "))
        .map(str::to_string);
    let lines: Vec<&str> = output.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        eprintln!("(the server wrote nothing to {})", files.log.display());
    } else {
        eprintln!("last lines of {}:", files.log.display());
        for line in tail {
            eprintln!("  | {line}");
        }
    }
    let mut message = format!("the server did not start: {}", failure.reason);
    if let Some(cause) = cause {
        message.push_str(&format!(": {cause}"));
    }
    message.push_str("; nothing was left running");
    anyhow!(message)
}

fn print_started(
    state: &DaemonState,
    files: &DaemonFiles,
    config: &Config,
    ready: Option<&Ready>,
    models: Option<&Value>,
) {
    println!("codex-api-proxy {VERSION} is running (pid {})", state.pid);
    println!("  url:        {}", state.url);
    match &state.config {
        Some(path) => println!("  config:     {}", path.display()),
        None => println!(
            "  config:     none (one `{}` profile from the flags; every model routes to it)",
            config::IMPLICIT_PROFILE
        ),
    }
    let server = &config.server;
    println!(
        "  server:     host={} port={} api_key={} codex_bin={} log_level={} grace_seconds={}",
        server.host,
        state.port,
        if server.api_keys.is_empty() {
            "none"
        } else {
            REDACTED
        },
        server.codex_bin,
        server.log_level,
        state.grace_seconds()
    );
    println!("  settings:   {}", display_flags(&state.settings));
    if let Some(codex) = ready.map(|r| &r.codex) {
        println!(
            "  codex:      {} ({})",
            codex.program.as_deref().unwrap_or("?"),
            codex.version.as_deref().unwrap_or("version unknown")
        );
    }
    print_files(files);
    println!("profiles:");
    for (_, line) in profile_lines(Some(config), ready, models) {
        println!("  {line}");
    }
    print_endpoints(&state.url);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let text = "2025 INFO something\nlistening on http://127.0.0.1:41234\n";
        assert_eq!(
            listening_address(text),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(
            listening_address("listening on http://[::1]:80\n"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(listening_address("listening on http://127.0.0.1:"), None);
    }
}
