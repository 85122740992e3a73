//! Writing config files from tests: any text or path as a TOML basic string.
#![allow(dead_code)]

use std::path::Path;

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

/// `path` (as displayed) as a TOML basic string.
pub fn path_str(path: &Path) -> String {
    toml_str(&path.display().to_string())
}
