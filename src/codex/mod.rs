//! Everything specific to the Codex CLI that both engines share: finding and launching the binary
//! (`launch`), shaping the prompt (`prompt`), and reading `codex exec --json` events (`events`).

pub mod events;
pub mod launch;
pub mod prompt;
