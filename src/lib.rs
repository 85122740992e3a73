//! codex-api-proxy: an OpenAI-compatible HTTP proxy that answers chat completions by driving the local
//! Codex CLI, routed by named profiles from a live-reloaded TOML file.
//!
//! Layout (see ARCHITECTURE.md for the life of a request and the invariants):
//! - `cli`, `daemon`, `server`: the command line, the background process, serving.
//! - `config`, `routing`: what the file says (pure), model → profile.
//! - `live`: the published snapshot, how it is rebuilt and replaced, and the file watcher.
//! - `pool`, `engine`, `codex`, `cwd`: admission, the Codex engines, launching Codex and shaping its input.
//! - `api`, `metrics`: the HTTP surface and its counters.
//! - `account`: login state and quota per Codex home, and the profile fallback decision.

pub mod account;
pub mod api;
pub mod cli;
pub mod codex;
pub mod config;
pub mod cwd;
pub mod daemon;
pub mod engine;
pub mod live;
pub mod metrics;
pub mod pool;
pub mod report;
pub mod routing;
pub mod server;
pub mod turn;
pub mod usage;

/// The module layering (ARCHITECTURE.md, "Layering"), checked against every `crate::` path in `src/`:
/// a module may use only the modules listed for it, and the list has no cycles. Unit tests (a file's
/// trailing `mod tests`, and `config/proptests.rs`) may build fixtures from any module.
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Each top-level module and the modules it may use.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("cli", &["config", "usage"]),
        ("daemon", &["cli", "config", "report", "routing", "account"]),
        (
            "server",
            &["api", "live", "cli", "config", "report", "usage"],
        ),
        (
            "api",
            &[
                "live", "pool", "engine", "codex", "turn", "routing", "metrics", "report",
                "config", "cwd", "usage", "account",
            ],
        ),
        (
            "live",
            &[
                "pool", "engine", "codex", "routing", "metrics", "config", "cwd", "usage",
                "account",
            ],
        ),
        ("pool", &["engine", "config"]),
        ("engine", &["codex", "turn", "config", "account"]),
        ("account", &["config"]),
        ("codex", &["turn", "config"]),
        ("metrics", &["turn"]),
        ("routing", &["config"]),
        ("cwd", &["config"]),
        ("report", &[]),
        ("turn", &[]),
        ("usage", &[]),
        ("config", &[]),
    ];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level modules a file's code names through `crate::` (comments skipped).
    fn used_modules(text: &str) -> BTreeSet<String> {
        let path = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
        let group = regex::Regex::new(r"crate::\{([^}]*)").unwrap();
        let mut used = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            used.extend(path.captures_iter(code).map(|c| c[1].to_string()));
            for captures in group.captures_iter(code) {
                for item in captures[1].split(',') {
                    let name = item.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        used.insert(name.to_string());
                    }
                }
            }
        }
        used
    }

    /// Every `from → to` edge found in `src/`, with a file that makes it.
    fn edges() -> BTreeMap<(String, String), PathBuf> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut edges = BTreeMap::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            if relative.ends_with("proptests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
            for used in used_modules(code) {
                if used != module {
                    edges.insert((module.clone(), used), relative.to_path_buf());
                }
            }
        }
        edges
    }

    #[test]
    fn every_module_uses_only_the_modules_below_it() {
        let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
        let mut wrong = Vec::new();
        for ((from, to), file) in edges() {
            let permitted = allowed
                .get(from.as_str())
                .unwrap_or_else(|| panic!("module `{from}` is missing from ALLOWED"));
            if !permitted.contains(&to.as_str()) {
                wrong.push(format!("{from} → {to} (in src/{})", file.display()));
            }
        }
        assert!(
            wrong.is_empty(),
            "layering violations:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn the_layering_has_no_cycles() {
        let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
        // Depth-first search from every module; reaching a module on the current path is a cycle.
        fn visit<'a>(
            module: &'a str,
            allowed: &BTreeMap<&'a str, &'a [&'a str]>,
            path: &mut Vec<&'a str>,
        ) {
            assert!(!path.contains(&module), "cycle: {path:?} → {module}");
            path.push(module);
            for next in allowed.get(module).copied().unwrap_or_default() {
                visit(next, allowed, path);
            }
            path.pop();
        }
        for module in allowed.keys() {
            visit(module, &allowed, &mut Vec::new());
        }
        // The two process roles stay apart.
        assert!(!allowed["daemon"].contains(&"server"));
        assert!(!allowed["server"].contains(&"daemon"));
        assert!(!allowed["engine"].contains(&"pool"));
    }
}
