//! Property tests of [`parse`] on hostile config files: random bytes, byte edits and truncations of
//! `config.example.toml`, and random tables, keys and value types. `parse` must not panic; an error
//! carries problems, each with a message; a config has profiles, and no model name belongs to two. And
//! the messages of config errors never show the keys of `api_keys`.
//!
//! The case counts are fixed here, the seed is fixed unless `PROPTEST_RNG_SEED` is set;
//! `--nocapture` prints one line per property:
//!
//! | property | cases |
//! |---|---|
//! | `config::parse` on random bytes | 512 |
//! | `config::parse` on byte edits and truncations of `config.example.toml` | 512 |
//! | `config::parse` on random tables, keys and value types | 512 |

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use proxy_test_support::props::{check_property, text, toml_str};

use super::{parse, ServerOverrides, PROFILE_KEYS, SERVER_KEYS};

/// The server-level key of the secrets test.
const SERVER_KEY: &str = "sk-test-SECRET";
/// Checks what `parse` promises: no panic; an error carries problems, each with a message; a config
/// has profiles, and no model name (profile name or alias) belongs to two of them.
fn parse_case(text: &str) -> Result<(), TestCaseError> {
    let lookup = |name: &str| (name == "SET").then(|| "value-of-set".to_string());
    match parse(
        text,
        Path::new("/hostile/config.toml"),
        &ServerOverrides::default(),
        &lookup,
    ) {
        Ok(config) => {
            prop_assert!(!config.profiles.is_empty());
            for profile in &config.profiles {
                prop_assert!(profile.runtime.max_concurrency >= 1 && profile.runtime.workers >= 1);
            }
            // Each model name (a profile's name or alias) belongs to one profile, so `routing::Router`
            // reaches every profile by its own name.
            let mut names: Vec<&str> = config
                .profiles
                .iter()
                .flat_map(|profile| {
                    std::iter::once(profile.name.as_str())
                        .chain(profile.routing.aliases.iter().map(String::as_str))
                })
                .collect();
            let claimed = names.len();
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), claimed, "a model name claimed twice");
        }
        Err(errors) => {
            prop_assert!(!errors.problems.is_empty(), "an error without problems");
            for problem in &errors.problems {
                prop_assert!(!problem.message.trim().is_empty(), "{:?}", problem);
                prop_assert!(!errors.describe(problem).is_empty());
            }
            prop_assert!(!errors.to_string().is_empty());
        }
    }
    Ok(())
}

const EXAMPLE: &str = include_str!("../../config.example.toml");

/// Every key the config file knows: `[server]`'s and the profiles'.
fn config_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = SERVER_KEYS.iter().chain(PROFILE_KEYS).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn toml_key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(config_keys()).prop_map(str::to_string),
        1 => "[a-z_]{1,8}",
        1 => text().prop_map(|key| toml_str(&key)),
    ]
    .boxed()
}

fn toml_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        2 => text().prop_map(|text| toml_str(&text)),
        1 => "[a-z${}~/._ -]{0,12}".prop_map(|text| format!("'{text}'")),
        1 => any::<i64>().prop_map(|number| number.to_string()),
        3 => prop::sample::select(
            &[
                "0", "-1", "1", "65536", "99999999999999999999", "1e3", "3.5", "-0.0", "inf",
                "nan", "true", "false", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27",
                "\"exec\"", "\"app-server\"", "\"^gpt-\"", "\"(\"", "\"[\"",
                "\"a{1000}{1000}{1000}\"", "\"${SET}\"", "\"${UNSET}\"", "\"${\"", "\"~\"",
                "\"~/x\"", "\"\"", "\"relative/dir\"", "\"/\"", "\"debug\"", "\"default\"",
                "\"model_reasoning_effort=\\\"low\\\"\"",
            ][..]
        )
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((toml_key(), inner), 0..3).prop_map(|entries| {
                let entries: Vec<String> = entries
                    .into_iter()
                    .map(|(key, value)| format!("{key} = {value}"))
                    .collect();
                format!("{{ {} }}", entries.join(", "))
            }),
        ]
    })
    .boxed()
}

/// A file of random sections (`[server]`, `[defaults]`, `[profiles.NAME]`, unknown ones) holding random
/// keys with values of random types.
fn random_config() -> BoxedStrategy<String> {
    let header = prop_oneof![
        2 => Just("[server]".to_string()),
        2 => Just("[defaults]".to_string()),
        6 => prop_oneof!["[a-z]{1,6}", text().prop_map(|name| toml_str(&name))]
            .prop_map(|name| format!("[profiles.{name}]")),
        1 => toml_key().prop_map(|key| format!("[{key}]")),
        1 => Just("[[profiles]]".to_string()),
        1 => Just("[profiles]".to_string()),
    ];
    let section = (
        header,
        prop::collection::vec((toml_key(), toml_value()), 0..6),
    )
        .prop_map(|(header, entries)| {
            let lines: Vec<String> = entries
                .into_iter()
                .map(|(key, value)| format!("{key} = {value}"))
                .collect();
            format!("{header}\n{}\n", lines.join("\n"))
        });
    prop::collection::vec(section, 0..5)
        .prop_map(|sections| sections.concat())
        .boxed()
}

#[test]
fn config_parse_survives_random_bytes() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|bytes| { [b"[profiles.a]\n".as_slice(), &bytes].concat() }),
    ];
    check_property("config::parse on random bytes", 512, bytes, |bytes| {
        parse_case(&String::from_utf8_lossy(&bytes))
    });
}

#[test]
fn config_parse_survives_edits_of_the_example() {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..4u8);
    let edits = (
        prop::collection::vec(edit, 1..5),
        prop::option::of(any::<prop::sample::Index>()),
    );
    check_property(
        "config::parse on edited examples",
        512,
        edits,
        |(edits, truncate)| {
            let mut bytes = EXAMPLE.as_bytes().to_vec();
            for (index, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let at = index.index(bytes.len());
                match kind {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 => {
                        bytes.remove(at);
                    }
                    _ => {
                        // Duplicate a whole line somewhere else.
                        let start = bytes[..at]
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |i| i + 1);
                        let end = bytes[at..]
                            .iter()
                            .position(|b| *b == b'\n')
                            .map_or(bytes.len(), |i| at + i + 1);
                        let line = bytes[start..end].to_vec();
                        let to = (byte as usize * bytes.len()) / 256;
                        bytes.splice(to..to, line);
                    }
                }
            }
            if let Some(truncate) = truncate {
                bytes.truncate(truncate.index(bytes.len() + 1));
            }
            parse_case(&String::from_utf8_lossy(&bytes))
        },
    );
    // Every prefix of the example, cut at each line.
    let mut prefix = String::new();
    for line in EXAMPLE.split_inclusive('\n') {
        prefix.push_str(line);
        parse_case(&prefix).unwrap();
    }
}

#[test]
fn config_parse_survives_random_tables_keys_and_types() {
    check_property(
        "config::parse on random tables",
        512,
        random_config(),
        |text| parse_case(&text),
    );
}

/// The messages of config errors show the value of `fallback_profile` or `log_level`, but never the
/// keys of `api_keys`.
#[test]
fn config_errors_do_not_show_api_keys() {
    let base = format!(
        "[server]\napi_keys = [{}]\n[profiles.a]\n",
        toml_str(SERVER_KEY)
    );
    let broken = [
        format!("[server]\napi_keys = [{SERVER_KEY}]\n[profiles.a]\n"),
        format!(
            "[server]\napi_keys = {}\n[profiles.a]\n",
            toml_str(SERVER_KEY)
        ),
        format!(
            "[server]\napi_keys = [{}, 1]\n[profiles.a]\n",
            toml_str(SERVER_KEY)
        ),
        format!("[server]\napi_keys = [\"{SERVER_KEY}\n[profiles.a]\n"),
        format!("[server]\napi_keys = ['{SERVER_KEY}\n[profiles.a]\n"),
        format!("[server]\napi_keys = [\"\"\"{SERVER_KEY}]\n[profiles.a]\n"),
        format!("{base}api_keys = [{}]\nworkers = 0\n", toml_str(SERVER_KEY)),
        format!("{base}api_keys = {{ key = {} }}\n", toml_str(SERVER_KEY)),
        format!(
            "{base}api_keys = [{}]\napi_keys = []\n",
            toml_str(SERVER_KEY)
        ),
        format!(
            "[defaults]\napi_keys = {}\n[profiles.a]\n",
            toml_str(SERVER_KEY)
        ),
    ];
    let mut leaks = Vec::new();
    for text in &broken {
        let errors = parse(
            text,
            Path::new("/hostile/config.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .expect_err(text);
        let shown = errors.to_string();
        if shown.contains(SERVER_KEY) {
            leaks.push(format!("{text:?}\n  → {shown}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "config errors that show a key:\n{}",
        leaks.join("\n")
    );
}
