//! Serving: build the first snapshot, bind, print the `listening on` line, serve until shutdown.
//!
//! Entry points: [`serve_foreground`] (what `start --foreground` runs) and [`run`], which takes an already
//! bound listener and a shutdown token so tests and the daemon share one code path. Shutdown stops
//! accepting, lets in-flight requests finish for the grace period, then ends what is left; every Codex
//! process group dies with its owner. The usage ledger is opened before serving (a ledger that cannot
//! be opened is logged and left off, never fatal) and flushed last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::StartArgs;
use crate::live::reload::first_snapshot;
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;

/// Logs to stderr at `level` (debug, info, warning, error); `CODEX_PROXY_LOG` overrides with a filter.
pub fn init_tracing(level: &str) {
    let level = match level {
        "warning" => "warn",
        other => other,
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CODEX_PROXY_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,notify=warn"))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `start --foreground`: serve in this process until SIGINT/SIGTERM.
pub async fn serve_foreground(args: &StartArgs) -> anyhow::Result<()> {
    let mut args = args.with_secrets_from_stdin()?;
    let config = args.load_config()?;
    // Reloads expand the file with the same values, whatever happens to this process's environment.
    args.keep_config_env(&config);
    let args = &args;
    init_tracing(&config.server.log_level);
    let host = config.server.host.clone();
    let port = config.server.port;
    for warning in config.warnings() {
        eprintln!("{warning}");
    }
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port} (is another server using the port? pick another with --port)"))?;
    let config_path = config.source.clone();
    let overrides = args.server_overrides().map_err(anyhow::Error::msg)?;
    let snapshot = first_snapshot(config).await;
    let shutdown = CancellationToken::new();
    let usage_db = snapshot.config.server.usage_db.clone();
    let retention_days = snapshot.config.server.usage_retention_days;
    let recorder = tokio::task::spawn_blocking(move || {
        crate::usage::Recorder::start(usage_db.as_deref(), retention_days)
    })
    .await
    .context("the usage ledger's start panicked")?;
    let state = AppState::new(snapshot, config_path, overrides, shutdown.clone())
        .with_config_env(args.config_env.clone())
        .with_usage(recorder);
    let grace = Duration::from_secs(args.grace_seconds.unwrap_or(10));
    spawn_signal_handlers(state.clone(), shutdown.clone());
    run(listener, state, shutdown, grace).await
}

fn spawn_signal_handlers(state: AppState, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
        }
        stop.cancel();
    });
    tokio::spawn(async move {
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            if state.config_path().is_none() {
                tracing::warn!("SIGHUP ignored: the server was started without --config");
                continue;
            }
            let _ = crate::live::reload::reload(&state, "sighup").await;
        }
    });
}

/// Serves `listener` until `shutdown` is cancelled, then drains for at most `grace`.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let address: SocketAddr = listener.local_addr()?;
    let snapshot = state.snapshot();
    let watcher = crate::live::watch::spawn(state.clone());
    println!("listening on http://{address}");
    tracing::info!(
        address = %address,
        profiles = ?snapshot.config.profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        codex = ?snapshot.codex.resolved.as_ref().map(|r| r.program.display().to_string()),
        "codex-api-proxy {} listening", crate::report::VERSION
    );
    drop(snapshot);
    let app = crate::api::router(state.clone());
    let server = tokio::spawn(serve(
        listener,
        app,
        state.client_timeout(),
        shutdown.clone(),
    ));
    shutdown.cancelled().await;
    drop(watcher);
    match tokio::time::timeout(grace, server).await {
        Ok(result) => {
            result.context("server task failed")??;
            tracing::info!("all requests finished; stopped");
        }
        Err(_) => {
            state.abort_streams();
            // Give streams a moment to send their in-band error before the runtime ends.
            tokio::time::sleep(Duration::from_millis(200)).await;
            tracing::warn!(
                "grace period of {} s over: ending the remaining requests",
                grace.as_secs()
            );
        }
    }
    let snapshot = state.snapshot();
    shutdown_pools(&snapshot).await;
    close_usage(state).await;
    Ok(())
}

/// Flushes the usage ledger's queue (bounded by the writer's grace) off the runtime's workers.
async fn close_usage(state: AppState) {
    let closed = tokio::task::spawn_blocking(move || state.usage().close()).await;
    if let Ok(Some(stats)) = closed {
        tracing::info!(
            written = stats.written,
            dropped = stats.dropped,
            "usage ledger closed"
        );
    }
}

/// Accepts HTTP/1.1 connections until `stop` is cancelled, then waits for the open ones to finish (each
/// is told to close after its current request). Unlike `axum::serve`, connections get hyper's timer: a
/// client that has not sent a complete request head within `header_timeout` of connecting (or of its
/// previous response) is disconnected, so slow-loris and silent clients cannot hold sockets forever.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("connection ended: {err}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Ends every pool's Codex processes: app-server workers get stdin closed, then SIGTERM, then SIGKILL
/// (waited for here, at most a few seconds); exec runs die with their tasks.
async fn shutdown_pools(snapshot: &Arc<Snapshot>) {
    for pool in &snapshot.pools {
        pool.shutdown();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline
        && snapshot
            .pools
            .iter()
            .any(|pool| !pool.engine().worker_pids().is_empty())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
