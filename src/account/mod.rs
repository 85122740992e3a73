//! What the proxy knows about each Codex account, keyed by the `CODEX_HOME` Codex runs with: whether it
//! is logged in (and how), and its rate-limit windows (used percent, window length, reset time).
//!
//! The facts live in one process-wide [`AccountBook`] ([`book`]): a login or a quota window belongs to
//! a directory on this machine, not to a config snapshot, so a reload keeps them, and the app-server
//! workers report quota notifications into it without knowing about snapshots. Writers are the login
//! checker ([`login`], a periodic `codex login status` per home) and the quota readers ([`quota`]: the
//! workers' `account/rateLimits/updated` notifications). Readers are admission (`api::authorize_profile`),
//! `/ready`, `/metrics` and `/v1/quota`.
//!
//! Which home a profile uses, and whether it needs a login at all, is [`ProfileAccount`]; the
//! fallback decision is the pure [`fallback`] module; per-key limits are [`keys`]; `list_models`
//! discovery is [`models`]. Nothing here knows HTTP.

pub mod fallback;
pub mod keys;
pub mod login;
pub mod models;
pub mod quota;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::config::Profile;

/// How an account is logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    Chatgpt,
    ApiKey,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMethod::Chatgpt => "chatgpt",
            LoginMethod::ApiKey => "api_key",
        }
    }
}

/// The login state of one Codex home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Login {
    /// Not checked yet, or the check could not tell (requests are let through).
    #[default]
    Unknown,
    /// `codex login status` said so; the method when it named one.
    LoggedIn(Option<LoginMethod>),
    /// `codex login status` said `Not logged in`.
    NotLoggedIn,
}

/// One rate-limit window of an account, as Codex last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaWindow {
    /// `primary` (the 5-hour window) or `secondary` (the weekly one).
    pub id: String,
    pub used_percent: f64,
    pub window_minutes: Option<u64>,
    /// Unix seconds.
    pub resets_at: Option<u64>,
}

/// Everything known about one Codex home.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub login: Login,
    /// When `login` was last checked.
    pub login_checked_at: Option<Instant>,
    /// By window id, in id order.
    pub windows: BTreeMap<String, QuotaWindow>,
    /// Unix seconds of the last quota report.
    pub quota_updated_at: Option<u64>,
}

impl Account {
    /// The reset time (unix seconds) of the window that is used up at `now`, if one is: the latest
    /// such reset, since the account is unusable until every exhausted window has reset.
    pub fn exhausted_until(&self, now: u64) -> Option<u64> {
        self.windows
            .values()
            .filter(|window| window.used_percent >= 100.0)
            .filter_map(|window| window.resets_at)
            .filter(|resets_at| *resets_at > now)
            .max()
    }
}

/// The process-wide store of account facts, by Codex home. The mutex is never held across an
/// `.await` (every method copies in or out).
#[derive(Debug, Default)]
pub struct AccountBook {
    homes: Mutex<BTreeMap<PathBuf, Account>>,
}

/// The one [`AccountBook`] of the process.
pub fn book() -> &'static AccountBook {
    static BOOK: OnceLock<AccountBook> = OnceLock::new();
    BOOK.get_or_init(AccountBook::default)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AccountBook {
    /// What is known about `home` (a default, unknown account when nothing is).
    pub fn account(&self, home: &Path) -> Account {
        self.homes.lock().get(home).cloned().unwrap_or_default()
    }

    pub fn login(&self, home: &Path) -> Login {
        self.homes
            .lock()
            .get(home)
            .map_or(Login::Unknown, |account| account.login)
    }

    pub fn set_login(&self, home: &Path, login: Login) {
        let mut homes = self.homes.lock();
        let account = homes.entry(home.to_path_buf()).or_default();
        account.login = login;
        account.login_checked_at = Some(Instant::now());
    }

    /// Replaces the windows `windows` names (others are kept: a report may carry only one).
    pub fn set_windows(&self, home: &Path, windows: Vec<QuotaWindow>) {
        let mut homes = self.homes.lock();
        let account = homes.entry(home.to_path_buf()).or_default();
        for window in windows {
            account.windows.insert(window.id.clone(), window);
        }
        account.quota_updated_at = Some(unix_now());
    }
}

/// The account a profile runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileAccount {
    /// The `CODEX_HOME` Codex runs with for this profile.
    pub codex_home: PathBuf,
    /// False when the profile's `codex_config` selects a model provider that needs no login.
    pub needs_login: bool,
}

/// The built-in providers that need no OpenAI login.
const LOCAL_PROVIDERS: &[&str] = &["oss", "ollama", "lmstudio"];

/// Whether a profile's Codex needs an OpenAI login: not when its `codex_config` selects a custom
/// provider (`model_provider="x"` with `model_providers.x={…}`) that does not set
/// `requires_openai_auth = true`, or a local built-in one.
pub fn needs_login(codex_config: &[String]) -> bool {
    let mut merged = toml::Table::new();
    for item in codex_config {
        if let Ok(table) = toml::from_str::<toml::Table>(item) {
            merge(&mut merged, table);
        }
    }
    let Some(provider) = merged.get("model_provider").and_then(|v| v.as_str()) else {
        return true;
    };
    if LOCAL_PROVIDERS.contains(&provider) {
        return false;
    }
    let definition = merged
        .get("model_providers")
        .and_then(|providers| providers.get(provider))
        .and_then(|definition| definition.as_table());
    match definition {
        Some(definition) => definition
            .get("requires_openai_auth")
            .and_then(|value| value.as_bool())
            .unwrap_or(false),
        // A provider defined elsewhere (Codex's own config.toml): assume it needs what OpenAI needs.
        None => true,
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(value)) => {
                merge(existing, value)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The account of `profile`: app-server profiles run with their private `codex_home`; exec runs with
/// the `CODEX_HOME` of its environment (`user_home`).
pub fn profile_account(profile: &Profile, user_home: &Path) -> ProfileAccount {
    let codex_home = match profile.runtime.engine {
        crate::config::EngineKind::AppServer => profile.runtime.codex_home.clone(),
        crate::config::EngineKind::Exec => user_home.to_path_buf(),
    };
    ProfileAccount {
        codex_home,
        needs_login: needs_login(&profile.effective_codex_config()),
    }
}

/// The `CODEX_HOME` a Codex child gets from the environment `env`: its `CODEX_HOME`, else
/// `$HOME/.codex`.
pub fn home_from_env<'a>(
    env: impl IntoIterator<Item = (&'a std::ffi::OsStr, &'a std::ffi::OsStr)>,
) -> PathBuf {
    let mut home = None;
    let mut codex_home = None;
    for (name, value) in env {
        if name == "CODEX_HOME" && !value.is_empty() {
            codex_home = Some(PathBuf::from(value));
        } else if name == "HOME" {
            home = Some(PathBuf::from(value));
        }
    }
    codex_home.unwrap_or_else(|| home.unwrap_or_else(crate::config::home_dir).join(".codex"))
}

/// The user-facing reason a home is not usable: "not logged in: run `codex login`", naming it.
pub fn not_logged_in_reason(home: &Path) -> String {
    format!(
        "not logged in: run `codex login` (CODEX_HOME={})",
        home.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_provider_without_openai_auth_needs_no_login() {
        let mock = vec![
            r#"model_provider="mock""#.to_string(),
            r#"model_providers.mock={name="mock",base_url="http://127.0.0.1:1/v1",wire_api="responses"}"#
                .to_string(),
        ];
        assert!(!needs_login(&mock));
        let mut openai = mock.clone();
        openai[1] =
            r#"model_providers.mock={name="m",base_url="http://x",requires_openai_auth=true}"#
                .to_string();
        assert!(needs_login(&openai));
        assert!(needs_login(&[]));
        assert!(needs_login(&[r#"model_provider="openai""#.to_string()]));
        assert!(!needs_login(&[r#"model_provider="oss""#.to_string()]));
        assert!(needs_login(&["model_reasoning_effort=\"low\"".to_string()]));
        // Dotted keys split over several items merge.
        let split = vec![
            r#"model_provider="p""#.to_string(),
            r#"model_providers.p.name="p""#.to_string(),
            r#"model_providers.p.base_url="http://x""#.to_string(),
        ];
        assert!(!needs_login(&split));
    }

    #[test]
    fn the_home_comes_from_codex_home_then_home() {
        use std::ffi::OsStr;
        let env = [
            (OsStr::new("HOME"), OsStr::new("/h")),
            (OsStr::new("CODEX_HOME"), OsStr::new("/c")),
        ];
        assert_eq!(home_from_env(env), PathBuf::from("/c"));
        let env = [(OsStr::new("HOME"), OsStr::new("/h"))];
        assert_eq!(home_from_env(env), PathBuf::from("/h/.codex"));
    }

    #[test]
    fn an_account_is_exhausted_until_its_latest_full_window_resets() {
        let book = AccountBook::default();
        let home = Path::new("/tmp/account-test-home");
        let window = |id: &str, used: f64, resets_at: u64| QuotaWindow {
            id: id.to_string(),
            used_percent: used,
            window_minutes: Some(300),
            resets_at: Some(resets_at),
        };
        book.set_windows(home, vec![window("primary", 42.0, 2_000)]);
        assert_eq!(book.account(home).exhausted_until(1_000), None);
        book.set_windows(
            home,
            vec![
                window("primary", 100.0, 2_000),
                window("secondary", 100.0, 5_000),
            ],
        );
        assert_eq!(book.account(home).exhausted_until(1_000), Some(5_000));
        assert_eq!(book.account(home).exhausted_until(6_000), None);
        assert_eq!(book.account(home).windows.len(), 2);
    }
}
