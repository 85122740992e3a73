//! Kept threads: the Responses API's `store` and `previous_response_id` done the Codex way. A turn
//! whose request asked to be kept stays on its loaded thread after its answer, registered here under
//! the request's id, for the profile's `response_ttl_seconds`; a later request naming that id
//! ([`crate::turn::ThreadKeeping::continues`]) is handed to the waiting turn, which starts a new turn on
//! the same thread (no replay, so the model's prompt cache stays warm).
//!
//! The registry is process-wide (ids are unique request ids) so the API can answer 404 for an unknown
//! id before admission and end a kept thread on `DELETE`. At most [`MAX_KEPT`] threads are kept; keeping
//! one more ends the oldest. Continuation is per process: another instance does not know the id.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::engine::{Job, TurnEvent};

/// Threads kept at once in this process.
pub const MAX_KEPT: usize = 256;

/// A request that continues a kept thread, handed to the turn that keeps it.
pub struct Continuation {
    pub job: Job,
    pub events: mpsc::Sender<TurnEvent>,
    pub cancel: CancellationToken,
    pub permit: Box<dyn Send + Sync>,
}

struct Entry {
    profile: String,
    /// Order of keeping, to end the oldest first.
    generation: u64,
    continuation: oneshot::Sender<Continuation>,
    /// Cancelled to end the kept thread (`DELETE`, eviction).
    ended: CancellationToken,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<String, Entry>,
    next_generation: u64,
}

/// A plain mutex: held only for map operations, never across an await.
static KEPT: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a kept turn waits on: the continuation, and the token that ends it early.
pub struct Kept {
    pub continuation: oneshot::Receiver<Continuation>,
    pub ended: CancellationToken,
    pub generation: u64,
}

/// Keeps the thread of request `id` of `profile`; ends the oldest kept thread when [`MAX_KEPT`] are kept.
pub fn keep(id: &str, profile: &str) -> Kept {
    let (sender, receiver) = oneshot::channel();
    let ended = CancellationToken::new();
    let mut registry = registry();
    if registry.entries.len() >= MAX_KEPT {
        let oldest = registry
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.generation)
            .map(|(id, _)| id.clone());
        if let Some(entry) = oldest.and_then(|id| registry.entries.remove(&id)) {
            entry.ended.cancel();
        }
    }
    let generation = registry.next_generation;
    registry.next_generation += 1;
    registry.entries.insert(
        id.to_string(),
        Entry {
            profile: profile.to_string(),
            generation,
            continuation: sender,
            ended: ended.clone(),
        },
    );
    Kept {
        continuation: receiver,
        ended,
        generation,
    }
}

/// Whether the thread of request `id` is kept.
pub fn contains(id: &str) -> bool {
    registry().entries.contains_key(id)
}

/// Takes the kept thread of request `id` for a continuation on `profile`. `Err` says why not: unknown
/// or expired, or kept by another profile (then it stays kept).
pub fn take(id: &str, profile: &str) -> Result<oneshot::Sender<Continuation>, String> {
    let mut registry = registry();
    match registry.entries.get(id) {
        None => Err(format!(
            "the response '{id}' is not kept (unknown or expired)"
        )),
        Some(entry) if entry.profile != profile => Err(format!(
            "the response '{id}' was made by model `{}`; continue it with that model",
            entry.profile
        )),
        Some(_) => Ok(registry
            .entries
            .remove(id)
            .expect("the entry was just found")
            .continuation),
    }
}

/// Ends the kept thread of request `id` (`DELETE`); whether it was kept.
pub fn end(id: &str) -> bool {
    match registry().entries.remove(id) {
        Some(entry) => {
            entry.ended.cancel();
            true
        }
        None => false,
    }
}

/// Forgets request `id` after its kept turn stopped waiting (expired, worker gone), unless the entry is
/// a newer one.
pub fn forget(id: &str, generation: u64) {
    let mut registry = registry();
    if registry
        .entries
        .get(id)
        .is_some_and(|entry| entry.generation == generation)
    {
        registry.entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_thread_is_taken_once_by_its_profile() {
        let kept = keep("kept-test-1", "fast");
        assert!(contains("kept-test-1"));
        assert!(take("kept-test-1", "other").is_err());
        assert!(contains("kept-test-1"));
        assert!(take("kept-test-1", "fast").is_ok());
        assert!(!contains("kept-test-1"));
        assert!(take("kept-test-1", "fast").is_err());
        drop(kept);
        let kept = keep("kept-test-2", "fast");
        assert!(end("kept-test-2"));
        assert!(kept.ended.is_cancelled());
        let again = keep("kept-test-3", "fast");
        forget("kept-test-3", again.generation + 1);
        assert!(contains("kept-test-3"));
        forget("kept-test-3", again.generation);
        assert!(!contains("kept-test-3"));
    }
}
