//! `GET /v1/models` (one entry per profile, with its aliases, engine and description) and
//! `GET /v1/models/{model}` (any model name that routes, answered with its profile's entry).
//! A caller only sees the profiles it may use ([`may_use`]).

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::api::{authenticate, may_use};
use crate::config::Profile;
use crate::live::snapshot::Snapshot;

fn entry(snapshot: &Snapshot, profile: &Profile, id: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": snapshot.created,
        "owned_by": "codex-api-proxy",
        "profile": profile.name,
        "aliases": profile.routing.aliases,
        "engine": profile.runtime.engine.as_str(),
        "description": profile.routing.description,
    })
}

pub async fn list_models(
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&snapshot, &headers) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let data: Vec<Value> = snapshot
        .config
        .profiles
        .iter()
        .filter(|profile| may_use(&snapshot, profile, &caller))
        .map(|profile| entry(&snapshot, profile, &profile.name))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn get_model(
    Extension(Loaded(snapshot)): Extension<Loaded>,
    model: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&snapshot, &headers) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    // A name that does not percent-decode to UTF-8 gets the OpenAI error shape, not axum's plain text.
    let model = match model {
        Ok(Path(model)) => model,
        Err(rejection) => {
            return ApiError::invalid(
                format!("Invalid model name in the URL: {}", rejection.body_text()),
                Some("model"),
            )
            .into_response()
        }
    };
    match snapshot.route(&model) {
        Some(route) if may_use(&snapshot, route.profile, &caller) => {
            Json(entry(&snapshot, route.profile, &model)).into_response()
        }
        _ => ApiError::ModelNotFound(format!("The model `{model}` does not exist on this proxy."))
            .into_response(),
    }
}
