//! The `response` objects of kept responses, for `GET /v1/responses/{id}`. A response is here only
//! while the app-server engine keeps its thread ([`crate::engine::app_server::kept`]); entries whose
//! thread ended are dropped whenever another is added, and a lookup checks the thread first.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use serde_json::Value;

use crate::engine::app_server::kept;

/// A kept response: the profile that made it (who may read it) and its final `response` object.
#[derive(Clone)]
pub struct Stored {
    pub profile: String,
    pub response: Value,
}

/// Request id → its kept response. A plain mutex: map operations only, never across an await.
static RESPONSES: LazyLock<Mutex<HashMap<String, Stored>>> = LazyLock::new(Mutex::default);

fn responses() -> std::sync::MutexGuard<'static, HashMap<String, Stored>> {
    RESPONSES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps the final `response` of request `request_id` if its thread is kept.
pub fn remember(request_id: &str, profile: &str, response: Value) {
    if !kept::contains(request_id) {
        return;
    }
    let mut responses = responses();
    responses.retain(|id, _| kept::contains(id));
    let stored = Stored {
        profile: profile.to_string(),
        response,
    };
    responses.insert(request_id.to_string(), stored);
}

/// The `response` of request `request_id` while its thread is kept.
pub fn get(request_id: &str) -> Option<Stored> {
    if !kept::contains(request_id) {
        responses().remove(request_id);
        return None;
    }
    responses().get(request_id).cloned()
}

/// Ends the kept thread of request `request_id` and forgets its response.
pub fn delete(request_id: &str) {
    responses().remove(request_id);
    kept::end(request_id);
}
