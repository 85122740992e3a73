//! Shared support code for the integration tests: the mock Responses API server (`mock_model`,
//! re-exported from the dev-only `proxy-test-support` crate, which the benchmarks use too), the
//! proxy launcher (`app`), fake Codex scripts (`fake_codex`), complete HTTP answers from reqwest or a
//! raw socket (`http`), TOML quoting (`toml_text`), and lookup of the real Codex CLI binaries installed
//! by `npm ci` in the repository root.
//!
//! `tests/it/main.rs` declares it once; a suite module brings it in with `use crate::support;`.
#![allow(dead_code)]

pub mod app;
pub mod fake_codex;
pub mod fake_hostile;
pub mod http;
pub mod toml_text;

pub use proxy_test_support::mock_model;

use std::path::{Path, PathBuf};

const NPM_HINT: &str = "run `npm ci` in the repository root (it installs the pinned @openai/codex \
     package into node_modules/), or set CODEX_BIN to a codex executable";

/// The Codex CLI launcher: `$CODEX_BIN` if set, else
/// `<CARGO_MANIFEST_DIR>/node_modules/.bin/codex` (the npm Node wrapper).
///
/// Panics with a hint to run `npm ci` if neither exists.
pub fn codex_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CODEX_BIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return path;
        }
        panic!("CODEX_BIN={} does not exist; {NPM_HINT}", path.display());
    }
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/codex");
    if launcher.exists() {
        return launcher;
    }
    panic!(
        "the Codex CLI was not found at {}; {NPM_HINT}",
        launcher.display()
    );
}

/// The native (Rust) Codex binary that the npm launcher would spawn.
///
/// If `$CODEX_BIN` points at a native executable (not a Node script) it is
/// used as is. Otherwise the binary is resolved from the npm package layout
/// next to the launcher: `node_modules/@openai/codex-<platform>/vendor/<target
/// triple>/bin/codex` (also looked up nested under `@openai/codex/` and in the
/// older `@openai/codex/vendor/` layout). Calling it directly saves the ~100 ms
/// Node start-up per spawn.
pub fn native_codex_bin() -> PathBuf {
    let launcher = codex_bin();
    if !is_node_script(&launcher) {
        return launcher;
    }
    let (package, triple, exe) = platform_package();
    // node_modules/.bin/codex -> ../@openai/codex/bin/codex.js
    let script = std::fs::canonicalize(&launcher).unwrap_or_else(|_| launcher.clone());
    let codex_pkg = script
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let node_modules = codex_pkg
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let candidates = [
        node_modules.join(package).join("vendor"),
        codex_pkg.join("node_modules").join(package).join("vendor"),
        codex_pkg.join("vendor"),
    ];
    for vendor in &candidates {
        let bin = vendor.join(triple).join("bin").join(exe);
        if bin.is_file() {
            return bin;
        }
        let legacy = vendor.join(triple).join("codex").join(exe);
        if legacy.is_file() {
            return legacy;
        }
    }
    panic!(
        "the native Codex binary ({package}, {triple}) was not found under {}; {NPM_HINT}",
        node_modules.display()
    );
}

fn is_node_script(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 128];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    head.starts_with(b"#!") && head.windows(4).any(|w| w == b"node")
}

/// (npm platform package, Rust target triple, executable name), mirroring
/// `@openai/codex/bin/codex.js`.
fn platform_package() -> (&'static str, &'static str, &'static str) {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => (
            "@openai/codex-linux-x64",
            "x86_64-unknown-linux-musl",
            "codex",
        ),
        ("linux", "aarch64") => (
            "@openai/codex-linux-arm64",
            "aarch64-unknown-linux-musl",
            "codex",
        ),
        ("macos", "x86_64") => ("@openai/codex-darwin-x64", "x86_64-apple-darwin", "codex"),
        ("macos", "aarch64") => (
            "@openai/codex-darwin-arm64",
            "aarch64-apple-darwin",
            "codex",
        ),
        ("windows", "x86_64") => (
            "@openai/codex-win32-x64",
            "x86_64-pc-windows-msvc",
            "codex.exe",
        ),
        ("windows", "aarch64") => (
            "@openai/codex-win32-arm64",
            "aarch64-pc-windows-msvc",
            "codex.exe",
        ),
        (os, arch) => panic!("no Codex npm package for {os}/{arch}"),
    }
}

const PYTHON_HINT: &str = "run ./scripts/test.sh once (it creates the venv target/py and installs \
     tests/python/requirements.txt), or: python3 -m venv target/py && target/py/bin/pip install -r \
     tests/python/requirements.txt";

/// The Python of the test venv (`target/py`), which holds the pinned client libraries of
/// `tests/python/requirements.txt`. Panics with the install command when it is missing.
pub fn python_bin() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: {PYTHON_HINT}",
        python.display()
    );
    python
}

/// Runs `tests/python/<script>` with the venv's Python and `env`, failing the test (with its output)
/// unless it exits 0 within `timeout`. Returns its stdout.
pub async fn run_python(
    script: &str,
    env: &[(&str, String)],
    timeout: std::time::Duration,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut command = tokio::process::Command::new(python_bin());
    command
        .arg(&path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {timeout:?}"))
        .unwrap_or_else(|err| panic!("could not run {script}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
