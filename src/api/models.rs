//! `GET /v1/models` (one entry per profile, with its aliases, engine and description) and
//! `GET /v1/models/{model}` (any model name that routes, answered with its profile's entry).
//! A caller only sees the profiles it may use ([`may_use`]). A `pass_model` profile with
//! `list_models = true` adds the models its account can use (the app-server's `model/list`, cached by
//! `account::models`) that route to it, each marked with the profile and `"discovered": true`.

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
    let usable: Vec<usize> = (0..snapshot.config.profiles.len())
        .filter(|index| may_use(&snapshot, &snapshot.config.profiles[*index], &caller))
        .collect();
    let mut data: Vec<Value> = usable
        .iter()
        .map(|index| {
            let profile = &snapshot.config.profiles[*index];
            entry(&snapshot, profile, &profile.name)
        })
        .collect();
    for index in usable {
        let Some(catalog) = &snapshot.catalogs[index] else {
            continue;
        };
        let profile = &snapshot.config.profiles[index];
        for model in catalog.models().await.iter() {
            let routes_here = snapshot
                .route(&model.id)
                .is_some_and(|route| route.profile.name == profile.name);
            let listed = data.iter().any(|entry| entry["id"] == json!(model.id));
            if routes_here && !listed {
                let mut discovered = entry(&snapshot, profile, &model.id);
                discovered["description"] = json!(model.description.clone().unwrap_or_default());
                discovered["discovered"] = json!(true);
                data.push(discovered);
            }
        }
    }
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
