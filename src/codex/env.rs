//! The environment of every Codex process, built in one place for both engines ([`ChildEnv::build`]).
//!
//! A model-run command inside Codex can read its whole environment, so secrets of the proxy must not
//! reach it. Whatever `[server] codex_env` says, Codex never sees:
//! - any `CODEX_PROXY_*` variable (the proxy's own key and log filter);
//! - any variable the config file references through `${VAR}` (`Config::env_refs`: they hold keys more
//!   often than not), unless it is named in `pass_env`;
//! - the proxy's `RUST_LOG` and `RUST_BACKTRACE`: Codex's `RUST_LOG` is set from `codex_log`.
//!
//! `codex_env = "inherit"` passes everything else; `"minimal"` passes only [`MINIMAL_ENV`], every `LC_*`
//! and `SSL_CERT_*`, and `pass_env`. Both then add the npm launcher's variables, the profile's `proxy`
//! (as `http_proxy`, `https_proxy`, `HTTP_PROXY`, `HTTPS_PROXY`) and `RUST_LOG`. Commands built with
//! [`ChildEnv::apply`] start from an empty environment, so nothing else leaks in.

use std::ffi::{OsStr, OsString};

use crate::codex::launch::ResolvedCodex;
use crate::config::{CodexEnv, Config, MINIMAL_ENV};

/// The variables the profile's `proxy` setting is given as.
pub const PROXY_VARS: [&str; 4] = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"];

/// Settings that decide a Codex process's environment. Part of a pool's runtime identity: a reload
/// that changes them restarts the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEnv {
    pub mode: CodexEnv,
    pub pass_env: Vec<String>,
    /// Codex's `RUST_LOG`.
    pub codex_log: String,
    /// Variables the config references through `${VAR}`.
    pub env_refs: Vec<String>,
}

impl Default for ChildEnv {
    fn default() -> ChildEnv {
        ChildEnv {
            mode: CodexEnv::Inherit,
            pass_env: Vec::new(),
            codex_log: "warn".to_string(),
            env_refs: Vec::new(),
        }
    }
}

/// Variables that never reach Codex from the proxy's environment.
fn always_removed(name: &str) -> bool {
    name.starts_with("CODEX_PROXY_") || name == "RUST_LOG" || name == "RUST_BACKTRACE"
}

fn in_minimal_set(name: &str) -> bool {
    MINIMAL_ENV.contains(&name) || name.starts_with("LC_") || name.starts_with("SSL_CERT_")
}

impl ChildEnv {
    pub fn from_config(config: &Config) -> ChildEnv {
        ChildEnv {
            mode: config.server.codex_env,
            pass_env: config.server.pass_env.clone(),
            codex_log: config.server.codex_log.clone(),
            env_refs: config.env_refs.clone(),
        }
    }

    /// Whether the proxy's variable `name` is passed on.
    fn passes(&self, name: &str) -> bool {
        if always_removed(name) {
            return false;
        }
        if self.pass_env.iter().any(|pass| pass == name) {
            return true;
        }
        if self.env_refs.iter().any(|referenced| referenced == name) {
            return false;
        }
        match self.mode {
            CodexEnv::Inherit => true,
            CodexEnv::Minimal => in_minimal_set(name),
        }
    }

    /// The complete environment of a Codex process, from the proxy's environment `parent`.
    pub fn build(
        &self,
        parent: impl IntoIterator<Item = (OsString, OsString)>,
        codex: &ResolvedCodex,
        proxy: Option<&str>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = parent
            .into_iter()
            .filter(|(name, _)| name.to_str().is_some_and(|name| self.passes(name)))
            .collect();
        let mut set = |name: &str, value: &OsStr| {
            env.retain(|(existing, _)| existing != name);
            env.push((name.into(), value.to_owned()));
        };
        for (name, value) in &codex.env {
            set(name, OsStr::new(value));
        }
        if let Some(proxy) = proxy {
            for name in PROXY_VARS {
                set(name, OsStr::new(proxy));
            }
        }
        set("RUST_LOG", OsStr::new(&self.codex_log));
        env
    }

    /// Gives `command` exactly the environment of [`ChildEnv::build`] over the proxy's own.
    pub fn apply(
        &self,
        command: &mut tokio::process::Command,
        codex: &ResolvedCodex,
        proxy: Option<&str>,
    ) {
        command
            .env_clear()
            .envs(self.build(std::env::vars_os(), codex, proxy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/bin"),
            ("HOME", "/home/u"),
            ("LC_ALL", "C"),
            ("SSL_CERT_FILE", "/etc/ca.pem"),
            ("CODEX_PROXY_API_KEY", "proxy-key"),
            ("CODEX_PROXY_LOG", "debug"),
            ("RUST_LOG", "trace"),
            ("RUST_BACKTRACE", "1"),
            ("UPSTREAM_KEY", "referenced-secret"),
            ("AWS_SECRET_ACCESS_KEY", "unrelated-secret"),
            ("MY_TOOL_HOME", "/opt/tool"),
            ("HTTPS_PROXY", "http://old:1"),
        ]
        .iter()
        .map(|(name, value)| (OsString::from(name), OsString::from(value)))
        .collect()
    }

    fn codex() -> ResolvedCodex {
        ResolvedCodex {
            configured: "codex".into(),
            program: "/bin/codex".into(),
            env: vec![("CODEX_MANAGED_BY_NPM".into(), "1".into())],
            bypassed_launcher: None,
        }
    }

    fn names(env: &[(OsString, OsString)]) -> Vec<String> {
        let mut names: Vec<String> = env
            .iter()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn value<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
        env.iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_os_str())
    }

    #[test]
    fn inherit_removes_the_proxys_variables_and_referenced_secrets() {
        let settings = ChildEnv {
            env_refs: vec!["UPSTREAM_KEY".into()],
            codex_log: "error".into(),
            ..ChildEnv::default()
        };
        let env = settings.build(parent(), &codex(), Some("http://proxy:3128"));
        assert_eq!(
            names(&env),
            [
                "AWS_SECRET_ACCESS_KEY",
                "CODEX_MANAGED_BY_NPM",
                "HOME",
                "HTTPS_PROXY",
                "HTTP_PROXY",
                "LC_ALL",
                "MY_TOOL_HOME",
                "PATH",
                "RUST_LOG",
                "SSL_CERT_FILE",
                "http_proxy",
                "https_proxy",
            ]
        );
        assert_eq!(value(&env, "RUST_LOG").unwrap(), "error");
        assert_eq!(value(&env, "HTTPS_PROXY").unwrap(), "http://proxy:3128");
    }

    #[test]
    fn minimal_passes_only_the_allow_list_and_pass_env() {
        let settings = ChildEnv {
            mode: CodexEnv::Minimal,
            pass_env: vec!["MY_TOOL_HOME".into(), "CODEX_PROXY_API_KEY".into()],
            env_refs: vec!["UPSTREAM_KEY".into()],
            ..ChildEnv::default()
        };
        let env = settings.build(parent(), &codex(), None);
        assert_eq!(
            names(&env),
            [
                "CODEX_MANAGED_BY_NPM",
                "HOME",
                "LC_ALL",
                "MY_TOOL_HOME",
                "PATH",
                "RUST_LOG",
                "SSL_CERT_FILE",
            ]
        );
        assert_eq!(value(&env, "RUST_LOG").unwrap(), "warn");
    }

    #[test]
    fn pass_env_can_name_a_referenced_variable() {
        let settings = ChildEnv {
            mode: CodexEnv::Minimal,
            pass_env: vec!["UPSTREAM_KEY".into()],
            env_refs: vec!["UPSTREAM_KEY".into()],
            ..ChildEnv::default()
        };
        let env = settings.build(parent(), &codex(), None);
        assert_eq!(value(&env, "UPSTREAM_KEY").unwrap(), "referenced-secret");
    }
}
