//! The integration tests, built as one test binary (`it`) so that `support/` compiles once.
//!
//! Each module is one end-to-end suite against the real proxy binary; `support/` holds what they share
//! (the mock model, the proxy launcher, fake Codex scripts, raw HTTP and TOML helpers). A suite file
//! brings the support code in with `use crate::support;` and names it `support::…`. Run one suite with
//! `cargo test --test it chat::`, one test with its full path (`cargo test --test it chat::plain_`).

mod support;

mod account;
mod app_server;
mod chat;
mod daemon;
mod dashboard;
mod deploy;
mod errors;
mod fallback;
mod faults;
mod hostile;
mod keys;
mod messages;
mod mock_model;
mod prometheus;
mod reload;
mod responses;
mod rich;
mod scale_out;
mod sdk;
mod security_daemon;
mod security_engine;
mod security_http;
mod tools;
mod usage;
