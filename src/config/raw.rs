//! The TOML file as written: a serde mirror that keeps the byte span of every key and value so that
//! validation (in `config/check.rs`) can name the line of each problem. Nothing here interprets values;
//! the one transformation is `${VAR}` expansion, which also needs the spans for its errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One `[table]` of the file: every key with its span, and every value with its span.
/// A `BTreeMap` sorts by key; [`ordered`] restores the order of the file.
pub type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The whole file. Unknown top-level tables are rejected by serde (with their position).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub server: Option<Spanned<SpannedTable>>,
    pub defaults: Option<Spanned<SpannedTable>>,
    pub profiles: Option<BTreeMap<Spanned<String>, Spanned<SpannedTable>>>,
}

/// The entries of a table in the order they appear in the file.
pub fn ordered(table: &SpannedTable) -> Vec<(&Spanned<String>, &Spanned<toml::Value>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// The profiles in the order they appear in the file.
pub fn ordered_profiles(
    profiles: &BTreeMap<Spanned<String>, Spanned<SpannedTable>>,
) -> Vec<(&Spanned<String>, &Spanned<SpannedTable>)> {
    let mut entries: Vec<_> = profiles.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Replaces every `${NAME}` in the strings of `value` (recursively) with the environment variable's value.
/// Returns the names of variables that are not set; the value keeps the unexpanded text for those.
pub fn expand_env(value: &mut toml::Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut missing = Vec::new();
    match value {
        toml::Value::String(text) => {
            if let Some(expanded) = expand_string(text, lookup, &mut missing) {
                *text = expanded;
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                missing.extend(expand_env(item, lookup));
            }
        }
        toml::Value::Table(table) => {
            for (_, item) in table.iter_mut() {
                missing.extend(expand_env(item, lookup));
            }
        }
        _ => {}
    }
    missing
}

/// The names of every `${NAME}` in the strings of `value` (recursively), set or not.
pub fn referenced_vars(value: &toml::Value) -> Vec<String> {
    match value {
        toml::Value::String(text) => {
            let mut names = Vec::new();
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { break };
                names.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            names
        }
        toml::Value::Array(items) => items.iter().flat_map(referenced_vars).collect(),
        toml::Value::Table(table) => table.values().flat_map(referenced_vars).collect(),
        _ => Vec::new(),
    }
}

fn expand_string(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<String>,
) -> Option<String> {
    if !text.contains("${") {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match lookup(name) {
                    Some(found) => out.push_str(&found),
                    None => {
                        missing.push(name.to_string());
                        out.push_str(&rest[start..start + 2 + end + 1]);
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "KEY").then(|| "secret".to_string())
    }

    #[test]
    fn expands_set_variables_and_reports_unset_ones() {
        let mut value = toml::Value::Array(vec![
            toml::Value::String("${KEY}".into()),
            toml::Value::String("a-${KEY}-b".into()),
            toml::Value::String("${NOPE}".into()),
            toml::Value::String("plain".into()),
        ]);
        let missing = expand_env(&mut value, &lookup);
        assert_eq!(missing, vec!["NOPE".to_string()]);
        let items: Vec<_> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(items, vec!["secret", "a-secret-b", "${NOPE}", "plain"]);
    }

    #[test]
    fn keeps_file_order() {
        let file: RawFile =
            toml::from_str("[profiles.zeta]\nmodel = \"a\"\n[profiles.alpha]\nmodel = \"b\"\n")
                .unwrap();
        let profiles = file.profiles.unwrap();
        let names: Vec<_> = ordered_profiles(&profiles)
            .into_iter()
            .map(|(name, _)| name.get_ref().clone())
            .collect();
        assert_eq!(names, vec!["zeta", "alpha"]);
    }
}
