//! `status`: what the pid file, the state file and the server's own `/health`, `/ready` and `/metrics`
//! say, as text (`--verbose` adds the saved settings, Codex and counters) or one JSON object
//! (`--json`); exit code 0 only when our server runs and answers as its pid.
//!
//! It only observes: it changes no file (a stale pid file is left for `start` or `stop` to remove) and
//! signals nothing.

use serde_json::{json, Value};

use crate::cli::StatusArgs;
use crate::config;

use super::display::{
    display_flags, format_unix_time, pid_or_unknown, print_endpoints, print_files, profile_lines,
    profile_names, string_items, REDACTED,
};
use super::files::{DaemonFiles, DaemonState};
use super::http::{get_health, get_json_keyed, get_ready, health_pid};
use super::process::PidFile;

/// What `status` found out.
struct Observation {
    /// `running`, `stopped`, `stale` (pid file names a dead or foreign pid) or `unresponsive` (our
    /// pid lives but the saved address does not answer as that pid).
    state: &'static str,
    pid: Option<u32>,
    reason: Option<String>,
    health: Option<Value>,
    ready: Option<Value>,
    metrics: Option<Value>,
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
        }
    }
}

async fn observe(files: &DaemonFiles, saved: Option<&DaemonState>) -> Observation {
    let pid_file = PidFile::read(&files.pid);
    let pid = match pid_file {
        PidFile::Missing => {
            let reason = format!("no pid file at {}", files.pid.display());
            return Observation::not_running("stopped", None, Some(reason));
        }
        PidFile::Ours(pid) => pid,
        PidFile::Dead(pid) | PidFile::Foreign { pid, .. } => {
            let reason = pid_file.stale_reason(&files.pid);
            return Observation::not_running("stale", Some(pid), reason);
        }
        PidFile::Garbled(_) => {
            return Observation::not_running("stale", None, pid_file.stale_reason(&files.pid));
        }
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
        Ok(reply) if reply.status == 200 => reply.json(),
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
    if answered_by != Some(u64::from(pid)) {
        return unresponsive(format!(
            "{} is answered by pid {}, not by pid {pid} of the pid file",
            saved.url,
            pid_or_unknown(answered_by)
        ));
    }
    let keys = saved.keys();
    let ready = get_ready(saved.address, &keys).await;
    let metrics = get_json_keyed(saved.address, "/metrics", &keys).await;
    // With keys configured, only a keyed `/health` shows the version and uptime.
    let health = get_json_keyed(saved.address, "/health", &keys)
        .await
        .unwrap_or(health);
    Observation {
        state: "running",
        pid: Some(pid),
        reason: None,
        health: Some(health),
        ready,
        metrics,
    }
}

pub(super) async fn run(args: &StatusArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let (saved, state_error) = match DaemonState::load(&files.state) {
        Ok(saved) => (saved, None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    let observation = observe(&files, saved.as_ref()).await;
    let code = if observation.state == "running" { 0 } else { 1 };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(
                &files,
                saved.as_ref(),
                &observation,
                state_error
            ))?
        );
        return Ok(code);
    }
    match observation.state {
        "running" => {
            let health = observation.health.as_ref().unwrap_or(&Value::Null);
            println!(
                "codex-api-proxy {} is running (pid {}, up {})",
                health["version"].as_str().unwrap_or("?"),
                observation.pid.unwrap_or(0),
                format_duration(health["uptime_seconds"].as_f64().unwrap_or(0.0))
            );
        }
        "unresponsive" => println!(
            "codex-api-proxy is not responding: {}",
            observation.reason.as_deref().unwrap_or("")
        ),
        _ => {
            println!(
                "codex-api-proxy is not running: {}",
                observation.reason.as_deref().unwrap_or("")
            );
            if observation.state == "stale" {
                println!("(`codex-api-proxy start` or `stop` removes the stale pid file)");
            }
        }
    }
    if let Some(error) = &state_error {
        println!("  state file: {error}");
    }
    let Some(saved) = saved.as_ref() else {
        return Ok(code);
    };
    if observation.state != "running" {
        if args.verbose {
            println!("last start ({}):", format_unix_time(saved.started_at));
            println!("  url:        {}", saved.url);
            println!("  settings:   {}", display_flags(&saved.settings));
            print_files(&files);
        }
        return Ok(code);
    }
    let ready = observation.ready.as_ref().unwrap_or(&Value::Null);
    let metrics = observation.metrics.as_ref().unwrap_or(&Value::Null);
    let config_block = if ready.get("config").is_some() {
        &ready["config"]
    } else {
        &metrics["config"]
    };
    println!("  url:        {}", saved.url);
    match config_block["path"].as_str() {
        Some(path) => {
            println!(
                "  config:     {path} (generation {})",
                config_block["generation"].as_u64().unwrap_or(0)
            );
            match config_block["last_error"].as_str() {
                Some(error) => {
                    println!("  last reload error (still serving the previous config):");
                    for line in error.lines() {
                        println!("    {line}");
                    }
                }
                None => println!("  last reload error: none"),
            }
        }
        None => println!(
            "  config:     none (one `{}` profile from flags)",
            config::IMPLICIT_PROFILE
        ),
    }
    if let Some(required) =
        string_items(&config_block["restart_required"]).filter(|items| !items.is_empty())
    {
        println!("  restart required for: {}", required.join(", "));
    }
    if ready["status"] != "ready" {
        println!("  readiness:  NOT READY");
    }
    println!("profiles:");
    for (name, line) in profile_lines(None, Some(ready), None) {
        let block = &metrics["profiles"][&name];
        if block.is_object() {
            println!(
                "  {line}  in flight {}, queued {}, requests {}",
                block["in_flight"].as_u64().unwrap_or(0),
                block["queued"].as_u64().unwrap_or(0),
                block["requests"].as_u64().unwrap_or(0)
            );
        } else {
            println!("  {line}");
        }
    }
    print_endpoints(&saved.url);
    if args.verbose {
        println!("details:");
        println!("  settings:   {}", display_flags(&saved.settings));
        println!("  started:    {}", format_unix_time(saved.started_at));
        if let Some(codex) = ready.get("codex") {
            println!(
                "  codex:      {} ({})",
                codex["program"].as_str().unwrap_or("?"),
                codex["version"]
                    .as_str()
                    .or(codex["error"].as_str())
                    .unwrap_or("?")
            );
        }
        println!(
            "  requests:   {} total, {} ok, {} failed",
            metrics["requests_total"].as_u64().unwrap_or(0),
            metrics["requests_ok"].as_u64().unwrap_or(0),
            metrics["requests_error"].as_u64().unwrap_or(0)
        );
        println!(
            "  reloads:    {} applied, {} rejected",
            config_block["reloads_ok"].as_u64().unwrap_or(0),
            config_block["reloads_failed"].as_u64().unwrap_or(0)
        );
        print_files(&files);
    }
    Ok(code)
}

fn format_duration(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    match total {
        0..=59 => format!("{total}s"),
        60..=3599 => format!("{}m {}s", total / 60, total % 60),
        _ => format!("{}h {}m", total / 3600, total / 60 % 60),
    }
}

/// The `--json` object: the observation, the last start (api key redacted) and the files.
fn status_json(
    files: &DaemonFiles,
    saved: Option<&DaemonState>,
    observation: &Observation,
    state_error: Option<String>,
) -> Value {
    let mut settings = saved.map(|s| serde_json::to_value(&s.settings).unwrap_or(Value::Null));
    if let Some(Value::Object(map)) = settings.as_mut() {
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
    let ready = observation.ready.as_ref();
    let metrics = observation.metrics.as_ref();
    let mut profiles = serde_json::Map::new();
    if let Some(ready) = ready {
        for name in profile_names(ready) {
            let readiness = &ready["profiles"][&name];
            let counters = metrics
                .map(|m| &m["profiles"][&name])
                .unwrap_or(&Value::Null);
            profiles.insert(
                name,
                json!({
                    "engine": readiness["engine"],
                    "ready": readiness["ready"],
                    "reason": readiness["reason"],
                    "in_flight": counters["in_flight"],
                    "queued": counters["queued"],
                    "running": counters["running"],
                    "requests": counters["requests"],
                }),
            );
        }
    }
    let running = observation.state == "running";
    json!({
        "running": running,
        "state": observation.state,
        "reason": observation.reason,
        "pid": observation.pid,
        "url": if running { saved.map(|s| s.url.clone()) } else { None },
        "version": observation.health.as_ref().map(|h| h["version"].clone()),
        "uptime_seconds": observation.health.as_ref().map(|h| h["uptime_seconds"].clone()),
        "ready": ready.map(|r| r["status"] == "ready"),
        "config": ready.map(|r| r["config"].clone()),
        "codex": ready.map(|r| r["codex"].clone()),
        "profiles": profiles,
        "requests": metrics.map(|m| json!({
            "total": m["requests_total"],
            "ok": m["requests_ok"],
            "error": m["requests_error"],
        })),
        "last_start": saved.map(|s| json!({
            "url": s.url,
            "pid": s.pid,
            "started_at": s.started_at,
            "config": s.config,
            "settings": settings,
        })),
        "state_file_error": state_error,
        "files": {
            "pid": files.pid,
            "state": files.state,
            "log": files.log,
        },
    })
}
