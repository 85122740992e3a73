//! Spare threads: a worker starts the thread of a request's likely successor while the request's own
//! turn runs, so the next request with the same `thread/start` params pays only `turn/start`.
//!
//! Starting a thread is about a quarter of a warm turn: against the mock model, 8.6 of 33 ms from
//! `thread/start` to `turn/completed`; with the thread already started the turn took 24–27 ms
//! (`examples/bench_turn_timeline.rs`). The spare's `thread/start` is sent after the running turn's
//! `turn/start` was answered, so it never delays that turn's start.
//!
//! A spare is keyed by its exact `thread/start` params (the serialized JSON: cwd, model, sandbox,
//! developer instructions, client tools, config), so a request only ever gets a thread identical to the
//! one it would have started. Spares are made for params seen before: after a hit, or after a miss whose
//! params missed recently too; params that differ on every request (a timestamp in the system prompt)
//! cost no spare threads. A worker keeps at most [`MAX_SPARES`] of them, each for at most [`SPARE_TTL`]
//! (then it is unsubscribed and the app-server unloads it); a spare of a process that has since exited
//! is never handed out.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::rpc::Connection;

/// Spare threads one worker keeps at most (each a loaded, empty thread in its app-server).
pub const MAX_SPARES: usize = 4;
/// How long a spare thread waits for a request before it is unloaded. It also bounds how old the
/// thread's view of its cwd (project instructions) can be when a request gets it.
pub const SPARE_TTL: Duration = Duration::from_secs(30);
/// How many recently missed params a worker remembers (as hashes), to make spares only for repeats.
const RECENT_MISSES: usize = 32;
/// Longest wait for a spare's `thread/start`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The spare threads of one worker.
#[derive(Clone, Default)]
pub struct SpareThreads {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    spares: Vec<Spare>,
    recent_misses: VecDeque<u64>,
    next_id: u64,
    /// Spares handed to requests so far.
    used: u64,
}

struct Spare {
    id: u64,
    key: Arc<str>,
    connection: Arc<Connection>,
    thread: oneshot::Receiver<Option<String>>,
}

/// A spare taken for a request: its thread id once its `thread/start` is answered. Dropped unused, it
/// unloads the thread.
pub struct Ticket {
    thread: Option<oneshot::Receiver<Option<String>>>,
    connection: Arc<Connection>,
}

impl Ticket {
    /// The spare's thread id; `None` when its start failed (the request then starts its own thread).
    /// The receiver stays in the ticket until the id is read, so a wait that is given up (the request
    /// was cancelled) still unloads the thread, even one whose id had just arrived.
    pub async fn thread_id(mut self) -> Option<String> {
        let thread = self.thread.as_mut()?.await.ok().flatten();
        self.thread = None;
        thread
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(receiver) = self.thread.take() {
            release(self.connection.clone(), receiver);
        }
    }
}

impl SpareThreads {
    /// Takes the spare thread made for exactly `key` on `connection`'s process, if there is one.
    /// Otherwise notes the miss; the answer says whether to make a spare for `key` after this request
    /// (it missed recently too).
    pub fn take(&self, connection: &Connection, key: &str) -> Result<Ticket, bool> {
        let mut inner = self.inner.lock();
        let index = inner
            .spares
            .iter()
            .position(|spare| &*spare.key == key && std::ptr::eq(&*spare.connection, connection));
        if let Some(index) = index {
            let spare = inner.spares.swap_remove(index);
            inner.used += 1;
            return Ok(Ticket {
                thread: Some(spare.thread),
                connection: spare.connection,
            });
        }
        let hash = hash_of(key);
        if inner.recent_misses.contains(&hash) {
            return Err(true);
        }
        if inner.recent_misses.len() == RECENT_MISSES {
            inner.recent_misses.pop_front();
        }
        inner.recent_misses.push_back(hash);
        Err(false)
    }

    /// Starts a spare thread with `params` (serialized as `key`) on `connection`'s process, unless one
    /// is there already. The oldest spare makes room when the worker has [`MAX_SPARES`].
    pub fn refill(&self, connection: &Arc<Connection>, key: Arc<str>, params: Value) {
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut inner = self.inner.lock();
            inner
                .spares
                .retain(|spare| !spare.connection.closed().is_cancelled());
            if inner
                .spares
                .iter()
                .any(|spare| spare.key == key && Arc::ptr_eq(&spare.connection, connection))
            {
                return;
            }
            if inner.spares.len() >= MAX_SPARES {
                let oldest = inner.spares.remove(0);
                release(oldest.connection, oldest.thread);
            }
            inner.next_id += 1;
            let id = inner.next_id;
            inner.spares.push(Spare {
                id,
                key,
                connection: connection.clone(),
                thread: receiver,
            });
            id
        };
        let spares = self.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            let started = connection
                .request("thread/start", params, START_TIMEOUT)
                .await;
            let thread_id = started
                .ok()
                .and_then(|reply| thread_id_of(&reply).map(str::to_string));
            if let Err(Some(unused)) = sender.send(thread_id) {
                unsubscribe(&connection, unused).await;
            }
            tokio::time::sleep(SPARE_TTL).await;
            spares.expire(id);
        });
    }

    /// Unloads spare `id` if no request took it.
    fn expire(&self, id: u64) {
        let mut inner = self.inner.lock();
        if let Some(index) = inner.spares.iter().position(|spare| spare.id == id) {
            let spare = inner.spares.remove(index);
            release(spare.connection, spare.thread);
        }
    }

    /// (spares held now, spares handed to requests so far).
    pub fn figures(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.spares.len() as u64, inner.used)
    }
}

/// The thread id in a `thread/start` reply.
pub fn thread_id_of(reply: &Value) -> Option<&str> {
    reply.pointer("/thread/id").and_then(Value::as_str)
}

/// Unloads the thread of a spare nobody will use, once its start is answered.
fn release(connection: Arc<Connection>, thread: oneshot::Receiver<Option<String>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        if let Ok(Some(thread_id)) = thread.await {
            unsubscribe(&connection, thread_id).await;
        }
    });
}

async fn unsubscribe(connection: &Connection, thread_id: String) {
    let _ = connection
        .request(
            "thread/unsubscribe",
            json!({"threadId": thread_id}),
            Duration::from_secs(5),
        )
        .await;
}

fn hash_of(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// A connection to a scripted app-server that answers `thread/start` with threads `t1`, `t2`, …
    /// and records the threads it is asked to unsubscribe.
    fn scripted() -> (Arc<Connection>, Arc<Mutex<Vec<String>>>) {
        let (stdin, unread) = tokio::io::duplex(1 << 16);
        let (mut server, stdout) = tokio::io::duplex(1 << 16);
        let unsubscribed = Arc::new(Mutex::new(Vec::new()));
        let seen = unsubscribed.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(unread).lines();
            let mut started = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                let request: Value = serde_json::from_str(&line).unwrap();
                let result = match request["method"].as_str().unwrap() {
                    "thread/start" => {
                        started += 1;
                        json!({"thread": {"id": format!("t{started}")}})
                    }
                    "thread/unsubscribe" => {
                        let thread = request["params"]["threadId"].as_str().unwrap();
                        seen.lock().push(thread.to_string());
                        json!({})
                    }
                    other => panic!("unexpected {other}"),
                };
                let answer = json!({"id": request["id"], "result": result});
                server
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        (Connection::start(stdin, stdout), unsubscribed)
    }

    async fn unsubscribed_soon(list: &Mutex<Vec<String>>, count: usize) -> Vec<String> {
        for _ in 0..200 {
            if list.lock().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        list.lock().clone()
    }

    #[tokio::test]
    async fn spares_are_made_for_repeated_params_and_taken_by_exactly_those() {
        let (connection, unsubscribed) = scripted();
        let spares = SpareThreads::default();
        // A first miss makes no spare; a repeat within the recent misses does.
        assert!(matches!(spares.take(&connection, "A"), Err(false)));
        assert!(matches!(spares.take(&connection, "A"), Err(true)));
        spares.refill(&connection, Arc::from("A"), json!({"p": "A"}));
        spares.refill(&connection, Arc::from("A"), json!({"p": "A"}));
        assert_eq!(spares.figures(), (1, 0), "one spare per params");
        // Other params never get it.
        assert!(matches!(spares.take(&connection, "B"), Err(false)));
        let ticket = spares.take(&connection, "A").ok().unwrap();
        assert_eq!(ticket.thread_id().await.as_deref(), Some("t1"));
        assert_eq!(spares.figures(), (0, 1));
        assert!(unsubscribed.lock().is_empty());
    }

    #[tokio::test]
    async fn spares_of_another_process_are_never_handed_out() {
        let (first, _) = scripted();
        let (second, _) = scripted();
        let spares = SpareThreads::default();
        spares.refill(&first, Arc::from("A"), json!({}));
        assert!(spares.take(&second, "A").is_err());
        assert!(spares.take(&first, "A").is_ok());
    }

    #[tokio::test]
    async fn evicted_and_dropped_spares_are_unloaded() {
        let (connection, unsubscribed) = scripted();
        let spares = SpareThreads::default();
        for key in 0..=MAX_SPARES {
            spares.refill(&connection, Arc::from(key.to_string()), json!({}));
        }
        // The oldest made room for the newest.
        assert_eq!(spares.figures().0, MAX_SPARES as u64);
        assert_eq!(unsubscribed_soon(&unsubscribed, 1).await, vec!["t1"]);
        assert!(spares.take(&connection, "0").is_err());
        // A spare taken and then dropped unused (its request was cancelled) is unloaded too, also when
        // the request gave up while waiting for the id.
        drop(spares.take(&connection, "1").ok().unwrap());
        assert_eq!(unsubscribed_soon(&unsubscribed, 2).await, vec!["t1", "t2"]);
        // On this single-threaded test runtime nothing runs between the refill and the first poll, so
        // the wait is pending at first.
        spares.refill(&connection, Arc::from("late"), json!({}));
        let ticket = spares.take(&connection, "late").ok().unwrap();
        let mut wait = Box::pin(ticket.thread_id());
        assert!(futures_util::poll!(wait.as_mut()).is_pending());
        // The id arrives, but the request has given up before reading it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(wait);
        assert_eq!(unsubscribed_soon(&unsubscribed, 3).await.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn spares_expire_after_their_ttl() {
        let (connection, unsubscribed) = scripted();
        let spares = SpareThreads::default();
        spares.refill(&connection, Arc::from("A"), json!({}));
        tokio::time::sleep(SPARE_TTL - Duration::from_secs(1)).await;
        assert_eq!(spares.figures().0, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(spares.figures().0, 0);
        assert_eq!(unsubscribed_soon(&unsubscribed, 1).await, vec!["t1"]);
    }
}
