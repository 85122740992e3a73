//! Fake `codex` executables that misbehave in ways the real CLI cannot be made to show, for the security
//! tests (`tests/security_engine.rs`). Each is a `#!/bin/sh` script that answers `--version` like the
//! real CLI, dumps its environment to `<dir>/env-<mode>.txt` (`exec` or `app-server`), and then acts
//! out one [`Behaviour`].
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Bytes of the huge lines the fakes print: far over the proxy's 16 MiB stdout cap.
pub const HUGE_LINE_BYTES: u64 = 200 << 20;

/// What the fake does after dumping its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// `exec`: a normal successful run. `app-server`: answers `initialize`, then reads stdin to EOF
    /// without answering anything else.
    Quiet,
    /// `app-server`: answers `initialize`, then never reads stdin again.
    Deaf,
    /// `exec`: prints a [`HUGE_LINE_BYTES`] line to stderr, then one to stdout. `app-server`: answers
    /// `initialize`, then prints a huge line to stdout when a `thread/start` arrives.
    HugeLines,
    /// `app-server`: answers `initialize`, writes 3 MiB of warning lines to stderr, touches
    /// `<dir>/wrote`, sleeps 10 s, writes [`LAST_WORDS`] to stderr and exits 1. Every later start
    /// writes [`SECOND_START_WORDS`] to stderr and exits 1 without answering.
    ChattyStderr,
}

/// The last stderr line of a [`Behaviour::ChattyStderr`] worker before it exits.
pub const LAST_WORDS: &str = "fatal: the last words of a chatty worker";
/// The stderr line of a [`Behaviour::ChattyStderr`] worker's later starts.
pub const SECOND_START_WORDS: &str = "fatal: a chatty worker cannot start twice";

/// The common head of every fake: `--version` and the environment dump.
const HEAD: &str = r#"#!/bin/sh
here=$(dirname "$0")
if [ "$1" = "--version" ]; then
  echo "codex-cli 0.0.0-fake"
  exit 0
fi
# Written whole, then renamed: a reader never sees a file the shell has created but not filled.
env > "$here/env-$1.$$" && mv "$here/env-$1.$$" "$here/env-$1.txt"
huge() { head -c HUGE_BYTES /dev/zero | tr '\0' x; echo; }
handshake() {
  read -r line
  id=$(echo "$line" | sed 's/.*"id":\([0-9]*\).*/\1/')
  echo "{\"id\":$id,\"result\":{}}"
}
"#;

const SUCCESS: &str = r#"
cat > /dev/null
echo '{"type":"thread.started","thread_id":"fake-thread"}'
echo '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"fine"}}'
echo '{"type":"turn.completed","usage":{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1,"reasoning_output_tokens":0}}'
"#;

fn body(behaviour: Behaviour) -> &'static str {
    match behaviour {
        Behaviour::Quiet => {
            r#"if [ "$1" = "app-server" ]; then handshake; cat > /dev/null; exit 0; fi"#
        }
        Behaviour::Deaf => r#"if [ "$1" = "app-server" ]; then handshake; exec sleep 3600; fi"#,
        Behaviour::ChattyStderr => {
            r#"if [ "$1" = "app-server" ]; then
  if [ -e "$here/started-once" ]; then echo "SECOND_START_WORDS" >&2; exit 1; fi
  : > "$here/started-once"
  handshake
  head -c 3145728 /dev/zero | tr '\0' w | fold -w 99 | sed 's/^/WARN /' >&2
  : > "$here/wrote"
  sleep 10
  echo "LAST_WORDS" >&2
  exit 1
fi"#
        }
        Behaviour::HugeLines => {
            r#"if [ "$1" = "app-server" ]; then
  handshake
  while read -r line; do
    case "$line" in *thread/start*) huge ;; esac
  done
  exit 0
fi
cat > /dev/null
huge >&2
huge
exit 0"#
        }
    }
}

/// Writes the fake as `<dir>/codex` (mode 0755) and returns its path.
pub fn write(dir: &Path, behaviour: Behaviour) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("codex");
    let script = format!(
        "{}{}\n{}",
        HEAD.replace("HUGE_BYTES", &HUGE_LINE_BYTES.to_string()),
        body(behaviour)
            .replace("SECOND_START_WORDS", SECOND_START_WORDS)
            .replace("LAST_WORDS", LAST_WORDS),
        SUCCESS
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The environment a fake run as `mode` (`exec` or `app-server`) dumped, as `NAME=value` lines.
pub fn dumped_env(dir: &Path, mode: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(format!("env-{mode}.txt"))).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// Peak resident memory of process `pid` in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
