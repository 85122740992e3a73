//! `GET /ui`: the dashboard, one self-contained page embedded in the binary.

use axum::response::Response;

/// Not built yet: the JSON 404 of unknown paths.
pub async fn page(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}

/// Anything under `/ui/` (the page's data feeds). Not built yet: the JSON 404 of unknown paths.
pub async fn sub(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}
