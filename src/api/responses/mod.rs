//! The OpenAI Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`.

use axum::response::Response;

/// Not built yet: the JSON 404 of unknown paths.
pub async fn create(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}

/// Not built yet: the JSON 404 of unknown paths.
pub async fn get(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}

/// Not built yet: the JSON 404 of unknown paths.
pub async fn delete(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}
