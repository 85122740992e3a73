//! Support code shared by the integration tests (`tests/it/`), the benchmarks (`examples/bench_*.rs`)
//! and the soak (`examples/soak.rs`), so that none of them includes another's files by `#[path]`.
//!
//! - [`mock_model`]: a mock of the OpenAI Responses API that the real Codex CLI is pointed at, driven
//!   by `mock:` directives in the prompt.
//! - [`harness`]: what the benchmark and soak programs share: locating the repository, the Codex CLI
//!   and the release proxy, starting the proxy and waiting for `/ready`, config snippets, percentiles,
//!   and per-process figures (memory, open files, CPU time) read from `/proc`.
//! - [`props`]: the property tests' runner, string strategy, TOML quoting and message shortening.
//!
//! It is a dev-only workspace member (`publish = false`) and does not depend on `codex-api-proxy`.

pub mod harness;
pub mod mock_model;
pub mod props;
