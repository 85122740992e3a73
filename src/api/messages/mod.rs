//! The Anthropic Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

use axum::response::Response;

/// Not built yet: the JSON 404 of unknown paths.
pub async fn create(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}

/// Not built yet: the JSON 404 of unknown paths.
pub async fn count_tokens(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}
