//! Writing config files from tests: any text or path as a TOML basic string.
#![allow(dead_code)]

use std::path::Path;

pub use proxy_test_support::props::toml_str;

/// `path` (as displayed) as a TOML basic string.
pub fn path_str(path: &Path) -> String {
    toml_str(&path.display().to_string())
}
