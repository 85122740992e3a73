//! `check --config FILE`: validate a config file offline and show what it declares — the server
//! settings (keys redacted), one row per profile, and where the profile names, aliases, `--model`
//! names and two samples route. Exit code 64 with every problem when the file is invalid.
//!
//! It needs no running server and touches none of the daemon's files.

use crate::account::{self, fallback, Login};
use crate::cli::CheckArgs;
use crate::config::{self, Config, ServerOverrides};
use crate::routing::Router;

use super::display::{model_label, url_of, REDACTED};

pub(super) fn run(args: &CheckArgs) -> anyhow::Result<i32> {
    let path = config::resolve_path(&args.config.to_string_lossy(), None);
    let config = match config::load_file(&path, &ServerOverrides::default()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("codex-api-proxy: {errors}");
            return Ok(64);
        }
    };
    let server = &config.server;
    println!(
        "{}: OK, {} profile{}",
        path.display(),
        config.profiles.len(),
        if config.profiles.len() == 1 { "" } else { "s" }
    );
    println!(
        "server: {} api_keys={} codex_bin={} fallback_profile={} log_level={}",
        url_of(&server.host, server.port),
        if server.api_keys.is_empty() {
            "none".to_string()
        } else {
            format!("{} ({REDACTED})", server.api_keys.len())
        },
        server.codex_bin,
        server.fallback_profile.as_deref().unwrap_or("none"),
        server.log_level
    );
    let warnings = [
        config::exposure_warning(&server.host, &server.api_keys),
        config::cors_warning(&server.cors_origins),
    ];
    for warning in warnings.into_iter().flatten() {
        println!("{warning}");
    }

    println!();
    print_table(&profile_rows(&config));
    println!();
    print_table(&route_rows(&config, &args.models));
    print_fallbacks(&config);
    print_logins(&config);
    Ok(0)
}

/// Each profile's fallback chain (the order its requests may be served in).
fn print_fallbacks(config: &Config) {
    let chains: Vec<String> = config
        .profiles
        .iter()
        .filter(|profile| !profile.fallbacks.is_empty())
        .map(|profile| fallback::chain(config, &profile.name).join(" → "))
        .collect();
    if chains.is_empty() {
        return;
    }
    println!();
    println!("fallbacks:");
    for chain in chains {
        println!("  {chain}");
    }
}

/// Each distinct Codex home of the profiles, and whether it is logged in (`codex login status`, run
/// with this command's environment); homes used only by profiles whose provider needs no login are
/// not checked.
fn print_logins(config: &Config) {
    let user_home = account::home_from_env(
        std::env::vars_os()
            .collect::<Vec<_>>()
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str())),
    );
    let mut homes: Vec<(std::path::PathBuf, Vec<String>, bool)> = Vec::new();
    for profile in &config.profiles {
        let account = account::profile_account(profile, &user_home);
        match homes
            .iter_mut()
            .find(|(home, _, _)| *home == account.codex_home)
        {
            Some((_, names, needs)) => {
                names.push(profile.name.clone());
                *needs |= account.needs_login;
            }
            None => homes.push((
                account.codex_home,
                vec![profile.name.clone()],
                account.needs_login,
            )),
        }
    }
    println!();
    println!("accounts:");
    for (home, names, needs_login) in homes {
        // A private app-server home links the user's login when its workers start.
        let checked = if home.join("auth.json").exists() || home == user_home {
            home.clone()
        } else {
            user_home.clone()
        };
        let state = if !needs_login {
            "no login needed (custom model provider)".to_string()
        } else {
            match account::login::check_blocking(&config.server.codex_bin, &checked) {
                Login::LoggedIn(Some(method)) => format!("logged in ({})", method.as_str()),
                Login::LoggedIn(None) => "logged in".to_string(),
                Login::NotLoggedIn => account::not_logged_in_reason(&checked),
                Login::Unknown => {
                    "login state unknown (`codex login status` did not answer)".to_string()
                }
            }
        };
        println!("  {} ({}): {state}", home.display(), names.join(", "));
    }
}

/// One row per profile: name, engine, model, aliases, match pattern.
fn profile_rows(config: &Config) -> Vec<[String; 5]> {
    let mut rows = vec![[
        "PROFILE".to_string(),
        "ENGINE".to_string(),
        "MODEL".to_string(),
        "ALIASES".to_string(),
        "MATCH".to_string(),
    ]];
    for profile in &config.profiles {
        rows.push([
            profile.name.clone(),
            profile.runtime.engine.as_str().to_string(),
            model_label(profile),
            if profile.routing.aliases.is_empty() {
                "-".to_string()
            } else {
                profile.routing.aliases.join(", ")
            },
            profile
                .routing
                .match_regex
                .as_ref()
                .map_or("-".to_string(), |regex| regex.as_str().to_string()),
        ]);
    }
    rows
}

/// Where each profile name and alias, each `--model` name and two samples route.
fn route_rows(config: &Config, models: &[String]) -> Vec<[String; 3]> {
    let mut examples: Vec<String> = Vec::new();
    for profile in &config.profiles {
        examples.push(profile.name.clone());
        examples.extend(profile.routing.aliases.iter().cloned());
    }
    examples.extend(models.iter().cloned());
    examples.extend(["gpt-5".to_string(), "unknown-model".to_string()]);
    let router = Router::new(config);
    let mut routes = vec![[
        "MODEL".to_string(),
        "ROUTES TO".to_string(),
        "BY".to_string(),
    ]];
    for model in super::unique_in_order(examples) {
        match router.route(config, &model) {
            Some((index, kind)) => routes.push([
                model,
                config.profiles[index].name.clone(),
                kind.as_str().to_string(),
            ]),
            None => routes.push([model, "(no profile: 404)".to_string(), "-".to_string()]),
        }
    }
    routes
}

/// Prints `rows` as left-aligned columns, two spaces apart.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("  {}", line.join("  ").trim_end());
    }
}
