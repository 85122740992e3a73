//! Forwarding file: `examples/*.rs` include the mock model by this path (`#[path]`). The mock model lives
//! in `tests/it/support/mock_model.rs`; this file can go once the examples point there.

#[path = "../it/support/mock_model.rs"]
mod inner;

pub use inner::*;
