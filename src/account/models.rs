//! Model discovery for `list_models = true` profiles: the models the account can use, as the
//! app-server's `model/list` answers, cached per profile ([`ModelCatalog`]).
//!
//! A catalog asks a short-lived `codex app-server` (started with the profile's own Codex settings and
//! `CODEX_HOME`, in its own process group, killed when the answer is in): `initialize`, then
//! `model/list` page by page. That costs one app-server start per [`REFRESH`] (measured on a 2-core box
//! with the native 0.169.0 binary: about 0.14 s wall and 0.1 s CPU; through the npm launcher 0.7 s); a
//! failed fetch is retried after [`RETRY`], keeping the last list.
//! `/v1/models` waits for the first fetch only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a fetched list is served before it is fetched again.
pub const REFRESH: Duration = Duration::from_secs(600);
/// How long after a failed fetch the next one is tried.
pub const RETRY: Duration = Duration::from_secs(60);
/// The longest one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// The most of the app-server's output one fetch reads.
const MAX_OUTPUT: u64 = 16 << 20;
/// At most this many pages are read (a guard against a cursor that never ends).
const MAX_PAGES: usize = 20;

/// One model of `model/list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedModel {
    pub id: String,
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub hidden: bool,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<ListedModel>,
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
}

/// The models and the next cursor of a `model/list` result; hidden models are left out.
pub fn parse_page(result: &serde_json::Value) -> Option<(Vec<ListedModel>, Option<String>)> {
    let page: Page = serde_json::from_value(result.clone()).ok()?;
    let models = page
        .data
        .into_iter()
        .filter(|model| !model.hidden)
        .collect();
    Some((models, page.next_cursor.filter(|cursor| !cursor.is_empty())))
}

/// How to start the app-server that answers `model/list` for one profile.
#[derive(Debug, Clone)]
pub struct CatalogTarget {
    pub program: PathBuf,
    /// `app-server` and the profile's flags and `-c` overrides.
    pub args: Vec<String>,
    /// The complete environment; `CODEX_HOME` is set on top.
    pub env: Vec<(OsString, OsString)>,
    pub codex_home: PathBuf,
}

/// What the catalog holds: the last list and when the next fetch is due.
#[derive(Debug, Default)]
struct Cached {
    models: Arc<Vec<ListedModel>>,
    due: Option<Instant>,
}

/// The cached model list of one profile.
#[derive(Debug)]
pub struct ModelCatalog {
    target: CatalogTarget,
    /// Short critical sections only (copying an `Arc` in or out).
    cached: parking_lot::Mutex<Cached>,
    /// Held across a fetch, so concurrent callers wait for one fetch instead of starting several.
    fetching: tokio::sync::Mutex<()>,
}

impl ModelCatalog {
    pub fn new(target: CatalogTarget) -> ModelCatalog {
        ModelCatalog {
            target,
            cached: parking_lot::Mutex::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The models, fetched when the cache is due.
    pub async fn models(&self) -> Arc<Vec<ListedModel>> {
        if let Some(models) = self.fresh() {
            return models;
        }
        let _fetching = self.fetching.lock().await;
        if let Some(models) = self.fresh() {
            return models;
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetch(&self.target)).await;
        let mut cached = self.cached.lock();
        match fetched {
            Ok(Ok(models)) => {
                cached.models = Arc::new(models);
                cached.due = Some(Instant::now() + REFRESH);
            }
            Ok(Err(err)) => {
                tracing::warn!(
                    "model/list for {} failed: {err}",
                    self.target.codex_home.display()
                );
                cached.due = Some(Instant::now() + RETRY);
            }
            Err(_) => {
                tracing::warn!(
                    "model/list for {} timed out",
                    self.target.codex_home.display()
                );
                cached.due = Some(Instant::now() + RETRY);
            }
        }
        cached.models.clone()
    }

    fn fresh(&self) -> Option<Arc<Vec<ListedModel>>> {
        let cached = self.cached.lock();
        cached
            .due
            .filter(|due| Instant::now() < *due)
            .map(|_| cached.models.clone())
    }
}

/// Starts the app-server, asks `model/list` for every page, and ends it.
async fn fetch(target: &CatalogTarget) -> Result<Vec<ListedModel>, String> {
    let mut session = Session::start(target).await?;
    let result = list_all(&mut session).await;
    session.finish().await;
    result
}

async fn list_all(session: &mut Session) -> Result<Vec<ListedModel>, String> {
    let mut models = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let result = session
            .call("model/list", serde_json::json!({"cursor": cursor}))
            .await?;
        let (listed, next) = parse_page(&result).ok_or("model/list answered an unknown shape")?;
        models.extend(listed);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(models)
}

/// `account/rateLimits/read` on a short-lived app-server: the quota of an account that no running
/// app-server reports (exec-only setups). One app-server start and one request to the account service.
pub async fn read_rate_limits(target: &CatalogTarget) -> Result<serde_json::Value, String> {
    let mut session = Session::start(target).await?;
    let result = session
        .call("account/rateLimits/read", serde_json::Value::Null)
        .await;
    session.finish().await;
    result
}

/// One short-lived `codex app-server`, initialized, in its own process group.
struct Session {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::io::Take<tokio::process::ChildStdout>>>,
    next_id: u64,
}

impl Session {
    async fn start(target: &CatalogTarget) -> Result<Session, String> {
        // Codex refuses a CODEX_HOME that does not exist (an app-server profile's private home before
        // its first worker started).
        if !target.codex_home.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&target.codex_home)
                .map_err(|err| format!("cannot create {}: {err}", target.codex_home.display()))?;
        }
        let mut command = tokio::process::Command::new(&target.program);
        command
            .args(&target.args)
            .env_clear()
            .envs(target.env.iter().map(|(k, v)| (k, v)))
            .env("CODEX_HOME", &target.codex_home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", target.program.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Bounded: a Codex that prints without end must not grow the proxy.
        let lines = BufReader::new(tokio::io::AsyncReadExt::take(stdout, MAX_OUTPUT)).lines();
        let mut session = Session {
            child,
            stdin,
            lines,
            next_id: 0,
        };
        let initialized = session
            .call(
                "initialize",
                serde_json::json!({
                    "clientInfo": {"name": "codex-api-proxy", "title": null, "version": env!("CARGO_PKG_VERSION")},
                    "capabilities": {"experimentalApi": true},
                }),
            )
            .await
            .and(Ok(()));
        if let Err(err) = initialized {
            session.finish().await;
            return Err(err);
        }
        session
            .write(&serde_json::json!({"method": "initialized"}))
            .await?;
        Ok(session)
    }

    /// One request and its `result` (notifications and other lines are skipped).
    async fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = serde_json::json!({"id": id, "method": method});
        if !params.is_null() {
            request["params"] = params;
        }
        self.write(&request).await?;
        while let Some(line) = self
            .lines
            .next_line()
            .await
            .map_err(|err| format!("reading from the app-server: {err}"))?
        {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message.get("id").and_then(|v| v.as_u64()) != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(format!("{method} answered an error: {error}"));
            }
            return Ok(message.get("result").cloned().unwrap_or_default());
        }
        Err(format!("the app-server ended before it answered {method}"))
    }

    async fn write(&mut self, message: &serde_json::Value) -> Result<(), String> {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|err| format!("writing to the app-server: {err}"))
    }

    /// Kills the process group (before reaping, so the id is still ours) and reaps the process.
    async fn finish(mut self) {
        if let Some(pgid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) with a negative pid signals the process group this session created; no
            // memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_page_without_hidden_models() {
        let result = serde_json::json!({"data": [
            {"id": "gpt-6.1-sol", "model": "gpt-6.1-sol", "displayName": "GPT-6.1-Sol", "description": "Workhorse", "hidden": false, "isDefault": true},
            {"id": "secret", "hidden": true},
        ], "nextCursor": "abc"});
        let (models, next) = parse_page(&result).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].id, "gpt-6.1-sol");
        assert_eq!(models[0].description.as_deref(), Some("Workhorse"));
        assert_eq!(next.as_deref(), Some("abc"));
        let (models, next) = parse_page(&serde_json::json!({"data": []})).unwrap();
        assert!(models.is_empty() && next.is_none());
        assert!(parse_page(&serde_json::json!([1])).is_none());
    }
}
