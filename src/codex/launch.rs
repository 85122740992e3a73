//! Finding the Codex executable and running it safely.
//!
//! - [`resolve`] turns `codex_bin` into the program to run. When it is the npm launcher
//!   (`@openai/codex/bin/codex.js`), the native binary that launcher would start is run directly, with the
//!   environment the launcher sets: a Node parent costs ~100 ms per spawn and ~44 MB per long-lived process.
//! - [`spawn_in_group`] starts a child in its own process group, and [`GroupKiller`] kills that whole group
//!   when dropped, so no Codex process (or grandchild) outlives the request or pool that owns it.
//!
//! This module knows nothing about Codex's arguments or output; see `engine::exec` and `codex::events`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// `-c`/`--disable` arguments that remove Codex's own tools and its environment, permissions and skills
/// blocks (see `no_tools_config` in `engine/app_server/protocol.rs` for the same
/// settings per thread): a plain model call.
pub const NO_TOOLS_ARGS: &[&str] = &[
    "--disable",
    "shell_tool",
    "--disable",
    "view_image",
    "--disable",
    "multi_agent",
    "--disable",
    "goals",
    "-c",
    "web_search=\"disabled\"",
    "-c",
    "tools.experimental_request_user_input.enabled=false",
    "-c",
    "skills.include_instructions=false",
    "-c",
    "include_permissions_instructions=false",
    "-c",
    "include_environment_context=false",
];

/// The program that actually runs for a configured `codex_bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCodex {
    /// What the configuration said (`codex`, a path, …).
    pub configured: String,
    /// The file that is executed.
    pub program: PathBuf,
    /// Extra environment the npm launcher would have set.
    pub env: Vec<(String, String)>,
    /// The npm launcher that was bypassed, if any.
    pub bypassed_launcher: Option<PathBuf>,
}

/// Why a Codex binary cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct CodexUnavailable(pub String);

/// Locates `codex_bin` (a name looked up on `PATH`, or a path) and applies the npm launcher bypass.
pub fn resolve(codex_bin: &str) -> Result<ResolvedCodex, CodexUnavailable> {
    let found = find_on_path(codex_bin).ok_or_else(|| {
        CodexUnavailable(format!(
            "the Codex executable `{codex_bin}` was not found (install it with `npm install -g @openai/codex`, or set codex_bin / --codex-bin to its path)"
        ))
    })?;
    if !is_executable(&found) {
        return Err(CodexUnavailable(format!(
            "the Codex executable {} is not executable (chmod +x it, or point codex_bin at the right file)",
            found.display()
        )));
    }
    let real = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
    if let Some((native, package_root)) = npm_native_binary(&real) {
        return Ok(ResolvedCodex {
            configured: codex_bin.to_string(),
            program: native,
            env: vec![
                (
                    "CODEX_MANAGED_PACKAGE_ROOT".to_string(),
                    package_root.display().to_string(),
                ),
                ("CODEX_MANAGED_BY_NPM".to_string(), "1".to_string()),
            ],
            bypassed_launcher: Some(real),
        });
    }
    Ok(ResolvedCodex {
        configured: codex_bin.to_string(),
        program: found,
        env: Vec::new(),
        bypassed_launcher: None,
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let path = crate::config::resolve_path(name, None);
        return path.is_file().then_some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The npm platform package and Rust target triple the launcher would pick on this machine.
fn platform_target() -> Option<(&'static str, &'static str)> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some(("codex-linux-x64", "x86_64-unknown-linux-musl")),
        ("linux", "aarch64") => Some(("codex-linux-arm64", "aarch64-unknown-linux-musl")),
        ("macos", "x86_64") => Some(("codex-darwin-x64", "x86_64-apple-darwin")),
        ("macos", "aarch64") => Some(("codex-darwin-arm64", "aarch64-apple-darwin")),
        _ => None,
    }
}

/// If `launcher` is `@openai/codex/bin/codex.js`, the native binary it would spawn and the package root.
/// Mirrors the launcher: `require.resolve("@openai/codex-<platform>/package.json")` from the script's
/// directory (every ancestor's `node_modules`), then the package's own `vendor/` directory.
fn npm_native_binary(launcher: &Path) -> Option<(PathBuf, PathBuf)> {
    if launcher.file_name()? != "codex.js" {
        return None;
    }
    let bin_dir = launcher.parent()?;
    if bin_dir.file_name()? != "bin" {
        return None;
    }
    let package_root = bin_dir.parent()?.to_path_buf();
    let (platform_package, triple) = platform_target()?;
    let relative: PathBuf = ["vendor", triple, "bin", "codex"].iter().collect();
    let candidates = bin_dir
        .ancestors()
        .map(|dir| {
            dir.join("node_modules")
                .join("@openai")
                .join(platform_package)
                .join(&relative)
        })
        .chain(std::iter::once(package_root.join(&relative)));
    for candidate in candidates {
        if is_executable(&candidate) {
            return Some((candidate, package_root));
        }
    }
    None
}

/// Runs `program --version` (with the minimal environment) to prove the binary starts; returns its first
/// output line.
pub async fn probe_version(resolved: &ResolvedCodex) -> Result<String, CodexUnavailable> {
    let mut command = Command::new(&resolved.program);
    // The probe runs before any config is known to it: it gets the minimal environment.
    let minimal = crate::codex::env::ChildEnv {
        mode: crate::config::CodexEnv::Minimal,
        ..Default::default()
    };
    minimal.apply(&mut command, resolved, None);
    command
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(10), command.output())
        .await
        .map_err(|_| {
            CodexUnavailable(format!(
                "{} --version did not answer within 10 s",
                resolved.program.display()
            ))
        })?
        .map_err(|err| {
            CodexUnavailable(format!("cannot run {}: {err}", resolved.program.display()))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(CodexUnavailable(format!(
            "{} --version failed ({}): {}",
            resolved.program.display(),
            output.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Kills a whole process group when dropped (SIGKILL). Disarm it once the group is known to be gone.
#[derive(Debug)]
pub struct GroupKiller {
    pgid: Option<i32>,
}

impl GroupKiller {
    pub fn new(pgid: i32) -> GroupKiller {
        GroupKiller { pgid: Some(pgid) }
    }

    /// Sends `signal` to the group now (the guard stays armed).
    pub fn signal(&self, signal: i32) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, signal);
        }
    }

    /// Kills the group now.
    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to every process of group `pgid`. Errors (the group is gone) are ignored.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: killpg only sends a signal; an invalid or finished group just returns ESRCH.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// Spawns `command` as the leader of a new process group, with piped stdin and stdout and the given
/// `stderr`, and returns the child plus the guard that kills its group.
pub fn spawn_in_group(
    command: &mut Command,
    stderr: Stdio,
) -> std::io::Result<(Child, GroupKiller)> {
    command
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    let child = command.spawn()?;
    let pid = child.id().map(|pid| pid as i32).unwrap_or(0);
    Ok((child, GroupKiller::new(pid)))
}

/// A bounded tail of a child's stderr, kept for error messages.
#[derive(Debug, Default, Clone)]
pub struct StderrTail {
    lines: std::collections::VecDeque<String>,
}

impl StderrTail {
    const MAX_LINES: usize = 40;

    pub fn push(&mut self, line: &str) {
        let clean = strip_ansi(line);
        if clean.trim().is_empty() {
            return;
        }
        if self.lines.len() == Self::MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(clean);
    }

    pub fn text(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// The last meaningful line, without harmless noise (e.g. the /tmp PATH-alias warning).
    pub fn last_meaningful(&self) -> Option<String> {
        self.lines
            .iter()
            .rev()
            .find(|line| {
                !line.contains("could not create PATH aliases")
                    && !line.contains("could not find bubblewrap")
                    && !line.starts_with("Reading prompt from stdin")
            })
            .cloned()
    }
}

/// Removes ANSI colour escapes from a line of tracing output.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for next in chars.by_ref() {
                    if next.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m x"),
            "2026 ERROR x"
        );
    }

    #[test]
    fn missing_binary_says_how_to_install() {
        let err = resolve("definitely-not-a-codex-binary-xyz").unwrap_err();
        assert!(err.0.contains("npm install -g @openai/codex"), "{err}");
    }

    #[test]
    fn npm_layout_is_bypassed() {
        let Some((platform_package, triple)) = platform_target() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("node_modules").join("@openai");
        let launcher = modules.join("codex").join("bin").join("codex.js");
        std::fs::create_dir_all(launcher.parent().unwrap()).unwrap();
        std::fs::write(&launcher, "#!/usr/bin/env node\n").unwrap();
        let native = modules
            .join(platform_package)
            .join("vendor")
            .join(triple)
            .join("bin")
            .join("codex");
        std::fs::create_dir_all(native.parent().unwrap()).unwrap();
        std::fs::write(&native, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for file in [&launcher, &native] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let link = dir.path().join("codex");
        std::os::unix::fs::symlink(&launcher, &link).unwrap();
        let resolved = resolve(link.to_str().unwrap()).unwrap();
        assert_eq!(resolved.program, std::fs::canonicalize(&native).unwrap());
        assert!(resolved.bypassed_launcher.is_some());
        assert!(resolved
            .env
            .iter()
            .any(|(key, value)| key == "CODEX_MANAGED_BY_NPM" && value == "1"));
    }
}
