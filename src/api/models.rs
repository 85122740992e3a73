//! `GET /v1/models` (one entry per profile, with its aliases, engine and description) and
//! `GET /v1/models/{model}` (any model name that routes, answered with its profile's entry).
//! A caller only sees the profiles it may use ([`may_use`]). A `pass_model` profile with
//! `list_models = true` adds the models its account can use (the app-server's `model/list`, cached by
//! `account::models`) that route to it, each marked with the profile and `"discovered": true`.
//! A request that carries `anthropic-version` (an Anthropic client) gets Anthropic's shapes:
//! `{"data":[{"type":"model","id","display_name","created_at"}],"has_more","first_id","last_id"}`, and
//! its errors in Anthropic's error shape.

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
use crate::report::UtcTime;

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
        Err(error) => return refuse(&headers, error),
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
    if anthropic(&headers) {
        let data: Vec<Value> = data.iter().map(anthropic_entry).collect();
        let first_id = data.first().map(|entry| entry["id"].clone());
        let last_id = data.last().map(|entry| entry["id"].clone());
        return Json(json!({
            "data": data,
            "has_more": false,
            "first_id": first_id,
            "last_id": last_id,
        }))
        .into_response();
    }
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Whether the request comes from an Anthropic client (it sends `anthropic-version`).
fn anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// An error in the shape the client speaks.
fn refuse(headers: &HeaderMap, error: ApiError) -> Response {
    if anthropic(headers) {
        crate::api::messages::error::response(error)
    } else {
        error.into_response()
    }
}

/// One OpenAI-shaped model entry as Anthropic's `/v1/models` lists it.
fn anthropic_entry(entry: &Value) -> Value {
    let description = entry["description"].as_str().unwrap_or_default();
    let id = entry["id"].clone();
    json!({
        "type": "model",
        "display_name": if description.is_empty() { id.clone() } else { json!(description) },
        "id": id,
        "created_at": rfc3339(entry["created"].as_u64().unwrap_or(0)),
    })
}

/// Unix seconds as an RFC 3339 UTC timestamp (`1970-01-01T00:00:00Z`).
fn rfc3339(unix: u64) -> String {
    format!("{}Z", UtcTime::from_unix(unix).format('T'))
}

pub async fn get_model(
    Extension(Loaded(snapshot)): Extension<Loaded>,
    model: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&snapshot, &headers) {
        Ok(key) => key,
        Err(error) => return refuse(&headers, error),
    };
    // A name that does not percent-decode to UTF-8 gets the OpenAI error shape, not axum's plain text.
    let model = match model {
        Ok(Path(model)) => model,
        Err(rejection) => {
            return refuse(
                &headers,
                ApiError::invalid(
                    format!("Invalid model name in the URL: {}", rejection.body_text()),
                    Some("model"),
                ),
            )
        }
    };
    match snapshot.route(&model) {
        Some(route) if may_use(&snapshot, route.profile, &caller) => {
            let entry = entry(&snapshot, route.profile, &model);
            if anthropic(&headers) {
                Json(anthropic_entry(&entry)).into_response()
            } else {
                Json(entry).into_response()
            }
        }
        _ => refuse(
            &headers,
            ApiError::ModelNotFound(format!("The model `{model}` does not exist on this proxy.")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(1_796_256_000), "2026-12-03T00:00:00Z");
    }

    #[test]
    fn anthropic_entries_carry_type_id_display_name_and_created_at() {
        let entry = json!({"id": "fast", "created": 0, "description": ""});
        assert_eq!(
            anthropic_entry(&entry),
            json!({"type": "model", "id": "fast", "display_name": "fast", "created_at": "1970-01-01T00:00:00Z"})
        );
        let entry = json!({"id": "deep", "created": 0, "description": "Thorough answers"});
        assert_eq!(
            anthropic_entry(&entry)["display_name"],
            json!("Thorough answers")
        );
    }
}
