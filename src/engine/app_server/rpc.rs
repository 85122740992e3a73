//! JSON-RPC over one app-server process's stdio: numbered requests with a pending map, and notifications
//! and server-initiated requests routed to bounded per-thread channels by `params.threadId`. A server
//! request about a thread in flight goes to that thread's turn, which answers it at once
//! ([`Connection::respond`]); one about no thread in flight (or one whose channel is full or gone, or
//! left unread when the turn ends) is refused by the connection itself, so every server request is
//! answered and none waits. Non-JSON lines are skipped. On EOF every pending request fails and every
//! thread channel closes, so no caller waits on a dead process.
//!
//! The reader parses only the envelope of each line (`id`, `method`, `params.threadId`); `params` goes
//! to its thread as the raw JSON text, and only the turn that reads it parses it.
//!
//! Two tasks own the pipes, and callers never touch them:
//! - the **reader** reads stdout ([`MAX_STDOUT_LINE`] per line at most; a longer line breaks the
//!   connection) and never waits on anything but stdout: answers go through oneshots, notifications
//!   through `try_send`, refusals into the writer's unbounded queue;
//! - the **writer** owns stdin and writes whole lines, so a caller that gives up (deadline, cancellation)
//!   can never leave half a line behind. If one `write` makes no progress for [`STDIN_STALL_LIMIT`], the
//!   process has stopped reading: the connection is marked broken and the worker's supervisor kills it.
//!
//! Why the reader cannot deadlock against a large write: the reader's only interaction with stdin is
//! pushing a refusal into an unbounded queue, which never waits. So while the writer is blocked on a full
//! stdin pipe, the reader keeps draining stdout, and the app-server (which may itself be blocked writing
//! to its stdout) keeps making progress and eventually reads its stdin again, or the stall limit ends it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::protocol::refusal;
use crate::codex::lines::{read_line, Line, MAX_STDOUT_LINE};

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

/// How long one write to the app-server's stdin may make no progress before the process is declared
/// unhealthy and restarted: 10 s. A healthy app-server reads its stdin continuously, so a pipe that stays
/// full this long means it stopped reading.
pub const STDIN_STALL_LIMIT: Duration = Duration::from_secs(10);

/// Notifications buffered per thread (one request's turn): 1024. A turn reads them as fast as its client
/// takes the deltas; when the client stops reading, the buffer fills and the turn fails at once
/// ([`ThreadEvents::overflowed`]) rather than the reader waiting on it or memory growing.
pub const THREAD_BUFFER: usize = 1024;

/// Requests and notifications queued for the writer. Callers wait for room (racing their deadline), so a
/// stalled process pushes back on them instead of growing the queue.
const WRITE_QUEUE: usize = 64;

type Pending = HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>;

/// One message from the app-server about a thread, its `params` still as JSON text.
#[derive(Debug)]
pub enum ThreadMessage {
    Notification {
        method: String,
        params: Box<RawValue>,
    },
    /// A server-initiated request: it must be answered ([`Connection::respond`]).
    Request {
        id: Box<RawValue>,
        method: String,
        params: Box<RawValue>,
    },
}

/// The routing entry of one thread in flight.
struct ThreadRoute {
    sender: mpsc::Sender<ThreadMessage>,
    overflowed: CancellationToken,
}

/// One thread's messages, as [`Connection::subscribe_thread`] hands them out. Server requests still
/// waiting in it when it is dropped are refused.
pub struct ThreadEvents {
    pub receiver: mpsc::Receiver<ThreadMessage>,
    /// Cancelled when the reader found the buffer full: the turn's client is not keeping up, and the
    /// thread receives nothing more.
    pub overflowed: CancellationToken,
    answers: mpsc::UnboundedSender<String>,
}

impl ThreadEvents {
    /// The next message; `None` once the thread is forgotten, overflowed or the process is gone.
    pub async fn recv_message(&mut self) -> Option<ThreadMessage> {
        self.receiver.recv().await
    }

    /// The next notification with its params parsed; server requests on the way are refused.
    pub async fn recv(&mut self) -> Option<(String, Value)> {
        loop {
            match self.receiver.recv().await? {
                ThreadMessage::Notification { method, params } => {
                    let params = serde_json::from_str(params.get()).unwrap_or(Value::Null);
                    return Some((method, params));
                }
                ThreadMessage::Request { id, method, .. } => {
                    let _ = self.answers.send(refusal_line(&id, &method));
                }
            }
        }
    }
}

impl Drop for ThreadEvents {
    fn drop(&mut self) {
        self.receiver.close();
        while let Ok(message) = self.receiver.try_recv() {
            if let ThreadMessage::Request { id, method, .. } = message {
                let _ = self.answers.send(refusal_line(&id, &method));
            }
        }
    }
}

/// The envelope of one line from stdout: all the reader parses.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RemoteError>,
}

/// The `threadId` of a message's params, if any (nothing else of them is parsed here).
#[derive(Deserialize)]
struct ThreadOf<'a> {
    #[serde(borrow, default, rename = "threadId")]
    thread_id: Option<std::borrow::Cow<'a, str>>,
}

/// A JSON-RPC error object.
#[derive(Deserialize)]
struct RemoteError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// The answer line to a server request: `reply` is its result, or its error code and message.
pub fn answer_line(id: &RawValue, reply: &Result<Value, (i64, String)>) -> String {
    let id = id.get();
    match reply {
        Ok(result) => format!("{{\"id\":{id},\"result\":{result}}}\n"),
        Err((code, message)) => {
            let error = json!({"code": code, "message": message});
            format!("{{\"id\":{id},\"error\":{error}}}\n")
        }
    }
}

/// The refusal of a server request nobody will answer otherwise (see [`refusal`]).
fn refusal_line(id: &RawValue, method: &str) -> String {
    tracing::debug!(method, "answered an app-server request with a refusal");
    answer_line(id, &refusal(method))
}

/// Why a connection must end, shared with the writer task.
#[derive(Default)]
struct Health {
    /// Cancelled when the process must be killed (stdin stalled, an overlong line).
    broken: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Health {
    fn fail(&self, reason: String) {
        tracing::warn!("{reason}");
        self.reason.lock().get_or_insert(reason);
        self.broken.cancel();
    }
}

/// One live connection to an app-server process.
pub struct Connection {
    /// Lines for the writer task (bounded: see [`WRITE_QUEUE`]).
    outgoing: mpsc::Sender<String>,
    /// Answers to server-initiated requests, for the writer task. Unbounded so the reader never waits;
    /// they are rare and small, and a writer that cannot drain them is stalled and ends the process.
    answers: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
    /// Requests waiting for their answer, by id.
    pending: Mutex<Pending>,
    /// Notification channels of the threads in flight, by thread id.
    threads: Mutex<HashMap<String, ThreadRoute>>,
    /// Cancelled when stdout reaches EOF (the process is gone or going).
    closed: CancellationToken,
    health: Arc<Health>,
    /// Cancelled to make the writer close stdin.
    stop_writing: CancellationToken,
    /// Sees notifications about no thread (set once by the worker: quota reports).
    on_unrouted_notification: std::sync::OnceLock<UnroutedHook>,
}

/// The hook of [`Connection::on_unrouted_notification`].
type UnroutedHook = Box<dyn Fn(&str, &RawValue) + Send + Sync>;

/// Removes a request's pending entry when the request ends, however it ends (answer, timeout, error, or
/// the caller dropping the future).
struct PendingEntry<'a> {
    pending: &'a Mutex<Pending>,
    id: u64,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

impl Connection {
    /// Starts the reader and writer tasks over the process's pipes and returns the connection.
    pub fn start<W, R>(stdin: W, stdout: R) -> Arc<Connection>
    where
        W: AsyncWrite + Unpin + Send + 'static,
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (outgoing, outgoing_lines) = mpsc::channel(WRITE_QUEUE);
        let (answers, answer_lines) = mpsc::unbounded_channel();
        let health = Arc::new(Health::default());
        let stop_writing = CancellationToken::new();
        let connection = Arc::new(Connection {
            outgoing,
            answers,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            threads: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
            health: health.clone(),
            stop_writing: stop_writing.clone(),
            on_unrouted_notification: std::sync::OnceLock::new(),
        });
        tokio::spawn(write_loop(
            stdin,
            outgoing_lines,
            answer_lines,
            health,
            stop_writing,
        ));
        let reader = connection.clone();
        tokio::spawn(async move {
            reader.read_loop(stdout).await;
            reader.close();
        });
        connection
    }

    async fn read_loop<R: AsyncRead + Unpin>(&self, stdout: R) {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            match read_line(&mut stdout, &mut buf, MAX_STDOUT_LINE).await {
                Ok(Line::Complete) => self.dispatch(&buf),
                Ok(Line::TooLong) => {
                    self.health.fail(format!(
                        "the app-server worker printed an output line longer than {} MiB, more than any valid message; it is being restarted",
                        MAX_STDOUT_LINE >> 20
                    ));
                    return;
                }
                Ok(Line::Eof) | Err(_) => return,
            }
        }
    }

    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Cancelled when the process must be killed (see [`Connection::failure`] for why).
    pub fn broken(&self) -> &CancellationToken {
        &self.health.broken
    }

    /// Why the connection broke, if it did.
    pub fn failure(&self) -> Option<String> {
        self.health.reason.lock().clone()
    }

    /// Fails everything waiting on this connection.
    fn close(&self) {
        self.closed.cancel();
        self.stop_writing.cancel();
        let pending: Pending = std::mem::take(&mut *self.pending.lock());
        for (_, waiter) in pending {
            let _ = waiter.send(Err(RpcError::Closed));
        }
        self.threads.lock().clear();
    }

    /// Handles one line from stdout. Never waits (see the module comment). Only the envelope is parsed
    /// (this was a fifth of the proxy's own CPU when every line became a `serde_json::Value`).
    fn dispatch(&self, line: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Envelope>(line) else {
            return;
        };
        match (message.method, message.id) {
            (Some(method), Some(id)) => {
                let request = ThreadMessage::Request {
                    id: id.to_owned(),
                    method: method.into_owned(),
                    params: message.params.map_or_else(null_params, RawValue::to_owned),
                };
                self.route(message.params, request);
            }
            (Some(method), None) => {
                let Some(params) = message.params else { return };
                let notification = ThreadMessage::Notification {
                    method: method.into_owned(),
                    params: params.to_owned(),
                };
                self.route(Some(params), notification);
            }
            (None, Some(id)) => self.answer(id, message.result, message.error),
            (None, None) => {}
        }
    }

    /// Hands a message to its thread's channel without waiting; a full channel fails that thread. A
    /// server request that reaches no turn is refused at once.
    fn route(&self, params: Option<&RawValue>, message: ThreadMessage) {
        let thread = params.and_then(|params| serde_json::from_str::<ThreadOf>(params.get()).ok());
        let Some(thread) = thread.and_then(|of| of.thread_id) else {
            return self.unrouted(message);
        };
        let mut threads = self.threads.lock();
        let Some(route) = threads.get(thread.as_ref()) else {
            drop(threads);
            return self.unrouted(message);
        };
        let unsent = match route.sender.try_send(message) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(message)) => {
                route.overflowed.cancel();
                message
            }
            Err(mpsc::error::TrySendError::Closed(message)) => message,
        };
        threads.remove(thread.as_ref());
        drop(threads);
        self.unrouted(unsent);
    }

    /// A message no turn will read: a server request is refused, a notification handed to the
    /// [`Connection::on_unrouted_notification`] hook (if any) and dropped.
    fn unrouted(&self, message: ThreadMessage) {
        match message {
            ThreadMessage::Request { id, method, .. } => {
                let _ = self.answers.send(refusal_line(&id, &method));
            }
            ThreadMessage::Notification { method, params } => {
                if let Some(hook) = self.on_unrouted_notification.get() {
                    hook(&method, &params);
                }
            }
        }
    }

    /// Sets the hook that sees notifications about no thread (`account/rateLimits/updated`). It runs
    /// on the reader task, so it must not wait.
    pub fn on_unrouted_notification(&self, hook: impl Fn(&str, &RawValue) + Send + Sync + 'static) {
        let _ = self.on_unrouted_notification.set(Box::new(hook));
    }

    fn answer(&self, id: &RawValue, result: Option<&RawValue>, error: Option<RemoteError>) {
        let Ok(id) = id.get().parse::<u64>() else {
            return;
        };
        let waiter = self.pending.lock().remove(&id);
        if let Some(waiter) = waiter {
            let result = match error {
                Some(error) => Err(RpcError::Remote {
                    code: error.code.unwrap_or(0),
                    message: error.message.unwrap_or_else(|| "unknown error".to_string()),
                }),
                None => Ok(result
                    .and_then(|result| serde_json::from_str(result.get()).ok())
                    .unwrap_or(Value::Null)),
            };
            let _ = waiter.send(result);
        }
    }

    /// Answers a server request (a thread's turn decided the reply). Never waits.
    pub fn respond(&self, id: &RawValue, reply: &Result<Value, (i64, String)>) {
        let _ = self.answers.send(answer_line(id, reply));
    }

    /// Queues one line for the writer.
    async fn write(&self, message: &Value) -> Result<(), RpcError> {
        if self.closed.is_cancelled() || self.health.broken.is_cancelled() {
            return Err(RpcError::Closed);
        }
        self.outgoing
            .send(format!("{message}\n"))
            .await
            .map_err(|_| RpcError::Closed)
    }

    /// Sends a request and waits for its answer. `timeout` bounds everything: waiting for room in the
    /// write queue and for the answer. Dropping the future at any point leaves nothing behind.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        if self.closed.is_cancelled() || self.health.broken.is_cancelled() {
            return Err(RpcError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending.lock().insert(id, sender);
        let _entry = PendingEntry {
            pending: &self.pending,
            id,
        };
        let exchange = async {
            self.write(&json!({"id": id, "method": method, "params": params}))
                .await?;
            receiver.await.unwrap_or(Err(RpcError::Closed))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(RpcError::Timeout {
                    method: method.to_string(),
                    seconds: timeout.as_secs(),
                })
            })
    }

    /// Sends a notification (no answer), waiting at most [`STDIN_STALL_LIMIT`] for room in the write
    /// queue.
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), RpcError> {
        let timeout = STDIN_STALL_LIMIT;
        let mut message = json!({"method": method});
        if let Some(params) = params {
            message["params"] = params;
        }
        tokio::time::timeout(timeout, self.write(&message))
            .await
            .unwrap_or_else(|_| {
                Err(RpcError::Timeout {
                    method: method.to_string(),
                    seconds: timeout.as_secs(),
                })
            })
    }

    /// Routes `thread`'s notifications to the returned channel (at most [`THREAD_BUFFER`] waiting) until
    /// [`Connection::forget_thread`].
    pub fn subscribe_thread(&self, thread: &str) -> ThreadEvents {
        let (sender, receiver) = mpsc::channel(THREAD_BUFFER);
        let overflowed = CancellationToken::new();
        if !self.closed.is_cancelled() {
            self.threads.lock().insert(
                thread.to_string(),
                ThreadRoute {
                    sender,
                    overflowed: overflowed.clone(),
                },
            );
        }
        ThreadEvents {
            receiver,
            overflowed,
            answers: self.answers.clone(),
        }
    }

    pub fn forget_thread(&self, thread: &str) {
        self.threads.lock().remove(thread);
    }

    /// Closes stdin once the queued lines are written: the app-server exits on its own within ~30 ms.
    pub fn close_stdin(&self) {
        self.stop_writing.cancel();
    }

    /// How many requests wait for an answer (for tests).
    #[cfg(test)]
    fn pending_count(&self) -> usize {
        self.pending.lock().len()
    }
}

/// `null`, the params of a server request that has none.
fn null_params() -> Box<RawValue> {
    RawValue::from_string("null".to_string()).expect("`null` is JSON")
}

/// The writer task: writes whole lines to stdin, answers first, until stopped, the pipe fails, or a
/// write stalls past [`STDIN_STALL_LIMIT`] (then `health` says why).
async fn write_loop<W: AsyncWrite + Unpin>(
    mut stdin: W,
    mut outgoing: mpsc::Receiver<String>,
    mut answers: mpsc::UnboundedReceiver<String>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            Some(line) = answers.recv() => line,
            Some(line) = outgoing.recv() => line,
            else => return,
        };
        let written = tokio::select! {
            written = write_with_progress(&mut stdin, line.as_bytes()) => written,
            _ = stop.cancelled() => return,
        };
        match written {
            Ok(()) => {}
            Err(WriteFailure::Stalled) => {
                health.fail(format!(
                    "the app-server worker stopped reading its stdin for {} s; it is being restarted",
                    STDIN_STALL_LIMIT.as_secs()
                ));
                return;
            }
            Err(WriteFailure::Closed) => return,
        }
    }
}

enum WriteFailure {
    Stalled,
    Closed,
}

/// Writes all of `bytes`, failing when one `write` makes no progress for [`STDIN_STALL_LIMIT`].
async fn write_with_progress<W: AsyncWrite + Unpin>(
    stdin: &mut W,
    bytes: &[u8],
) -> Result<(), WriteFailure> {
    let mut written = 0;
    while written < bytes.len() {
        match tokio::time::timeout(STDIN_STALL_LIMIT, stdin.write(&bytes[written..])).await {
            Err(_) => return Err(WriteFailure::Stalled),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(WriteFailure::Closed),
            Ok(Ok(count)) => written += count,
        }
    }
    match tokio::time::timeout(STDIN_STALL_LIMIT, stdin.flush()).await {
        Err(_) => Err(WriteFailure::Stalled),
        Ok(Err(_)) => Err(WriteFailure::Closed),
        Ok(Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// A connection whose process never reads stdin (a small pipe that nobody drains) and never writes.
    fn deaf_connection() -> (Arc<Connection>, impl Sized) {
        let (stdin, unread) = tokio::io::duplex(64);
        let (silent, stdout) = tokio::io::duplex(64);
        (Connection::start(stdin, stdout), (unread, silent))
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_cancelled_while_waiting_leaves_no_pending_entry() {
        let (connection, _pipes) = deaf_connection();
        // The request's line fills the pipe, and no answer ever comes.
        let big = json!({"text": "x".repeat(4096)});
        let waiting = {
            let connection = connection.clone();
            tokio::spawn(async move {
                connection
                    .request("stuck", big, Duration::from_secs(3600))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(connection.pending_count(), 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(connection.pending_count(), 0);
        // And the timeout path.
        let result = connection
            .request("again", json!({}), Duration::from_secs(1))
            .await;
        assert!(
            matches!(result, Err(RpcError::Timeout { .. })),
            "{result:?}"
        );
        assert_eq!(connection.pending_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_stops_reading_stdin_is_declared_broken() {
        let (connection, _pipes) = deaf_connection();
        let big = json!({"text": "x".repeat(4096)});
        let result = connection
            .request("stuck", big, Duration::from_secs(2))
            .await;
        assert!(
            matches!(result, Err(RpcError::Timeout { .. })),
            "{result:?}"
        );
        assert!(!connection.broken().is_cancelled());
        tokio::time::sleep(STDIN_STALL_LIMIT).await;
        assert!(connection.broken().is_cancelled());
        assert!(connection
            .failure()
            .unwrap()
            .contains("stopped reading its stdin"));
        // A broken connection refuses new requests at once.
        let result = connection
            .request("later", json!({}), Duration::from_secs(3600))
            .await;
        assert!(matches!(result, Err(RpcError::Closed)), "{result:?}");
    }

    #[tokio::test]
    async fn a_full_thread_buffer_fails_only_that_thread() {
        let (stdin, _unread) = tokio::io::duplex(1 << 20);
        let (mut server, stdout) = tokio::io::duplex(1 << 20);
        let connection = Connection::start(stdin, stdout);
        let slow = connection.subscribe_thread("slow");
        let mut fast = connection.subscribe_thread("fast");
        for index in 0..THREAD_BUFFER + 1 {
            let line = json!({"method": "delta", "params": {"threadId": "slow", "n": index}});
            server
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }
        let line = json!({"method": "delta", "params": {"threadId": "fast"}});
        server
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        // The reader did not wait on the slow thread: the fast one gets its notification.
        let (method, _) = fast.recv().await.unwrap();
        assert_eq!(method, "delta");
        assert!(slow.overflowed.is_cancelled());
        assert!(!fast.overflowed.is_cancelled());
    }

    #[tokio::test]
    async fn refusals_do_not_wait_for_a_blocked_writer() {
        // A process that answers nothing but sends a server request; its stdin is never read.
        let (stdin, unread) = tokio::io::duplex(64);
        let (mut server, stdout) = tokio::io::duplex(1 << 16);
        let connection = Connection::start(stdin, stdout);
        let mut thread = connection.subscribe_thread("t");
        // Block the writer on a large request.
        let blocked = {
            let connection = connection.clone();
            tokio::spawn(async move {
                let big = json!({"text": "x".repeat(1 << 16)});
                connection.request("big", big, Duration::from_secs(5)).await
            })
        };
        while connection.pending_count() == 0 {
            tokio::task::yield_now().await;
        }
        // Let the writer start the large write and block on the full pipe.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = json!({"id": 7, "method": "item/tool/requestUserInput", "params": {}});
        let note = json!({"method": "n", "params": {"threadId": "t"}});
        server
            .write_all(format!("{request}\n{note}\n").as_bytes())
            .await
            .unwrap();
        // The reader went on past the server request to the notification.
        assert_eq!(thread.recv().await.unwrap().0, "n");
        // Once stdin drains, the large request and then the refusal arrive, each as a whole line.
        let mut lines = tokio::io::BufReader::new(unread).lines();
        let first = lines.next_line().await.unwrap().unwrap();
        assert!(first.contains("\"big\""));
        let second = lines.next_line().await.unwrap().unwrap();
        assert!(second.contains("\"id\":7"), "{second}");
        blocked.abort();
    }

    #[tokio::test]
    async fn server_requests_reach_their_thread_and_unread_ones_are_refused() {
        let (stdin, unread) = tokio::io::duplex(1 << 16);
        let (mut server, stdout) = tokio::io::duplex(1 << 16);
        let connection = Connection::start(stdin, stdout);
        let mut thread = connection.subscribe_thread("t");
        let asked =
            json!({"id": 7, "method": "item/tool/call", "params": {"threadId": "t", "tool": "f"}});
        let unread_request =
            json!({"id": "u", "method": "item/tool/requestUserInput", "params": {"threadId": "t"}});
        let elsewhere =
            json!({"id": 9, "method": "item/tool/call", "params": {"threadId": "gone"}});
        server
            .write_all(format!("{asked}\n{unread_request}\n{elsewhere}\n").as_bytes())
            .await
            .unwrap();
        // The request about thread `t` reaches its turn with its params untouched, and the turn answers.
        match thread.recv_message().await.unwrap() {
            ThreadMessage::Request { id, method, params } => {
                assert_eq!((id.get(), method.as_str()), ("7", "item/tool/call"));
                let params: Value = serde_json::from_str(params.get()).unwrap();
                assert_eq!(params["tool"], "f");
                connection.respond(&id, &Ok(json!({"success": true})));
            }
            other => panic!("{other:?}"),
        }
        // The one about no thread in flight is refused by the connection; the one left unread when the
        // turn ends is refused when its channel is dropped.
        let mut lines = tokio::io::BufReader::new(unread).lines();
        let mut answers = Vec::new();
        for _ in 0..2 {
            answers.push(lines.next_line().await.unwrap().unwrap());
        }
        drop(thread);
        answers.push(lines.next_line().await.unwrap().unwrap());
        let answers: Vec<Value> = answers
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let answer = |id: Value| answers.iter().find(|answer| answer["id"] == id).cloned();
        assert_eq!(answer(json!(7)).unwrap()["result"]["success"], true);
        assert_eq!(answer(json!(9)).unwrap()["result"]["success"], false);
        assert_eq!(answer(json!("u")).unwrap()["result"]["answers"], json!({}));
    }

    #[tokio::test]
    async fn answers_reach_their_request_and_errors_keep_code_and_message() {
        let (stdin, unread) = tokio::io::duplex(1 << 16);
        let (mut server, stdout) = tokio::io::duplex(1 << 16);
        let connection = Connection::start(stdin, stdout);
        let asking = {
            let connection = connection.clone();
            tokio::spawn(async move {
                let first = connection
                    .request("a", json!({}), Duration::from_secs(5))
                    .await;
                let second = connection
                    .request("b", json!({}), Duration::from_secs(5))
                    .await;
                (first, second)
            })
        };
        let mut lines = tokio::io::BufReader::new(unread).lines();
        lines.next_line().await.unwrap().unwrap();
        server
            .write_all(b"not json\n{\"id\":1,\"result\":{\"thread\":{\"id\":\"x\"}}}\n")
            .await
            .unwrap();
        lines.next_line().await.unwrap().unwrap();
        server
            .write_all(b"{\"id\":2,\"error\":{\"code\":-32001,\"message\":\"busy\"}}\n")
            .await
            .unwrap();
        let (first, second) = asking.await.unwrap();
        assert_eq!(first.unwrap()["thread"]["id"], "x");
        match second {
            Err(RpcError::Remote { code, message }) => {
                assert_eq!((code, message.as_str()), (OVERLOADED, "busy"));
            }
            other => panic!("{other:?}"),
        }
    }
}
