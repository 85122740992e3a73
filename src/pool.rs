//! A profile's pool: admission (at most `max_concurrency` runs, a bounded queue with a timeout, retiring)
//! in front of the profile's [`Engine`], which does the dispatch. One pool per distinct set of runtime settings; a reload that leaves a
//! profile's settings unchanged keeps its pool, so queues, counters and warm workers carry over.
//!
//! The pool never touches HTTP. A [`Permit`] is moved into the engine's run and released when the Codex
//! work has really ended (process exited, turn finished), not when the response was sent.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Profile;
use crate::engine::{Engine, Job, Readiness, RunHandle};

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// Why admission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("the `{profile}` profile's queue is full ({size} requests waiting); retry later")]
    QueueFull { profile: String, size: usize },
    #[error(
        "no Codex slot of the `{profile}` profile became free within {seconds} s; retry later"
    )]
    QueueTimeout { profile: String, seconds: u64 },
    #[error("the `{profile}` profile was removed or replaced while the request waited; retry")]
    Retired { profile: String },
}

/// Admission state and engine of one profile's runtime settings.
pub struct Pool {
    /// Identity shown in `/metrics`, so a reload can be seen to keep or replace a pool.
    pub id: u64,
    pub profile: Arc<Profile>,
    /// One permit per allowed simultaneous Codex run.
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot (bounded by `max_queue_size`).
    queued: AtomicUsize,
    /// Runs holding a slot.
    running: Arc<AtomicUsize>,
    /// Set when a reload replaced or removed this pool: it takes no new requests.
    retired: AtomicBool,
    /// Runs admitted jobs (shared with the task that stops its workers after retirement).
    engine: Arc<Engine>,
}

/// A slot of a pool; releases it when dropped.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    running: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the queue count when a waiting request leaves the queue for any reason.
struct QueuedGuard<'a>(&'a AtomicUsize);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// Creates the pool around `engine` (built from the same profile; an app-server engine has already
    /// started its workers).
    pub fn new(profile: Arc<Profile>, engine: Engine) -> Arc<Pool> {
        Arc::new(Pool {
            engine: Arc::new(engine),
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            slots: Arc::new(Semaphore::new(profile.runtime.max_concurrency)),
            profile,
            queued: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            retired: AtomicBool::new(false),
        })
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Stops taking new requests; runs already admitted finish on this pool. An app-server pool stops
    /// its workers once the last run is done (or after `timeout_seconds`).
    pub fn retire(&self) {
        if self.retired.swap(true, Ordering::Relaxed) {
            return;
        }
        if self.engine.has_workers() {
            let engine = self.engine.clone();
            let running = self.running.clone();
            let limit = self.profile.runtime.timeout + Duration::from_secs(1);
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                while running.load(Ordering::Relaxed) > 0 && started.elapsed() < limit {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                engine.shutdown();
            });
        }
    }

    /// Stops the pool's processes now (server shutdown).
    pub fn shutdown(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.engine.shutdown();
    }

    /// Whether the pool's engine can serve (for `/ready` and 503s).
    pub fn readiness(&self) -> Readiness {
        self.engine.readiness()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Waits for a slot: immediately if one is free, else in the bounded queue for at most
    /// `queue_timeout`.
    pub async fn admit(&self) -> Result<Permit, AdmitError> {
        let profile = &self.profile;
        if self.is_retired() {
            return Err(AdmitError::Retired {
                profile: profile.name.clone(),
            });
        }
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let waiting = self.queued.fetch_add(1, Ordering::Relaxed);
                let _queued = QueuedGuard(&self.queued);
                if waiting >= profile.runtime.max_queue_size {
                    return Err(AdmitError::QueueFull {
                        profile: profile.name.clone(),
                        size: profile.runtime.max_queue_size,
                    });
                }
                match tokio::time::timeout(
                    profile.runtime.queue_timeout,
                    self.slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) | Err(_) => {
                        return Err(AdmitError::QueueTimeout {
                            profile: profile.name.clone(),
                            seconds: profile.runtime.queue_timeout.as_secs(),
                        })
                    }
                }
            }
        };
        self.running.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            _slot: slot,
            running: self.running.clone(),
        })
    }

    /// Starts the engine on an admitted job.
    pub fn start(&self, job: Job, permit: Permit) -> RunHandle {
        self.engine.start(job, permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codex::env::ChildEnv;
    use crate::codex::launch::CodexUnavailable;
    use crate::config::{parse, ServerOverrides};
    use std::path::Path;

    fn pool(text: &str) -> Arc<Pool> {
        let config = parse(
            text,
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap();
        let profile = config.profiles[0].clone();
        let engine = Engine::new(
            profile.clone(),
            Err(CodexUnavailable("unused".into())),
            Arc::new(ChildEnv::from_config(&config)),
        );
        Pool::new(profile, engine)
    }

    #[tokio::test(start_paused = true)]
    async fn queue_is_bounded_and_times_out() {
        let pool = pool(
            "[profiles.a]\nmax_concurrency = 1\nmax_queue_size = 1\nqueue_timeout_seconds = 5\n",
        );
        let first = pool.admit().await.unwrap();
        assert_eq!(pool.running(), 1);

        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.admit().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(pool.queued(), 1);
        // The queue holds one: the next request is refused at once.
        assert!(matches!(
            pool.admit().await,
            Err(AdmitError::QueueFull { .. })
        ));
        // The waiter gives up after the queue timeout.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(
            waiter.await.unwrap(),
            Err(AdmitError::QueueTimeout { .. })
        ));
        assert_eq!(pool.queued(), 0);
        drop(first);
        assert_eq!(pool.running(), 0);
        assert!(pool.admit().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_admits_the_waiter() {
        let pool = pool("[profiles.a]\nmax_concurrency = 1\n");
        let first = pool.admit().await.unwrap();
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.admit().await.is_ok() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_retired_pool_admits_nothing() {
        let pool = pool("[profiles.a]\n");
        pool.retire();
        assert!(matches!(
            pool.admit().await,
            Err(AdmitError::Retired { .. })
        ));
    }
}
