//! Pure model-name → profile resolution. Order: exact profile name, then alias, then `match` regexes in
//! file order, then `fallback_profile`. No I/O, no knowledge of engines or pools.

use std::collections::HashMap;

use crate::config::Config;

/// A lookup table built once per config snapshot.
#[derive(Debug, Clone)]
pub struct Router {
    /// Profile names and aliases → index into the config's profiles.
    exact: HashMap<String, usize>,
    /// `(regex, profile index)` in file order.
    patterns: Vec<(regex::Regex, usize)>,
    fallback: Option<usize>,
}

/// How a model name found its profile (logged, and shown by `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Name,
    Alias,
    Match,
    Fallback,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Name => "name",
            RouteKind::Alias => "alias",
            RouteKind::Match => "match",
            RouteKind::Fallback => "fallback",
        }
    }
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let mut exact = HashMap::new();
        for (index, profile) in config.profiles.iter().enumerate() {
            exact.insert(profile.name.clone(), index);
        }
        for (index, profile) in config.profiles.iter().enumerate() {
            for alias in &profile.routing.aliases {
                exact.entry(alias.clone()).or_insert(index);
            }
        }
        let patterns = config
            .profiles
            .iter()
            .enumerate()
            .filter_map(|(index, profile)| {
                profile
                    .routing
                    .match_regex
                    .as_ref()
                    .map(|regex| (regex.clone(), index))
            })
            .collect();
        let fallback = config
            .server
            .fallback_profile
            .as_ref()
            .and_then(|name| config.profiles.iter().position(|p| &p.name == name));
        Router {
            exact,
            patterns,
            fallback,
        }
    }

    /// The index of the profile serving `model`, and how it was chosen.
    pub fn route(&self, config: &Config, model: &str) -> Option<(usize, RouteKind)> {
        if let Some(&index) = self.exact.get(model) {
            let kind = if config.profiles[index].name == model {
                RouteKind::Name
            } else {
                RouteKind::Alias
            };
            return Some((index, kind));
        }
        if let Some((_, index)) = self
            .patterns
            .iter()
            .find(|(regex, _)| regex.is_match(model))
        {
            return Some((*index, RouteKind::Match));
        }
        self.fallback.map(|index| (index, RouteKind::Fallback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ServerOverrides};
    use std::path::Path;

    fn config(text: &str) -> Config {
        parse(
            text,
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap()
    }

    fn route(config: &Config, model: &str) -> Option<(String, RouteKind)> {
        Router::new(config)
            .route(config, model)
            .map(|(index, kind)| (config.profiles[index].name.clone(), kind))
    }

    #[test]
    fn order_is_name_alias_match_fallback() {
        let config = config(
            "[server]\nfallback_profile = \"c\"\n\
             [profiles.a]\nmatch = \"^gpt\"\n\
             [profiles.b]\naliases = [\"gpt-alias\"]\nmatch = \"^gpt-5\"\n\
             [profiles.c]\n\
             [profiles.gpt-5-exact]\n",
        );
        assert_eq!(route(&config, "b"), Some(("b".into(), RouteKind::Name)));
        assert_eq!(
            route(&config, "gpt-alias"),
            Some(("b".into(), RouteKind::Alias))
        );
        // The first matching regex in file order wins.
        assert_eq!(
            route(&config, "gpt-5.1"),
            Some(("a".into(), RouteKind::Match))
        );
        // An exact name beats any regex.
        assert_eq!(
            route(&config, "gpt-5-exact"),
            Some(("gpt-5-exact".into(), RouteKind::Name))
        );
        assert_eq!(
            route(&config, "llama"),
            Some(("c".into(), RouteKind::Fallback))
        );
    }

    #[test]
    fn every_profile_of_the_example_is_reached_by_its_name_and_aliases() {
        let config = parse(
            include_str!("../config.example.toml"),
            Path::new("/etc/proxy/config.toml"),
            &ServerOverrides::default(),
            &|_| Some("value".to_string()),
        )
        .unwrap();
        assert!(config.profiles.len() > 1);
        for profile in &config.profiles {
            let name = Some((profile.name.clone(), RouteKind::Name));
            assert_eq!(route(&config, &profile.name), name);
            for alias in &profile.routing.aliases {
                let alias_route = Some((profile.name.clone(), RouteKind::Alias));
                assert_eq!(route(&config, alias), alias_route);
            }
        }
    }

    #[test]
    fn no_fallback_means_no_route() {
        let config = config("[profiles.a]\n");
        assert_eq!(route(&config, "other"), None);
    }
}
