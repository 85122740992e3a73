//! `GET /v1/usage`: the usage ledger's figures as JSON (server key, as `/metrics`).

use axum::response::Response;

/// Not built yet: the JSON 404 of unknown paths.
pub async fn get_usage(uri: axum::http::Uri) -> Response {
    crate::api::ops::not_found(uri).await
}
