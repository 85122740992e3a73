//! The profile fallback decision, without I/O: which failures move a request on to another profile
//! ([`falls_back`]), the order profiles are tried in ([`chain`]), and the next one to try
//! ([`next_profile`]): the first in the chain not yet tried that the caller's key may use and whose
//! account is not out of quota (skipped until its reset time).
//!
//! The request pipeline drives the loop: it tries the routed profile; on a failure before anything was
//! sent to the client it asks [`falls_back`], then [`next_profile`], and tries that one.

use crate::config::Config;

/// Whether a request that failed with `status` and error `code` before anything was sent to the client
/// moves on to the next profile: rate-limited or out-of-quota upstreams and full queues (429), Codex
/// unavailable, not logged in or overloaded (503). Client errors (400–404, 413, …), timeouts and Codex
/// failures (502, 504) do not: another profile would fail the same way or run the work twice.
/// A stream that already sent bytes never falls back.
pub fn falls_back(status: u16, code: Option<&str>, sent_anything: bool) -> bool {
    if sent_anything {
        return false;
    }
    match status {
        429 => true,
        // `shutting_down` would fail on every profile alike.
        503 => code != Some("shutting_down"),
        _ => false,
    }
}

/// The profiles a request routed to `start` may be served by, in order: `start`, then its `fallbacks`,
/// each followed by its own fallbacks (depth first), every profile once. Unknown names are skipped
/// (`check` rejects them).
pub fn chain(config: &Config, start: &str) -> Vec<String> {
    let mut order = Vec::new();
    visit(config, start, &mut order);
    order
}

fn visit(config: &Config, name: &str, order: &mut Vec<String>) {
    if order.iter().any(|seen| seen == name) {
        return;
    }
    let Some(profile) = config.profile(name) else {
        return;
    };
    order.push(name.to_string());
    for next in &profile.fallbacks {
        visit(config, next, order);
    }
}

/// The next profile of `chain` to try: not in `tried`, usable by the caller's key (`may_use`), and not
/// out of quota at `now` (`exhausted_until` gives the reset time of an exhausted account). `None` when
/// no profile is left; the caller then answers with the last failure.
pub fn next_profile<'a>(
    chain: &'a [String],
    tried: &[String],
    may_use: impl Fn(&str) -> bool,
    exhausted_until: impl Fn(&str) -> Option<u64>,
    now: u64,
) -> Option<&'a str> {
    chain
        .iter()
        .map(String::as_str)
        .filter(|name| !tried.iter().any(|tried| tried == name))
        .filter(|name| may_use(name))
        .find(|name| exhausted_until(name).is_none_or(|reset| reset <= now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ServerOverrides};
    use std::path::Path;

    fn config(text: &str) -> Config {
        parse(
            text,
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn only_failures_before_any_byte_that_another_profile_may_not_have_fall_back() {
        assert!(falls_back(429, Some("rate_limit_exceeded"), false));
        assert!(falls_back(429, Some("insufficient_quota"), false));
        assert!(falls_back(429, Some("queue_full"), false));
        assert!(falls_back(503, Some("codex_unavailable"), false));
        assert!(falls_back(503, Some("codex_not_logged_in"), false));
        assert!(falls_back(503, Some("server_overloaded"), false));
        assert!(!falls_back(503, Some("shutting_down"), false));
        assert!(!falls_back(429, Some("rate_limit_exceeded"), true));
        for status in [400, 401, 403, 404, 413, 502, 504] {
            assert!(!falls_back(status, None, false), "{status}");
        }
    }

    #[test]
    fn the_chain_follows_fallbacks_depth_first_once_each() {
        let config = config(
            "[profiles.a]\nfallbacks = [\"b\", \"c\"]\n[profiles.b]\nfallbacks = [\"d\"]\n[profiles.c]\nfallbacks = [\"d\"]\n[profiles.d]\n",
        );
        assert_eq!(chain(&config, "a"), ["a", "b", "d", "c"]);
        assert_eq!(chain(&config, "d"), ["d"]);
        assert_eq!(chain(&config, "c"), ["c", "d"]);
    }

    #[test]
    fn the_next_profile_skips_tried_forbidden_and_exhausted_ones_until_reset() {
        let chain: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let tried = vec!["a".to_string()];
        let may_use = |name: &str| name != "b";
        let exhausted = |name: &str| (name == "c").then_some(2_000);
        assert_eq!(
            next_profile(&chain, &tried, may_use, exhausted, 1_000),
            Some("d")
        );
        // After the reset time the exhausted profile is tried again.
        assert_eq!(
            next_profile(&chain, &tried, may_use, exhausted, 2_000),
            Some("c")
        );
        let all = chain.clone();
        assert_eq!(next_profile(&chain, &all, |_| true, |_| None, 0), None);
        // The routed profile itself is skipped while its account is out of quota.
        assert_eq!(
            next_profile(&chain, &[], |_| true, |n| (n == "a").then_some(9), 1),
            Some("b")
        );
    }
}
