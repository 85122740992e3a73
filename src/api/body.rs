//! Reading request bodies under two limits: `max_request_bytes` for one body (413), and
//! `max_inflight_body_bytes` for all bodies being read and parsed at once (503 with `Retry-After`).
//!
//! The second limit is a process-wide budget of bytes: a request reserves its declared
//! `Content-Length` (or `max_request_bytes` when it sends the body chunked) before reading, and gives it
//! back when the caller drops the returned [`Budgeted`] bytes, after parsing. One tokio semaphore per
//! distinct limit lives here (a reload that changes the limit starts a new budget; requests still
//! holding the old one finish under it).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::ApiError;

/// The budget counts kibibytes, so that 16 GiB fits the semaphore's `u32` acquisitions.
const UNIT: usize = 1024;

/// The budget for `limit` bytes in flight (created on first use).
fn budget(limit: usize) -> Arc<Semaphore> {
    static BUDGETS: OnceLock<Mutex<HashMap<usize, Arc<Semaphore>>>> = OnceLock::new();
    let mut budgets = BUDGETS.get_or_init(Default::default).lock();
    budgets
        .entry(limit)
        .or_insert_with(|| Arc::new(Semaphore::new((limit / UNIT).max(1))))
        .clone()
}

/// A body's bytes and its share of the in-flight budget; dropping it frees both.
pub struct Budgeted {
    pub bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Budgeted {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

fn reserve(limit: usize, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
    let units = bytes.div_ceil(UNIT).clamp(1, (limit / UNIT).max(1));
    let units = u32::try_from(units).unwrap_or(u32::MAX);
    budget(limit).try_acquire_many_owned(units).map_err(|_| ApiError::Busy {
        message: format!(
            "The proxy is already reading and parsing as many request bodies as its limit of {limit} bytes at once allows (max_inflight_body_bytes); retry in a moment, or raise [server] max_inflight_body_bytes."
        ),
        code: "server_busy",
        retry_after_seconds: 1,
    })
}

/// Reads a whole body of at most `limit` bytes within `timeout`, inside the `in_flight` budget.
pub async fn read_body(
    body: Body,
    limit: usize,
    in_flight: usize,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<Budgeted, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "The request body is larger than the proxy's limit of {limit} bytes (max_request_bytes)."
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let permit = reserve(in_flight, declared.unwrap_or(limit))?;
    let read = async {
        // One buffer of the declared size: no second copy of the body while it is collected.
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        let mut stream = body.into_data_stream();
        while let Some(data) = stream.next().await {
            let data = data.map_err(|err| {
                ApiError::invalid(format!("Could not read the request body: {err}"), None)
            })?;
            if bytes.len() + data.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
        Ok(bytes)
    };
    let Ok(bytes) = tokio::time::timeout(timeout, read).await else {
        return Err(ApiError::RequestTimeout(format!(
            "The request body was not received within {} s.",
            timeout.as_secs_f64()
        )));
    };
    Ok(Budgeted {
        bytes: bytes?,
        _permit: permit,
    })
}
