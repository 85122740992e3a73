//! Structured output, engine-neutral: what a client's JSON schema must look like for the model
//! service, and whether an answer has the shape the request asked for.
//!
//! Codex sends every output schema to the model as a *strict* `json_schema` format (`strict: true`,
//! whatever the client said), and the model service accepts a strict schema only in its subset of JSON
//! Schema ([`strict_schema`] states the rules). A client schema is adapted where that keeps its meaning
//! for a well-formed answer, and refused with the offending path otherwise. [`check_answer`] is the
//! proxy's own check of the answer, because Codex does not validate it.

use serde_json::{json, Map, Value};

use crate::turn::OutputFormat;

/// The deepest nesting of objects the model service accepts in a strict schema.
pub const MAX_SCHEMA_DEPTH: usize = 10;
/// The most object properties, over the whole schema, the model service accepts.
pub const MAX_SCHEMA_PROPERTIES: usize = 5000;

/// Keywords the model service refuses in a strict schema.
const UNSUPPORTED: &[&str] = &[
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "prefixItems",
    "contains",
    "minProperties",
    "maxProperties",
    "oneOf",
];

/// What makes a schema unusable, and where (a path below the schema's root, `""` for the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    pub path: String,
    pub message: String,
}

/// The strict form of a client schema, or the first problem found.
///
/// The rules of the model service's strict mode, and what is done about each:
/// - the root is an object schema (`"type": "object"`) — else refused;
/// - every object schema has `"additionalProperties": false` — added when absent, refused when set
///   to anything else;
/// - every property is listed in `required` — a property that is not is added, and its schema
///   becomes `anyOf: [schema, {"type": "null"}]`, so the model answers `null` where it would have
///   left it out;
/// - `allOf`, `oneOf`, `not`, `if`/`then`/`else`, `patternProperties`, `dependent*`,
///   `unevaluated*`, `propertyNames`, `prefixItems`, `contains`, `min/maxProperties` — refused;
/// - at most [`MAX_SCHEMA_DEPTH`] levels of nested objects and [`MAX_SCHEMA_PROPERTIES`] properties
///   in all — refused beyond.
pub fn strict_schema(schema: &Value) -> Result<Value, SchemaProblem> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(SchemaProblem {
            path: String::new(),
            message: "the root of the schema must be an object schema (\"type\": \"object\")"
                .to_string(),
        });
    }
    let mut strict = schema.clone();
    let mut properties = 0;
    adapt(&mut strict, "", 1, &mut properties)?;
    Ok(strict)
}

fn problem(path: &str, message: impl Into<String>) -> SchemaProblem {
    SchemaProblem {
        path: path.to_string(),
        message: message.into(),
    }
}

fn adapt(
    node: &mut Value,
    path: &str,
    depth: usize,
    properties: &mut usize,
) -> Result<(), SchemaProblem> {
    let Value::Object(map) = node else {
        // `true`/`false` schemas and the like: left to the model service.
        return Ok(());
    };
    if let Some(keyword) = UNSUPPORTED.iter().find(|k| map.contains_key(**k)) {
        return Err(problem(
            &format!("{path}.{keyword}"),
            format!("`{keyword}` is not supported in a strict schema"),
        ));
    }
    let is_object =
        map.get("type").and_then(Value::as_str) == Some("object") || map.contains_key("properties");
    if is_object && depth > MAX_SCHEMA_DEPTH {
        return Err(problem(
            path,
            format!("objects may be nested at most {MAX_SCHEMA_DEPTH} levels deep"),
        ));
    }
    let child_depth = depth + usize::from(is_object);
    if let Some(Value::Object(children)) = map.get_mut("properties") {
        for (name, child) in children.iter_mut() {
            adapt(
                child,
                &format!("{path}.properties.{name}"),
                child_depth,
                properties,
            )?;
        }
    }
    if let Some(items) = map.get_mut("items") {
        adapt(items, &format!("{path}.items"), child_depth, properties)?;
    }
    for key in ["anyOf"] {
        if let Some(Value::Array(list)) = map.get_mut(key) {
            for (index, child) in list.iter_mut().enumerate() {
                adapt(
                    child,
                    &format!("{path}.{key}[{index}]"),
                    child_depth,
                    properties,
                )?;
            }
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = map.get_mut(key) {
            for (name, child) in defs.iter_mut() {
                adapt(child, &format!("{path}.{key}.{name}"), depth, properties)?;
            }
        }
    }
    // After the children, so a problem inside an optional property is named by its own path.
    if is_object {
        adapt_object(map, path, properties)?;
    }
    Ok(())
}

/// `additionalProperties: false` and every property required (optional ones made nullable).
fn adapt_object(
    map: &mut Map<String, Value>,
    path: &str,
    properties: &mut usize,
) -> Result<(), SchemaProblem> {
    match map.get("additionalProperties") {
        None => {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        Some(Value::Bool(false)) => {}
        Some(_) => {
            return Err(problem(
                &format!("{path}.additionalProperties"),
                "a strict schema needs `additionalProperties: false` on every object",
            ))
        }
    }
    let names: Vec<String> = match map.get("properties") {
        Some(Value::Object(children)) => children.keys().cloned().collect(),
        Some(_) => return Err(problem(&format!("{path}.properties"), "must be an object")),
        None => {
            map.insert("properties".into(), json!({}));
            Vec::new()
        }
    };
    *properties += names.len();
    if *properties > MAX_SCHEMA_PROPERTIES {
        return Err(problem(
            path,
            format!("a strict schema may have at most {MAX_SCHEMA_PROPERTIES} properties in all"),
        ));
    }
    let required: Vec<String> = match map.get("required") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|name| name.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| problem(&format!("{path}.required"), "must be a list of names"))?,
        Some(_) => {
            return Err(problem(
                &format!("{path}.required"),
                "must be a list of names",
            ))
        }
    };
    let optional: Vec<String> = names
        .iter()
        .filter(|name| !required.contains(name))
        .cloned()
        .collect();
    if let Some(Value::Object(children)) = map.get_mut("properties") {
        for name in &optional {
            if let Some(child) = children.get_mut(name) {
                *child = json!({"anyOf": [child.take(), {"type": "null"}]});
            }
        }
    }
    map.insert("required".into(), json!(names));
    Ok(())
}

/// Whether `answer` has the shape `format` asks for: a JSON object for `json_object`; JSON for a
/// `json_schema`, and valid against its (strict form of the) schema when `strict`. The error
/// quotes what is wrong.
pub fn check_answer(format: &OutputFormat, answer: &str) -> Result<(), String> {
    let parsed: Value = serde_json::from_str(answer.trim())
        .map_err(|err| format!("the model's answer is not valid JSON ({err})"))?;
    match format {
        OutputFormat::JsonObject if !parsed.is_object() => {
            Err("the model's answer is JSON but not a JSON object".to_string())
        }
        OutputFormat::JsonObject => Ok(()),
        OutputFormat::JsonSchema {
            schema,
            strict: true,
            ..
        } => {
            let validator = jsonschema::validator_for(schema)
                .map_err(|err| format!("the schema cannot be compiled: {err}"))?;
            let first = validator.iter_errors(&parsed).next().map(|error| {
                format!(
                    "the model's answer does not match the schema: {error} (at '{}')",
                    error.instance_path()
                )
            });
            first.map_or(Ok(()), Err)
        }
        OutputFormat::JsonSchema { .. } => Ok(()),
    }
}

/// What the model is told for `json_object`, which has no schema to send: the answer is checked by
/// [`check_answer`] all the same.
pub const JSON_OBJECT_INSTRUCTION: &str = "Answer with one JSON object and nothing else: no prose before or after it, no Markdown code fence.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapts_objects_to_the_strict_rules() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "object", "properties": {"v": {"type": "integer"}}}},
            },
            "required": ["name"],
        });
        let strict = strict_schema(&schema).unwrap();
        assert_eq!(strict["additionalProperties"], json!(false));
        assert_eq!(strict["required"], json!(["name", "tags"]));
        assert_eq!(
            strict["properties"]["tags"]["anyOf"][1],
            json!({"type": "null"})
        );
        let item = &strict["properties"]["tags"]["anyOf"][0]["items"];
        assert_eq!(item["additionalProperties"], json!(false));
        assert_eq!(item["required"], json!(["v"]));
        // A schema that already is strict stays as it is.
        assert_eq!(strict_schema(&strict).unwrap(), strict);
    }

    #[test]
    fn refuses_what_strict_mode_cannot_carry_naming_the_path() {
        let cases = [
            (json!({"type": "array"}), ""),
            (
                json!({"type": "object", "properties": {"a": {"allOf": []}}}),
                ".properties.a.allOf",
            ),
            (
                json!({"type": "object", "additionalProperties": {"type": "string"}}),
                ".additionalProperties",
            ),
            (
                json!({"type": "object", "$defs": {"x": {"type": "object", "additionalProperties": true}}}),
                ".$defs.x.additionalProperties",
            ),
        ];
        for (schema, path) in cases {
            assert_eq!(strict_schema(&schema).unwrap_err().path, path, "{schema}");
        }
        let mut deep = json!({"type": "string"});
        for _ in 0..11 {
            deep = json!({"type": "object", "properties": {"a": deep}, "required": ["a"]});
        }
        assert!(strict_schema(&deep).unwrap_err().message.contains("nested"));
    }

    #[test]
    fn checks_answers_against_the_format() {
        let schema =
            strict_schema(&json!({"type": "object", "properties": {"n": {"type": "integer"}}}))
                .unwrap();
        let strict = OutputFormat::JsonSchema {
            name: "s".into(),
            schema,
            strict: true,
        };
        assert_eq!(check_answer(&strict, r#"{"n": 3}"#), Ok(()));
        let error = check_answer(&strict, r#"{"n": "three"}"#).unwrap_err();
        assert!(error.contains("/n"), "{error}");
        assert!(check_answer(&strict, "not json").is_err());
        assert!(check_answer(&OutputFormat::JsonObject, "[1]").is_err());
        assert_eq!(check_answer(&OutputFormat::JsonObject, " {} "), Ok(()));
    }
}
