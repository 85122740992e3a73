//! Fake `codex` executables for the faults the real Codex CLI cannot be made to show (garbage on stdout,
//! a crash in the middle of its event stream, a hang before any output).
//!
//! [`write`] puts an executable `#!/bin/sh` script into a test directory. Like the real CLI it answers
//! `--version` (with [`FAKE_VERSION`]; the proxy probes it at start and reports it in `/ready`) and, for
//! `exec`, reads the whole prompt from stdin first. Then it looks for a `fake:` directive in the prompt:
//!
//! | directive | behaviour |
//! |---|---|
//! | `fake:garbage` | prints lines that are not JSON events, then exits 0 |
//! | `fake:crash` | prints `thread.started` and `turn.started`, writes [`CRASH_MESSAGE`] to stderr, exits 3 |
//! | `fake:hang` | prints nothing and sleeps (in a child process) until it is killed |
//! | (none) | prints a well-formed successful run: an `agent_message` [`FAKE_REPLY`] and `turn.completed` |
//!
//! Every invocation appends its pid to `fake-codex.pids` next to the script, so a test can tell how
//! often it ran.
//!
//! [`write_instant`] puts a second, simpler fake into a test directory for the hostile-input tests: no
//! directives, it answers every run at once with [`INSTANT_REPLY`] and records where and how it ran.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// What the fake answers to `--version`.
pub const FAKE_VERSION: &str = "codex-cli 0.0.0-fake";
/// The final message of a successful fake run.
pub const FAKE_REPLY: &str = "Hello from the fake codex.";
/// What a crashing fake writes to stderr before exiting 3.
pub const CRASH_MESSAGE: &str = "fatal: the fake codex crashed mid-stream";
/// The first non-JSON line a `fake:garbage` run prints.
pub const GARBAGE_LINE: &str = "this is not a JSON event";

/// Writes the fake as `<dir>/<name>` (mode 0755) and returns its path.
pub fn write(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let script = format!(
        r#"#!/bin/sh
# A fake `codex` for fault tests (see tests/it/support/fake_codex.rs).
here=$(dirname "$0")
echo "$$" >> "$here/fake-codex.pids"
if [ "$1" = "--version" ]; then
  echo "{FAKE_VERSION}"
  exit 0
fi
prompt=$(cat)
case "$prompt" in
  *fake:garbage*)
    echo "{GARBAGE_LINE}"
    echo "<html>502 Bad Gateway</html>"
    echo "{{not json either"
    exit 0
    ;;
  *fake:crash*)
    echo '{{"type":"thread.started","thread_id":"fake-thread"}}'
    echo '{{"type":"turn.started"}}'
    echo "{CRASH_MESSAGE}" >&2
    exit 3
    ;;
  *fake:hang*)
    sleep 60
    exit 0
    ;;
esac
echo '{{"type":"thread.started","thread_id":"fake-thread"}}'
echo '{{"type":"turn.started"}}'
echo '{{"type":"item.completed","item":{{"id":"item_0","type":"agent_message","text":"{FAKE_REPLY}"}}}}'
echo '{{"type":"turn.completed","usage":{{"input_tokens":7,"cached_input_tokens":0,"output_tokens":5,"reasoning_output_tokens":0}}}}'
exit 0
"#
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// How many times the fake in `dir` was started (including `--version` probes).
pub fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("fake-codex.pids"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// What the instant fake ([`write_instant`]) answers.
pub const INSTANT_REPLY: &str = "ok";
/// Where the instant fake records its physical working directory (`pwd -P`), next to the script.
pub const INSTANT_CWD_FILE: &str = "fake-codex.cwd";
/// Where the instant fake records its arguments (one a line) and then its environment (`env`).
pub const INSTANT_INVOCATION_FILE: &str = "fake-codex.invocation";

/// Writes the instant fake `codex` as `<dir>/fake-codex` (mode 0755) and returns its path. It answers
/// `--version`, reads the whole prompt, records its physical working directory
/// ([`INSTANT_CWD_FILE`]) and its arguments and environment ([`INSTANT_INVOCATION_FILE`]), then prints
/// one successful exec run whose answer is [`INSTANT_REPLY`] and whose usage is 1 input and 1 output
/// token.
pub fn write_instant(dir: &Path) -> PathBuf {
    let path = dir.join("fake-codex");
    let script = format!(
        r#"#!/bin/sh
if [ "$1" = "--version" ]; then
  echo "{FAKE_VERSION}"
  exit 0
fi
here=$(dirname "$0")
cat > /dev/null
pwd -P > "$here/{INSTANT_CWD_FILE}"
{{ for arg in "$@"; do printf '%s\n' "$arg"; done; env; }} > "$here/{INSTANT_INVOCATION_FILE}"
echo '{{"type":"thread.started","thread_id":"t"}}'
echo '{{"type":"turn.started"}}'
echo '{{"type":"item.completed","item":{{"id":"item_0","type":"agent_message","text":"{INSTANT_REPLY}"}}}}'
echo '{{"type":"turn.completed","usage":{{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1,"reasoning_output_tokens":0}}}}'
exit 0
"#
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
