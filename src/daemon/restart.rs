//! `restart`: the flags given now merged over the saved start's settings (and files), validated
//! *before* anything is stopped, then `stop` and `start` under one management lock — or, with
//! `--foreground`, the server run in this process once the old one is gone.
//!
//! An invalid result leaves the running server alone. It owns no stopping or starting logic of its
//! own: that is `stop::stop_locked` and `start::start_locked`.

use anyhow::Context;

use crate::cli::StartArgs;

use super::files::{lock, DaemonFiles, DaemonState};
use super::start::start_locked;
use super::stop::stop_locked;

pub(super) async fn run(args: StartArgs) -> anyhow::Result<super::Outcome> {
    let state_path = DaemonFiles::new(&args.files).state;
    let saved = DaemonState::load(&state_path)?;
    let files = DaemonFiles::merged(&args.files, saved.as_ref());
    let mut merged = match &saved {
        Some(saved) => args.merged_over(saved.settings.clone()),
        None => {
            println!(
                "no saved settings at {}: starting with the flags given",
                state_path.display()
            );
            args.clone().into_settings()
        }
    };
    // An invalid result must not take the running server down.
    merged.resolve_for_daemon().map_err(anyhow::Error::msg)?;
    merged.load_config().context(
        "not restarting: the new settings are invalid (the running server was left alone)",
    )?;
    let lock_guard = lock(&files).await?;
    stop_locked(&files, saved.as_ref(), None).await?;
    if args.foreground {
        drop(lock_guard);
        let serve = StartArgs {
            settings: merged,
            from_env: Default::default(),
            ..args
        };
        return Ok(super::Outcome::ServeForeground(Box::new(serve)));
    }
    start_locked(merged, &files).await.map(super::Outcome::Exit)
}
