//! `status`: what the pid file, the state file and the server's own `/health`, `/ready` and `/metrics`
//! say, as text (`--verbose` adds the saved settings, Codex and counters) or one JSON object
//! (`--json`); exit code 0 only when our server runs and answers as its pid. The server's answers are
//! read into the typed bodies of `crate::report`, the same structs `api::ops` builds them from.
//!
//! It only observes: it changes no file (a stale pid file is left for `start` or `stop` to remove) and
//! signals nothing.

use serde_json::{json, Value};

use crate::cli::StatusArgs;
use crate::config;
use crate::report::{
    AccountQuota, ConfigReport, Health, Metrics, ProfileMetrics, Quota, Ready, ReadyStatus,
};

use super::display::{
    display_flags, format_unix_time, pid_or_unknown, print_endpoints, print_files, profile_lines,
    REDACTED,
};
use super::files::{DaemonFiles, DaemonState};
use super::http::{get_health, get_keyed_health, get_metrics, get_quota, get_ready, health_pid};
use super::process::PidFile;

/// What `status` found out.
struct Observation {
    /// `running`, `stopped`, `stale` (pid file names a dead or foreign pid) or `unresponsive` (our
    /// pid lives but the saved address does not answer as that pid).
    state: &'static str,
    pid: Option<u32>,
    reason: Option<String>,
    health: Option<Health>,
    ready: Option<Ready>,
    metrics: Option<Metrics>,
    /// `/v1/quota`: each account's login and rate-limit windows.
    quota: Option<Quota>,
}

impl Observation {
    /// Any state but `running`: nothing was asked of a server.
    fn not_running(state: &'static str, pid: Option<u32>, reason: Option<String>) -> Observation {
        Observation {
            state,
            pid,
            reason,
            health: None,
            ready: None,
            metrics: None,
            quota: None,
        }
    }

    fn running(&self) -> bool {
        self.state == "running"
    }

    /// The config block of `/ready`, else of `/metrics`.
    fn config(&self) -> Option<&ConfigReport> {
        let from_ready = self.ready.as_ref().map(|ready| &ready.config);
        from_ready.or(self.metrics.as_ref().map(|metrics| &metrics.config))
    }

    /// A profile's block of `/metrics`.
    fn profile_metrics(&self, name: &str) -> Option<&ProfileMetrics> {
        self.metrics.as_ref()?.profiles.get(name)
    }
}

/// What the pid file says, or the observation that ends the inquiry there.
fn live_pid(files: &DaemonFiles) -> Result<u32, Box<Observation>> {
    let pid_file = PidFile::read(&files.pid);
    match pid_file {
        PidFile::Missing => {
            let reason = format!("no pid file at {}", files.pid.display());
            Err(Box::new(Observation::not_running(
                "stopped",
                None,
                Some(reason),
            )))
        }
        PidFile::Ours(pid) => Ok(pid),
        PidFile::Dead(pid) | PidFile::Foreign { pid, .. } => {
            let reason = pid_file.stale_reason(&files.pid);
            Err(Box::new(Observation::not_running(
                "stale",
                Some(pid),
                reason,
            )))
        }
        PidFile::Garbled(_) => Err(Box::new(Observation::not_running(
            "stale",
            None,
            pid_file.stale_reason(&files.pid),
        ))),
    }
}

async fn observe(files: &DaemonFiles, saved: Option<&DaemonState>) -> Observation {
    let pid = match live_pid(files) {
        Ok(pid) => pid,
        Err(observation) => return *observation,
    };
    let unresponsive =
        |reason: String| Observation::not_running("unresponsive", Some(pid), Some(reason));
    let Some(saved) = saved else {
        return unresponsive(format!(
            "pid {pid} is alive, but there is no state file at {} saying where it listens",
            files.state.display()
        ));
    };
    let health = match get_health(saved.address).await {
        Ok(reply) if reply.status == 200 => reply,
        Ok(reply) => {
            return unresponsive(format!(
                "pid {pid} is alive, but {}/health answered HTTP {}",
                saved.url, reply.status
            ))
        }
        Err(err) => {
            return unresponsive(format!(
                "pid {pid} is alive, but {}/health does not answer: {err:#}",
                saved.url
            ))
        }
    };
    let answered_by = health_pid(&health);
    if answered_by != Some(pid) {
        return unresponsive(format!(
            "{} is answered by pid {}, not by pid {pid} of the pid file",
            saved.url,
            pid_or_unknown(answered_by)
        ));
    }
    let keys = saved.keys();
    // With keys configured, only a keyed `/health` shows the version and uptime.
    let health = match get_keyed_health(saved.address, &keys).await {
        Ok(keyed) => keyed,
        Err(_) => health.parse().unwrap_or_default(),
    };
    Observation {
        state: "running",
        pid: Some(pid),
        reason: None,
        health: Some(health),
        ready: get_ready(saved.address, &keys).await.ok(),
        metrics: get_metrics(saved.address, &keys).await.ok(),
        quota: get_quota(saved.address, &keys).await.ok(),
    }
}

pub(super) async fn run(args: &StatusArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let (saved, state_error) = match DaemonState::load(&files.state) {
        Ok(saved) => (saved, None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    let observation = observe(&files, saved.as_ref()).await;
    let code = if observation.running() { 0 } else { 1 };
    if args.json {
        let report = status_json(&files, saved.as_ref(), &observation, state_error);
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    print_headline(&observation);
    if let Some(error) = &state_error {
        println!("  state file: {error}");
    }
    match saved.as_ref() {
        Some(saved) if observation.running() => print_running(args, &files, saved, &observation),
        Some(saved) if args.verbose => {
            println!("last start ({}):", format_unix_time(saved.started_at));
            println!("  url:        {}", saved.url);
            println!("  settings:   {}", display_flags(&saved.settings));
            print_files(&files);
        }
        _ => {}
    }
    Ok(code)
}

/// The first line: running (version, pid, uptime), not responding, or not running and why.
fn print_headline(observation: &Observation) {
    let reason = observation.reason.as_deref().unwrap_or("");
    match observation.state {
        "running" => {
            let health = observation.health.as_ref();
            println!(
                "codex-api-proxy {} is running (pid {}, up {})",
                health.and_then(|h| h.version.as_deref()).unwrap_or("?"),
                observation.pid.unwrap_or(0),
                format_duration(health.and_then(|h| h.uptime_seconds).unwrap_or(0.0))
            );
        }
        "unresponsive" => println!("codex-api-proxy is not responding: {reason}"),
        _ => {
            println!("codex-api-proxy is not running: {reason}");
            if observation.state == "stale" {
                println!("(`codex-api-proxy start` or `stop` removes the stale pid file)");
            }
        }
    }
}

/// A running server: its url, config and reload state, profiles, endpoints (and with `--verbose`,
/// the details).
fn print_running(
    args: &StatusArgs,
    files: &DaemonFiles,
    saved: &DaemonState,
    observation: &Observation,
) {
    let config_block = observation.config();
    println!("  url:        {}", saved.url);
    print_config(config_block);
    if let Some(required) = config_block
        .map(|block| &block.restart_required)
        .filter(|items| !items.is_empty())
    {
        println!("  restart required for: {}", required.join(", "));
    }
    let ready = observation.ready.as_ref();
    if ready.map(|r| r.status) != Some(ReadyStatus::Ready) {
        println!("  readiness:  NOT READY");
    }
    println!("profiles:");
    for (name, line) in profile_lines(None, ready, None) {
        match observation.profile_metrics(&name) {
            Some(block) => println!(
                "  {line}  in flight {}, queued {}, requests {}",
                block.counters.in_flight, block.queued, block.counters.requests
            ),
            None => println!("  {line}"),
        }
    }
    if let Some(quota) = observation
        .quota
        .as_ref()
        .filter(|q| !q.accounts.is_empty())
    {
        println!("accounts:");
        for account in &quota.accounts {
            println!("  {}", account_line(account));
        }
    }
    print_endpoints(&saved.url);
    if args.verbose {
        print_details(files, saved, observation);
    }
}

/// One account: its home and profiles, its login, and each rate-limit window.
fn account_line(account: &AccountQuota) -> String {
    let login = match (account.login.logged_in, account.login.method.as_deref()) {
        (Some(true), Some(method)) => format!("logged in ({method})"),
        (Some(true), None) => "logged in".to_string(),
        (Some(false), _) => "NOT LOGGED IN: run `codex login`".to_string(),
        (None, _) => "login not checked".to_string(),
    };
    let mut line = format!(
        "{} ({}): {login}",
        account.codex_home,
        account.profiles.join(", ")
    );
    for window in &account.windows {
        line.push_str(&format!("; {} {:.0}% used", window.id, window.used_percent));
        if let Some(minutes) = window.window_minutes {
            line.push_str(&format!(" of {minutes} min"));
        }
        if let Some(at) = window.resets_at {
            line.push_str(&format!(", resets {}", format_unix_time(at)));
        }
    }
    line
}

/// The config file, its generation and its last reload error.
fn print_config(config_block: Option<&ConfigReport>) {
    let Some((path, block)) =
        config_block.and_then(|block| block.path.as_deref().map(|path| (path, block)))
    else {
        println!(
            "  config:     none (one `{}` profile from flags)",
            config::IMPLICIT_PROFILE
        );
        return;
    };
    println!("  config:     {path} (generation {})", block.generation);
    match &block.last_error {
        Some(error) => {
            println!("  last reload error (still serving the previous config):");
            for line in error.lines() {
                println!("    {line}");
            }
        }
        None => println!("  last reload error: none"),
    }
}

/// `--verbose`: the saved settings, the Codex binary and the counters.
fn print_details(files: &DaemonFiles, saved: &DaemonState, observation: &Observation) {
    println!("details:");
    println!("  settings:   {}", display_flags(&saved.settings));
    println!("  started:    {}", format_unix_time(saved.started_at));
    if let Some(ready) = &observation.ready {
        let codex = &ready.codex;
        println!(
            "  codex:      {} ({})",
            codex.program.as_deref().unwrap_or("?"),
            codex
                .version
                .as_deref()
                .or(codex.error.as_deref())
                .unwrap_or("?")
        );
    }
    let counters = observation
        .metrics
        .as_ref()
        .map(|m| m.counters.clone())
        .unwrap_or_default();
    println!(
        "  requests:   {} total, {} ok, {} failed",
        counters.requests_total, counters.requests_ok, counters.requests_error
    );
    let config_block = observation.config().cloned().unwrap_or_default();
    println!(
        "  reloads:    {} applied, {} rejected",
        config_block.reloads_ok, config_block.reloads_failed
    );
    print_files(files);
}

fn format_duration(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    match total {
        0..=59 => format!("{total}s"),
        60..=3599 => format!("{}m {}s", total / 60, total % 60),
        _ => format!("{}h {}m", total / 3600, total / 60 % 60),
    }
}

/// The saved settings for `--json`: the api key and the config's `${VAR}` values redacted.
fn redacted_settings(saved: &DaemonState) -> Value {
    let mut settings = serde_json::to_value(&saved.settings).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut settings {
        if map.get("api_key").is_some_and(|key| !key.is_null()) {
            map.insert("api_key".to_string(), json!(REDACTED));
        }
        // The config's `${VAR}` values are secrets as often as not: only their names are shown.
        if let Some(Value::Object(env)) = map.get_mut("config_env") {
            for value in env.values_mut() {
                *value = json!(REDACTED);
            }
        }
    }
    settings
}

/// The `profiles` object of `--json`: readiness from `/ready`, counters from `/metrics`.
fn profiles_json(observation: &Observation) -> serde_json::Map<String, Value> {
    let mut profiles = serde_json::Map::new();
    let Some(ready) = &observation.ready else {
        return profiles;
    };
    for (name, readiness) in &ready.profiles {
        let counters = observation.profile_metrics(name);
        profiles.insert(
            name.clone(),
            json!({
                "engine": readiness.engine,
                "ready": readiness.ready,
                "reason": readiness.reason,
                "in_flight": counters.map(|c| c.counters.in_flight),
                "queued": counters.map(|c| c.queued),
                "running": counters.map(|c| c.running),
                "requests": counters.map(|c| c.counters.requests),
            }),
        );
    }
    profiles
}

/// The `--json` object: the observation, the last start (api key redacted) and the files.
fn status_json(
    files: &DaemonFiles,
    saved: Option<&DaemonState>,
    observation: &Observation,
    state_error: Option<String>,
) -> Value {
    let ready = observation.ready.as_ref();
    let health = observation.health.as_ref();
    let running = observation.running();
    json!({
        "running": running,
        "state": observation.state,
        "reason": observation.reason,
        "pid": observation.pid,
        "url": if running { saved.map(|s| s.url.clone()) } else { None },
        "version": health.map(|h| h.version.clone()),
        "uptime_seconds": health.map(|h| h.uptime_seconds),
        "ready": ready.map(|r| r.status == ReadyStatus::Ready),
        "config": ready.map(|r| &r.config),
        "codex": ready.map(|r| &r.codex),
        "profiles": profiles_json(observation),
        "accounts": observation.quota.as_ref().map(|quota| &quota.accounts),
        "requests": observation.metrics.as_ref().map(|m| json!({
            "total": m.counters.requests_total,
            "ok": m.counters.requests_ok,
            "error": m.counters.requests_error,
        })),
        "last_start": saved.map(|s| json!({
            "url": s.url,
            "pid": s.pid,
            "started_at": s.started_at,
            "config": s.config,
            "settings": redacted_settings(s),
        })),
        "state_file_error": state_error,
        "files": {
            "pid": files.pid,
            "state": files.state,
            "log": files.log,
        },
    })
}
