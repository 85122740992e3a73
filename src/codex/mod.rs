//! Everything specific to the Codex CLI that both engines share: finding and launching the binary
//! (`launch`), the child's environment (`env`), reading its output with bounded lines (`lines`), shaping
//! the prompt (`prompt`), reading `codex exec --json` events (`events`), and the one certificate file of
//! app-server workers (`trust`).

pub mod env;
pub mod events;
pub mod launch;
pub mod lines;
pub mod prompt;
pub mod trust;
