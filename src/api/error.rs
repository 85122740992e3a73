//! The API's one error type. Each variant's doc names its HTTP status; [`ApiError::status`] and
//! [`ApiError::body`] are the only places that map them, always to OpenAI's
//! `{"error":{"message","type","param","code"}}` shape. After SSE headers are sent the same body goes
//! in-band ([`ApiError::sse_data`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::engine::{EngineError, FailureKind};
use crate::pool::AdmitError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request_error`: malformed JSON, wrong types, missing fields, unsupported parameters.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// 401 `authentication_error`: missing or wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `permission_error`: the key may not use this profile.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `permission_error` with its own code: a `Host` or `Origin` the server does not accept.
    #[error("{message}")]
    AccessDenied { message: String, code: &'static str },
    /// 404 `invalid_request_error`, code `model_not_found`.
    #[error("{0}")]
    ModelNotFound(String),
    /// 404 `invalid_request_error`, code `not_found`: no such route.
    #[error("{0}")]
    RouteNotFound(String),
    /// 405 `invalid_request_error`, code `method_not_allowed`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 408 `invalid_request_error`, code `request_timeout`: the client did not send its body in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// 413 `invalid_request_error`, code `request_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `invalid_request_error`, code `unsupported_media_type`: a body that is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 `rate_limit_error`: the queue is full or the wait timed out (local), or the model service
    /// rate-limited / ran out of quota (upstream). `Retry-After` is set when known.
    #[error("{message}")]
    RateLimited {
        message: String,
        code: &'static str,
        retry_after_seconds: Option<u64>,
    },
    /// 502 `server_error`, code `codex_failed` (or `upstream_error` variants): Codex failed.
    #[error("{message}")]
    CodexFailed { message: String, code: &'static str },
    /// 503 `server_error`: Codex cannot run (`codex_unavailable`) or the model service is overloaded.
    #[error("{message}")]
    Unavailable { message: String, code: &'static str },
    /// 503 `server_error` with `Retry-After`: the server is too busy to take this request now.
    #[error("{message}")]
    Busy {
        message: String,
        code: &'static str,
        retry_after_seconds: u64,
    },
    /// 504 `server_error`, code `timeout`.
    #[error("{0}")]
    Timeout(String),
    /// 503 `server_error`, code `shutting_down`: the server is stopping.
    #[error("{0}")]
    ShuttingDown(String),
}

impl ApiError {
    /// The refusal of an image the proxy cannot carry (`param` names its URL): 400, or 413 when it is
    /// too large. Adapters check every image they accept with [`crate::turn::image::check_image_url`].
    pub fn image(url: &str, param: &str) -> Result<(), ApiError> {
        use crate::turn::image::{check_image_url, ImageProblem};
        match check_image_url(url) {
            Ok(()) => Ok(()),
            Err(ImageProblem::Invalid(reason)) => Err(ApiError::invalid(
                format!("Invalid image in '{param}': {reason}."),
                Some(param),
            )),
            Err(ImageProblem::TooLarge(reason)) => Err(ApiError::PayloadTooLarge(format!(
                "The image in '{param}' is too large: {reason}."
            ))),
        }
    }

    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::AccessDenied { .. } => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::CodexFailed { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } | ApiError::Busy { .. } | ApiError::ShuttingDown(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// `(type, code, param)` of the OpenAI error body.
    fn parts(&self) -> (&'static str, Option<&str>, Option<&str>) {
        match self {
            ApiError::InvalidRequest { param, code, .. } => {
                ("invalid_request_error", *code, param.as_deref())
            }
            ApiError::Unauthorized(_) => ("authentication_error", Some("invalid_api_key"), None),
            ApiError::Forbidden(_) => {
                ("permission_error", Some("model_not_allowed"), Some("model"))
            }
            ApiError::AccessDenied { code, .. } => ("permission_error", Some(code), None),
            ApiError::ModelNotFound(_) => (
                "invalid_request_error",
                Some("model_not_found"),
                Some("model"),
            ),
            ApiError::RouteNotFound(_) => ("invalid_request_error", Some("not_found"), None),
            ApiError::MethodNotAllowed(_) => {
                ("invalid_request_error", Some("method_not_allowed"), None)
            }
            ApiError::RequestTimeout(_) => ("invalid_request_error", Some("request_timeout"), None),
            ApiError::PayloadTooLarge(_) => {
                ("invalid_request_error", Some("request_too_large"), None)
            }
            ApiError::UnsupportedMediaType(_) => (
                "invalid_request_error",
                Some("unsupported_media_type"),
                None,
            ),
            ApiError::RateLimited { code, .. } => ("rate_limit_error", Some(code), None),
            ApiError::CodexFailed { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::Busy { code, .. } => ("server_error", Some(code), None),
            ApiError::Timeout(_) => ("server_error", Some("timeout"), None),
            ApiError::ShuttingDown(_) => ("server_error", Some("shutting_down"), None),
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> Value {
        let (kind, code, param) = self.parts();
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }

    /// The in-band SSE form, for errors after the stream started.
    pub fn sse_data(&self) -> String {
        self.body().to_string()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        let message = error.message;
        match error.kind {
            FailureKind::UpstreamRateLimited => ApiError::RateLimited {
                message: format!("The model service rate-limited the request: {message}"),
                code: "rate_limit_exceeded",
                retry_after_seconds: Some(5),
            },
            FailureKind::QuotaExceeded => ApiError::RateLimited {
                message,
                code: "insufficient_quota",
                retry_after_seconds: None,
            },
            FailureKind::Overloaded => ApiError::RateLimited {
                message,
                code: "engine_overloaded",
                retry_after_seconds: Some(1),
            },
            FailureKind::ContextLengthExceeded => ApiError::InvalidRequest {
                message,
                param: Some("messages".to_string()),
                code: Some("context_length_exceeded"),
            },
            FailureKind::UpstreamBadRequest => ApiError::InvalidRequest {
                message: format!("The model service rejected the request: {message}"),
                param: None,
                code: Some("upstream_invalid_request"),
            },
            FailureKind::UpstreamOverloaded => ApiError::Unavailable {
                message,
                code: "model_overloaded",
            },
            FailureKind::UpstreamTimeout => {
                ApiError::Timeout(format!("The model service stopped responding: {message}"))
            }
            FailureKind::CodexFailed => ApiError::CodexFailed {
                message: format!("Codex failed: {message}"),
                code: "codex_failed",
            },
            FailureKind::CodexUnavailable => ApiError::Unavailable {
                message: format!("Codex is not available: {message}"),
                code: "codex_unavailable",
            },
            FailureKind::Timeout => ApiError::Timeout(message),
        }
    }
}

impl From<AdmitError> for ApiError {
    fn from(error: AdmitError) -> ApiError {
        let retry_after_seconds = match &error {
            AdmitError::QueueFull { .. } => 1,
            AdmitError::QueueTimeout { seconds, .. } => (*seconds).clamp(1, 30),
            AdmitError::Retired { .. } => 1,
        };
        ApiError::RateLimited {
            message: error.to_string(),
            code: "queue_full",
            retry_after_seconds: Some(retry_after_seconds),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited {
                retry_after_seconds: Some(seconds),
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            ApiError::Busy {
                retry_after_seconds,
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}
