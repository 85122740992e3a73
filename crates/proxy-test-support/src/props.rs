//! What the property tests share: the runner with its fixed seed, a string strategy that mixes plain
//! text with strings that have broken parsers before, TOML quoting of any text, and shortening of long
//! inputs for failure messages. Used by `src/config/proptests.rs` and `tests/it/hostile/`.

use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngSeed, TestCaseError, TestError, TestRunner,
};

/// The seed of every property unless `PROPTEST_RNG_SEED` is set.
pub const DEFAULT_SEED: u64 = 0x005E_ED0F_C0DE;

/// Strings that have broken parsers, loggers and path handling before.
pub const SPECIAL_STRINGS: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "a\u{0}b",
    "\u{202E}txt.exe",
    "\u{FEFF}user",
    "user\u{200B}",
    "USER",
    "🦀",
    "\u{10FFFF}",
    "\\",
    "\"",
    "\r\n\r\n",
    "%00",
    "../..",
    "/",
    "${HOME}",
    "{{",
    "<script>",
    "null",
    "[DONE]",
    "data: [DONE]\n\n",
    "fake:hang",
    "-x",
    "--help",
];

/// Plain names, any strings, any characters, and [`SPECIAL_STRINGS`].
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 _./-]{0,16}",
        2 => any::<String>(),
        2 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => prop::sample::select(SPECIAL_STRINGS).prop_map(str::to_string),
    ]
    .boxed()
}

/// `text` as a TOML basic string.
pub fn toml_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first 400 characters of `text`, for messages.
pub fn short(text: &str) -> String {
    let mut out: String = text.chars().take(400).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Runs `test` on `cases` values of `strategy`; panics with the shrunk input on failure.
pub fn check_property<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut config = ProptestConfig::default();
    let seed = match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => DEFAULT_SEED,
    };
    config.rng_seed = RngSeed::Fixed(seed);
    config.cases = cases;
    config.failure_persistence = None;
    config.max_shrink_iters = 256;
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, test) {
        Ok(()) => eprintln!("property `{name}`: {cases} cases passed (seed {seed})"),
        Err(TestError::Fail(reason, minimal)) => {
            let shown = short(&format!("{minimal:?}"));
            panic!("property `{name}` failed (seed {seed}): {reason}\nminimal input: {shown}")
        }
        Err(TestError::Abort(reason)) => panic!("property `{name}` aborted: {reason}"),
    }
}
