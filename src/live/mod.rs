//! The running configuration: the published [`Snapshot`] behind [`AppState`], how a new one is built
//! from a validated config ([`snapshot`]), how it replaces the old one ([`reload`]) and what notices a
//! changed file ([`watch`]).
//!
//! `config` only turns text into a validated `Config`; everything here has state, tasks or processes.

pub mod reload;
pub mod snapshot;
pub mod state;
pub mod watch;

pub use reload::{reload, ReloadError};
pub use snapshot::{ChangeSummary, CodexStatus, Route, Snapshot};
pub use state::{AppState, ReloadStatus, StartupServer};
