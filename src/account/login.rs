//! The login checker: `codex login status` per Codex home (about 20 ms with the native binary), run at
//! start and then periodically by a [`LoginWatcher`] task, writing into the [`AccountBook`]. A home that
//! is not logged in is checked again every [`RECHECK_LOGGED_OUT`], so a `codex login` while the proxy
//! runs is picked up within seconds; a logged-in one every [`RECHECK_LOGGED_IN`] (a logout or an expired
//! login is then noticed too).
//!
//! The same task reads the quota of homes only exec profiles use (see [`LoginTarget::quota_reader`]).
//!
//! Only a clear `Not logged in` answer marks a home as logged out; a check that fails in any other way
//! (the binary is missing, a timeout, an unknown answer) leaves the state unknown, which admission
//! treats as usable: the engine's own error then says what is wrong.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::models::{read_rate_limits, CatalogTarget};
use super::quota::record_rate_limits;
use super::{book, AccountBook, Login, LoginMethod};

/// How often a logged-out (or unknown) home is checked again.
pub const RECHECK_LOGGED_OUT: Duration = Duration::from_secs(2);
/// How often a logged-in home is checked again.
pub const RECHECK_LOGGED_IN: Duration = Duration::from_secs(60);
/// The longest a single check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run `codex login status` for one home.
#[derive(Debug, Clone)]
pub struct LoginTarget {
    pub codex_home: PathBuf,
    pub program: PathBuf,
    /// The complete environment of the check (the profile's Codex environment); `CODEX_HOME` is set on
    /// top.
    pub env: Vec<(OsString, OsString)>,
    /// For an app-server profile's private home: the user's home whose `auth.json` it links to.
    pub links_auth_from: Option<PathBuf>,
    /// For a home only exec profiles use: how to read its quota (`account/rateLimits/read` on a
    /// short-lived app-server: about 0.14 s wall and 0.1 s CPU plus one request to the account
    /// service), done every [`QUOTA_READ_INTERVAL`] while it is logged in with ChatGPT.
    pub quota_reader: Option<CatalogTarget>,
}

/// How often an exec-only home's quota is read (when no app-server reported it in that time).
pub const QUOTA_READ_INTERVAL: Duration = Duration::from_secs(300);

/// Reads the quota of the targets that need it read (see [`LoginTarget::quota_reader`]);
/// `last_read` remembers the attempts by home.
async fn read_due_quotas(
    targets: &[LoginTarget],
    last_read: &mut std::collections::HashMap<PathBuf, Instant>,
) {
    for target in targets {
        let Some(reader) = &target.quota_reader else {
            continue;
        };
        let account = book().account(&target.codex_home);
        if account.login != Login::LoggedIn(Some(LoginMethod::Chatgpt)) {
            continue;
        }
        let reported_lately = account
            .quota_updated_at
            .is_some_and(|at| super::unix_now().saturating_sub(at) < QUOTA_READ_INTERVAL.as_secs());
        let tried_lately = last_read
            .get(&target.codex_home)
            .is_some_and(|at| at.elapsed() < QUOTA_READ_INTERVAL);
        if reported_lately || tried_lately {
            continue;
        }
        last_read.insert(target.codex_home.clone(), Instant::now());
        match tokio::time::timeout(CHECK_TIMEOUT * 2, read_rate_limits(reader)).await {
            Ok(Ok(result)) => record_rate_limits(&target.codex_home, &result.to_string()),
            Ok(Err(err)) => tracing::warn!(
                "account/rateLimits/read for {} failed: {err}",
                target.codex_home.display()
            ),
            Err(_) => tracing::warn!(
                "account/rateLimits/read for {} timed out",
                target.codex_home.display()
            ),
        }
    }
}

/// Reads the answer of `codex login status`.
pub fn parse_status(success: bool, output: &str) -> Login {
    let lower = output.to_ascii_lowercase();
    // A CODEX_HOME that does not exist holds no login either (Codex refuses to start with it).
    let missing_home = lower.contains("codex_home points to") && lower.contains("does not exist");
    if lower.contains("not logged in") || missing_home {
        return Login::NotLoggedIn;
    }
    if !success {
        return Login::Unknown;
    }
    let method = if lower.contains("chatgpt") {
        Some(LoginMethod::Chatgpt)
    } else if lower.contains("api key") {
        Some(LoginMethod::ApiKey)
    } else {
        None
    };
    Login::LoggedIn(method)
}

/// A private home links the user's `auth.json` (the app-server workers make the same link when they
/// start, see `engine::app_server::worker::prepare_codex_home`); a login made after they started is
/// linked here so that the check, and the running workers, see it.
fn link_auth(home: &Path, user_home: &Path) {
    let source = user_home.join("auth.json");
    let link = home.join("auth.json");
    if source.exists() && !link.exists() && home.is_dir() {
        let _ = std::fs::remove_file(&link);
        let _ = std::os::unix::fs::symlink(&source, &link);
    }
}

/// The most of each output stream a check reads: the answer is one short line, and a Codex that
/// prints without end must not grow the proxy.
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// Runs one check and returns what it found.
pub async fn check(target: &LoginTarget) -> Login {
    if let Some(user_home) = &target.links_auth_from {
        link_auth(&target.codex_home, user_home);
    }
    let mut command = tokio::process::Command::new(&target.program);
    command
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .env("CODEX_HOME", &target.codex_home)
        .args(["login", "status"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let Ok(mut child) = command.spawn() else {
        return Login::Unknown;
    };
    let pgid = child.id();
    let out = child.stdout.take();
    let err = child.stderr.take();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        let (stdout, stderr) = tokio::join!(read_limited(out), read_limited(err));
        // The answer is in; a Codex that lingers after closing its output gets a moment to exit.
        let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        (format!("{stdout}\n{stderr}"), status)
    })
    .await;
    match outcome {
        Ok((text, Ok(Ok(status)))) => parse_status(status.success(), &text),
        _ => {
            // Not reaped yet, so the group id is still this check's.
            kill_group(pgid);
            let _ = child.wait().await;
            Login::Unknown
        }
    }
}

/// At most [`OUTPUT_LIMIT`] bytes of a pipe, as text.
async fn read_limited(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(OUTPUT_LIMIT).read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) with a negative pid signals the process group this module created for the
        // check; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// `codex login status` for `codex_home` without a runtime (for the offline `check` command), with the
/// caller's environment; gives up after [`CHECK_TIMEOUT`], and reads at most [`OUTPUT_LIMIT`] of each
/// stream.
pub fn check_blocking(program: &str, codex_home: &Path) -> Login {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(program)
        .env("CODEX_HOME", codex_home)
        .args(["login", "status"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let Ok(mut child) = child else {
        return Login::Unknown;
    };
    let pgid = child.id();
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(OUTPUT_LIMIT).read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                // Not reaped yet, so the group id is still this check's.
                kill_group(Some(pgid));
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = format!(
        "{}\n{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    match status {
        Some(status) => parse_status(status.success(), &text),
        None => Login::Unknown,
    }
}

/// Checks every target whose state is due, writing the results into `book`.
pub async fn refresh_due(book: &AccountBook, targets: &[LoginTarget]) {
    for target in targets {
        let account = book.account(&target.codex_home);
        let due = match (account.login, account.login_checked_at) {
            (_, None) => true,
            (Login::LoggedIn(_), Some(at)) => at.elapsed() >= RECHECK_LOGGED_IN,
            (_, Some(at)) => at.elapsed() >= RECHECK_LOGGED_OUT,
        };
        if due {
            let login = check(target).await;
            book.set_login(&target.codex_home, login);
        }
    }
}

/// Checks every target now (for `/ready` when a state is still unknown).
pub async fn refresh_unknown(targets: &[LoginTarget]) {
    for target in targets {
        if book()
            .account(&target.codex_home)
            .login_checked_at
            .is_none()
        {
            let login = check(target).await;
            book().set_login(&target.codex_home, login);
        }
    }
}

/// Keeps the login state of a set of homes fresh while alive (the snapshot that needs them holds
/// it); dropping it stops the task.
#[derive(Debug)]
pub struct LoginWatcher {
    task: tokio::task::JoinHandle<()>,
    pub targets: Arc<Vec<LoginTarget>>,
}

impl LoginWatcher {
    /// Starts watching `targets`, or `None` outside a Tokio runtime or with nothing to watch.
    pub fn start(targets: Vec<LoginTarget>) -> Option<LoginWatcher> {
        if targets.is_empty() {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let targets = Arc::new(targets);
        let watched = targets.clone();
        let task = handle.spawn(async move {
            let started = Instant::now();
            let mut last_read = std::collections::HashMap::new();
            loop {
                refresh_due(book(), &watched).await;
                read_due_quotas(&watched, &mut last_read).await;
                // Often at first (the first answers), then once a second.
                let pause = if started.elapsed() < Duration::from_secs(1) {
                    Duration::from_millis(100)
                } else {
                    Duration::from_secs(1)
                };
                tokio::time::sleep(pause).await;
            }
        });
        Some(LoginWatcher { task, targets })
    }
}

impl Drop for LoginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_answers_of_codex_login_status() {
        assert_eq!(parse_status(false, "Not logged in\n"), Login::NotLoggedIn);
        assert_eq!(
            parse_status(true, "WARNING: …\nAPI key configured - sk-test-***56789\n"),
            Login::LoggedIn(Some(LoginMethod::ApiKey))
        );
        assert_eq!(
            parse_status(true, "Logged in using ChatGPT\n"),
            Login::LoggedIn(Some(LoginMethod::Chatgpt))
        );
        assert_eq!(
            parse_status(false, "error: unknown command"),
            Login::Unknown
        );
        assert_eq!(parse_status(true, "Logged in"), Login::LoggedIn(None));
        assert_eq!(
            parse_status(
                false,
                "Error loading configuration: CODEX_HOME points to \"/x\", but that path does not exist"
            ),
            Login::NotLoggedIn
        );
    }
}
