//! [`ApiError`] in Anthropic's error shape: `{"type":"error","error":{"type","message"}}` with
//! Anthropic's status conventions. The mapping goes by status, so a variant added to `ApiError` later is
//! still rendered: 400/405/408/415 `invalid_request_error`, 401 `authentication_error`, 403
//! `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`, 504
//! `timeout_error`, an overloaded model service or a busy proxy 529 `overloaded_error`, any other 5xx
//! `api_error` with its own status.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::error::ApiError;

/// Anthropic's status for an overloaded service (not in `http`'s list).
fn overloaded_status() -> StatusCode {
    StatusCode::from_u16(529).expect("529 is a valid status code")
}

/// The status and Anthropic error `type` of `error`.
pub fn status_and_type(error: &ApiError) -> (StatusCode, &'static str) {
    let status = error.status();
    let overloaded = matches!(
        error,
        ApiError::Unavailable {
            code: "model_overloaded",
            ..
        } | ApiError::Busy { .. }
    );
    if overloaded {
        return (overloaded_status(), "overloaded_error");
    }
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    (status, kind)
}

/// The Anthropic error body of `error`.
pub fn body(error: &ApiError) -> Value {
    let (_, kind) = status_and_type(error);
    json!({"type": "error", "error": {"type": kind, "message": error.to_string()}})
}

/// The `data` of an in-band `error` event, after the stream's headers were sent.
pub fn sse_data(error: &ApiError) -> String {
    body(error).to_string()
}

/// The HTTP response of `error`: Anthropic's status and body, with the headers `ApiError` sets
/// (`Retry-After`, `WWW-Authenticate`).
pub fn response(error: ApiError) -> Response {
    let (status, _) = status_and_type(&error);
    let body = body(&error);
    let mut response = error.into_response();
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(body.to_string());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_anthropic() {
        let cases = [
            (
                ApiError::invalid("bad", Some("x")),
                400,
                "invalid_request_error",
            ),
            (
                ApiError::Unauthorized("no".into()),
                401,
                "authentication_error",
            ),
            (ApiError::Forbidden("no".into()), 403, "permission_error"),
            (ApiError::ModelNotFound("no".into()), 404, "not_found_error"),
            (
                ApiError::PayloadTooLarge("big".into()),
                413,
                "request_too_large",
            ),
            (
                ApiError::RateLimited {
                    message: "slow".into(),
                    code: "queue_full",
                    retry_after_seconds: Some(1),
                },
                429,
                "rate_limit_error",
            ),
            (
                ApiError::Unavailable {
                    message: "busy".into(),
                    code: "model_overloaded",
                },
                529,
                "overloaded_error",
            ),
            (
                ApiError::CodexFailed {
                    message: "x".into(),
                    code: "codex_failed",
                },
                502,
                "api_error",
            ),
            (ApiError::Timeout("late".into()), 504, "timeout_error"),
        ];
        for (error, status, kind) in cases {
            let (got_status, got_kind) = status_and_type(&error);
            assert_eq!((got_status.as_u16(), got_kind), (status, kind), "{error}");
            assert_eq!(body(&error)["type"], "error");
            assert_eq!(body(&error)["error"]["type"], kind);
        }
    }
}
