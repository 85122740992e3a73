//! codex-api-proxy: an OpenAI-compatible HTTP proxy that answers chat completions by driving the local
//! Codex CLI, routed by named profiles from a live-reloaded TOML file.
//!
//! Layout (see ARCHITECTURE.md for the life of a request and the invariants):
//! - `cli`, `daemon`, `server`: the command line, the background process, serving.
//! - `config`, `routing`: what the file says (pure), model → profile.
//! - `live`: the published snapshot, how it is rebuilt and replaced, and the file watcher.
//! - `pool`, `engine`, `codex`, `cwd`: admission, the Codex engines, launching Codex and shaping its input.
//! - `api`, `metrics`: the HTTP surface and its counters.

pub mod api;
pub mod cli;
pub mod codex;
pub mod config;
pub mod cwd;
pub mod daemon;
pub mod engine;
pub mod live;
pub mod metrics;
pub mod pool;
pub mod report;
pub mod routing;
pub mod server;
pub mod turn;
