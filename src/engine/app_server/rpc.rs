//! JSON-RPC over one app-server process's stdio: numbered requests with a pending map, notifications
//! routed to per-thread channels by `threadId`, and server-initiated requests answered at once with a
//! refusal. A pending id is inserted *before* the request is written; on EOF every pending request fails
//! and every thread channel closes, so no caller waits on a dead process. Non-JSON lines are skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::protocol::refusal;

/// A JSON-RPC error answer, or the connection closing under a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("app-server error {code}: {message}")]
    Remote { code: i64, message: String },
    #[error("the app-server process exited")]
    Closed,
    #[error("the app-server did not answer {method} within {seconds} s")]
    Timeout { method: String, seconds: u64 },
}

/// JSON-RPC code of "server overloaded; retry later".
pub const OVERLOADED: i64 = -32001;

type Pending = HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>;

/// One live connection to an app-server process.
pub struct Connection {
    /// Writes are serialised: one line at a time.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    next_id: AtomicU64,
    /// Requests waiting for their answer, by id.
    pending: Mutex<Pending>,
    /// Notification channels of the threads in flight, by thread id.
    threads: Mutex<HashMap<String, mpsc::UnboundedSender<(String, Value)>>>,
    /// Cancelled when stdout reaches EOF (the process is gone or going).
    closed: CancellationToken,
}

impl Connection {
    /// Starts the reader task over `stdout` and returns the connection.
    pub fn start(stdin: ChildStdin, stdout: ChildStdout) -> Arc<Connection> {
        let connection = Arc::new(Connection {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            threads: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
        });
        let reader = connection.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                reader.dispatch(&line).await;
            }
            reader.close();
        });
        connection
    }

    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Fails everything waiting on this connection.
    fn close(&self) {
        self.closed.cancel();
        let pending: Pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, waiter) in pending {
            let _ = waiter.send(Err(RpcError::Closed));
        }
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    async fn dispatch(&self, line: &str) {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let method = message.get("method").and_then(Value::as_str);
        let id = message.get("id").filter(|id| !id.is_null());
        match (method, id) {
            (Some(method), Some(id)) => {
                // A server-initiated request: answer at once.
                let answer = match refusal(method) {
                    Ok(result) => json!({"id": id, "result": result}),
                    Err((code, text)) => {
                        json!({"id": id, "error": {"code": code, "message": text}})
                    }
                };
                tracing::debug!(method, "answered an app-server request with a refusal");
                let _ = self.write(&answer).await;
            }
            (Some(method), None) => {
                let params = message.get("params").cloned().unwrap_or(Value::Null);
                let thread = params
                    .get("threadId")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(thread) = thread {
                    let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(channel) = threads.get(&thread) {
                        let _ = channel.send((method.to_string(), params));
                    }
                }
            }
            (None, Some(id)) => {
                let Some(id) = id.as_u64() else { return };
                let waiter = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(waiter) = waiter {
                    let result = match message.get("error") {
                        Some(error) if !error.is_null() => Err(RpcError::Remote {
                            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                            message: error
                                .get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("unknown error")
                                .to_string(),
                        }),
                        _ => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    let _ = waiter.send(result);
                }
            }
            (None, None) => {}
        }
    }

    async fn write(&self, message: &Value) -> Result<(), RpcError> {
        let mut line = message.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(RpcError::Closed);
        };
        if pipe.write_all(line.as_bytes()).await.is_err() || pipe.flush().await.is_err() {
            return Err(RpcError::Closed);
        }
        Ok(())
    }

    /// Sends a request and waits for its answer (at most `timeout`).
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        if self.closed.is_cancelled() {
            return Err(RpcError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, sender);
        let sent = self
            .write(&json!({"id": id, "method": method, "params": params}))
            .await;
        if let Err(err) = sent {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(err);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::Closed),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(RpcError::Timeout {
                    method: method.to_string(),
                    seconds: timeout.as_secs(),
                })
            }
        }
    }

    /// Sends a notification (no answer).
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), RpcError> {
        let mut message = json!({"method": method});
        if let Some(params) = params {
            message["params"] = params;
        }
        self.write(&message).await
    }

    /// Routes `thread`'s notifications to the returned channel until [`Connection::forget_thread`].
    pub fn subscribe_thread(&self, thread: &str) -> mpsc::UnboundedReceiver<(String, Value)> {
        let (sender, receiver) = mpsc::unbounded_channel();
        if !self.closed.is_cancelled() {
            self.threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(thread.to_string(), sender);
        }
        receiver
    }

    pub fn forget_thread(&self, thread: &str) {
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(thread);
    }

    /// Closes stdin: the app-server exits on its own within ~30 ms.
    pub async fn close_stdin(&self) {
        self.stdin.lock().await.take();
    }
}
