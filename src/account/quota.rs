//! Reading an account's rate-limit windows from what Codex reports.
//!
//! Codex reads the response headers `x-codex-primary-used-percent`, `…-window-minutes`, `…-reset-at`
//! (and `secondary`) of every model response and tells app-server clients as
//! `account/rateLimits/updated {rateLimits:{limitId, primary:{usedPercent, windowDurationMins,
//! resetsAt}, secondary:{…}}}`; `account/rateLimits/read` answers `{rateLimits:{…}}` in the same shape.
//! [`record_rate_limits`] parses either and writes the windows into the [`super::AccountBook`].
//!
//! Exec-only setups get no notification (`codex exec --json` does not print the windows): their quota is
//! known only from app-server turns on the same login (an app-server profile's private home links the
//! user's `auth.json`, and its reports are recorded for the user's home too).

use std::path::Path;

use serde::Deserialize;

use super::{book, QuotaWindow};

/// The notification the app-server workers forward.
pub const RATE_LIMITS_UPDATED: &str = "account/rateLimits/updated";

#[derive(Deserialize)]
struct Params {
    #[serde(rename = "rateLimits")]
    rate_limits: Option<Snapshot>,
}

#[derive(Deserialize)]
struct Snapshot {
    primary: Option<Window>,
    secondary: Option<Window>,
}

#[derive(Deserialize)]
struct Window {
    #[serde(rename = "usedPercent")]
    used_percent: f64,
    #[serde(rename = "windowDurationMins")]
    window_duration_mins: Option<u64>,
    #[serde(rename = "resetsAt")]
    resets_at: Option<u64>,
}

/// The windows of an `account/rateLimits/updated` params object or an `account/rateLimits/read`
/// result; `None` when it is neither.
pub fn parse_rate_limits(json: &str) -> Option<Vec<QuotaWindow>> {
    let params: Params = serde_json::from_str(json).ok()?;
    let snapshot = params.rate_limits?;
    let windows = [
        ("primary", snapshot.primary),
        ("secondary", snapshot.secondary),
    ]
    .into_iter()
    .filter_map(|(id, window)| {
        window.map(|window| QuotaWindow {
            id: id.to_string(),
            used_percent: window.used_percent,
            window_minutes: window.window_duration_mins,
            resets_at: window.resets_at,
        })
    })
    .collect();
    Some(windows)
}

/// Records the windows of a rate-limit report for the account of `codex_home`; anything else is
/// ignored. A private home whose `auth.json` links another home's login (the app-server workers'
/// homes) reports for that home too: it is the same account, and exec profiles run there.
pub fn record_rate_limits(codex_home: &Path, json: &str) {
    let Some(windows) = parse_rate_limits(json).filter(|windows| !windows.is_empty()) else {
        return;
    };
    if let Some(linked) = linked_home(codex_home) {
        book().set_windows(&linked, windows.clone());
    }
    book().set_windows(codex_home, windows);
}

/// The home whose `auth.json` the one in `codex_home` links to, if it is a link to another home.
fn linked_home(codex_home: &Path) -> Option<std::path::PathBuf> {
    let target = std::fs::read_link(codex_home.join("auth.json")).ok()?;
    let target = if target.is_absolute() {
        target
    } else {
        codex_home.join(target)
    };
    let home = target.parent()?.to_path_buf();
    (home != codex_home).then_some(home)
}

/// Records that the model service refused a request of `codex_home` for quota (Codex's
/// `usageLimitExceeded`; Codex does not report the windows of an error response): the most used
/// window whose reset is known and ahead is marked used up, so admission skips the account until then.
/// Returns the seconds until that reset (the refusal's `Retry-After`), or `None` when no reset is
/// known.
pub fn record_quota_refusal(codex_home: &Path, now: u64) -> Option<u64> {
    let account = book().account(codex_home);
    let mut window = account
        .windows
        .values()
        .filter(|window| window.resets_at.is_some_and(|at| at > now))
        .max_by(|a, b| a.used_percent.total_cmp(&b.used_percent))?
        .clone();
    window.used_percent = 100.0;
    let reset = window.resets_at?;
    book().set_windows(codex_home, vec![window]);
    Some(reset - now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_from_a_linked_private_home_counts_for_the_linked_home_too() {
        let base = std::env::temp_dir().join(format!("quota-link-{}", std::process::id()));
        let user = base.join("user");
        let private = base.join("private");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(user.join("auth.json"), "{}").unwrap();
        std::os::unix::fs::symlink(user.join("auth.json"), private.join("auth.json")).unwrap();
        record_rate_limits(
            &private,
            r#"{"rateLimits":{"primary":{"usedPercent":5,"windowDurationMins":300,"resetsAt":9}}}"#,
        );
        assert_eq!(book().account(&user).windows["primary"].used_percent, 5.0);
        assert_eq!(
            book().account(&private).windows["primary"].used_percent,
            5.0
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_quota_refusal_marks_the_most_used_window_until_its_reset() {
        let home = Path::new("/tmp/quota-refusal-test-home");
        assert_eq!(record_quota_refusal(home, 1_000), None);
        book().set_windows(
            home,
            vec![
                QuotaWindow {
                    id: "primary".into(),
                    used_percent: 97.0,
                    window_minutes: Some(300),
                    resets_at: Some(4_600),
                },
                QuotaWindow {
                    id: "secondary".into(),
                    used_percent: 40.0,
                    window_minutes: Some(10_080),
                    resets_at: Some(600_000),
                },
            ],
        );
        assert_eq!(record_quota_refusal(home, 1_000), Some(3_600));
        assert_eq!(book().account(home).exhausted_until(1_000), Some(4_600));
        assert_eq!(book().account(home).exhausted_until(4_600), None);
    }

    #[test]
    fn parses_the_notification_codex_sends() {
        let json = r#"{"rateLimits":{"limitId":"codex","limitName":null,"primary":{"usedPercent":42,"windowDurationMins":300,"resetsAt":1767225600},"secondary":{"usedPercent":7,"windowDurationMins":10080,"resetsAt":null},"credits":null,"planType":null}}"#;
        let windows = parse_rate_limits(json).unwrap();
        assert_eq!(
            windows,
            vec![
                QuotaWindow {
                    id: "primary".into(),
                    used_percent: 42.0,
                    window_minutes: Some(300),
                    resets_at: Some(1_767_225_600)
                },
                QuotaWindow {
                    id: "secondary".into(),
                    used_percent: 7.0,
                    window_minutes: Some(10_080),
                    resets_at: None
                },
            ]
        );
        assert_eq!(
            parse_rate_limits(r#"{"rateLimits":{"primary":null}}"#),
            Some(vec![])
        );
        assert_eq!(parse_rate_limits("{}"), None);
        assert_eq!(parse_rate_limits("[1]"), None);
    }
}
