//! The daemon commands: background `start` with a readiness wait, `stop`, `status`, `restart`, `check`
//! and `reload`. (Background management is being built; `check` works.)

use crate::cli::{CheckArgs, Command};

/// Runs a non-foreground command and returns its exit code.
pub async fn run_command(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Check(args) => check(&args),
        _ => anyhow::bail!("background management is not available yet: use `start --foreground`"),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<i32> {
    let overrides = crate::config::ServerOverrides::default();
    match crate::config::load_file(&args.config, &overrides) {
        Ok(config) => {
            println!(
                "{}: OK, {} profile(s)",
                args.config.display(),
                config.profiles.len()
            );
            Ok(0)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(64)
        }
    }
}
