//! The `codex-api-proxy` binary: parse the command line, run the command (`daemon::run_command`), or
//! serve in the foreground (`server::serve_foreground`, which sets up its own logging), print any error once as `codex-api-proxy: {err:#}`, and
//! exit with the command's code: 0 success, 1 failure, 64 an invalid config for `check`.

use codex_api_proxy::cli::Cli;
use codex_api_proxy::daemon::Outcome;
use codex_api_proxy::server::serve_foreground;

fn main() {
    let cli = Cli::parse_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("codex-api-proxy: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match codex_api_proxy::daemon::run_command(cli.command).await? {
            Outcome::Exit(code) => Ok(code),
            Outcome::ServeForeground(args) => serve_foreground(&args).await.map(|_| 0),
        }
    });
    // Dropping the runtime ends every task; their guards kill the Codex process groups they own.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match code {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("codex-api-proxy: {err:#}");
            std::process::exit(1);
        }
    }
}
