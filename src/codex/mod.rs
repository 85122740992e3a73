//! Everything specific to the Codex CLI that both engines share: finding and launching the binary
//! (`launch`), the child's environment (`env`), reading its output with bounded lines (`lines`), shaping
//! the prompt (`prompt`), reading `codex exec --json` events (`events`), and, for app-server workers, the
//! one certificate file (`trust`) and the stderr file (`stderr_file`).

pub mod env;
pub mod events;
pub mod launch;
pub mod lines;
pub mod prompt;
pub mod stderr_file;
pub mod trust;
