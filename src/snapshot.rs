//! The config snapshot every request works from: an immutable [`Snapshot`] (config, router, one pool per
//! profile, the resolved Codex binary) published through one `ArcSwap` in [`crate::state`].
//!
//! [`Snapshot::build`] makes a complete new snapshot from a validated config, reusing the previous
//! snapshot's pool for every profile whose runtime settings did not change (so its queue and warm
//! workers carry over) and retiring the pools of changed or removed profiles. It never publishes anything
//! itself; the caller stores the result with a single `store`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::codex::launch::{self, ResolvedCodex};
use crate::config::{Config, Profile};
use crate::pool::Pool;
use crate::routing::{RouteKind, Router};

/// The resolved Codex binary and whether it runs.
#[derive(Debug, Clone)]
pub struct CodexStatus {
    pub resolved: Result<ResolvedCodex, String>,
    /// `codex --version` output, or why it could not run.
    pub version: Result<String, String>,
}

impl CodexStatus {
    pub async fn probe(codex_bin: &str) -> CodexStatus {
        let resolved = launch::resolve(codex_bin).map_err(|err| err.0);
        let version = match &resolved {
            Ok(resolved) => launch::probe_version(resolved).await.map_err(|err| err.0),
            Err(err) => Err(err.clone()),
        };
        CodexStatus { resolved, version }
    }

    /// What pools should run: the binary if it was found *and* answered `--version`.
    pub fn runnable(&self) -> Result<ResolvedCodex, String> {
        match (&self.resolved, &self.version) {
            (Ok(resolved), Ok(_)) => Ok(resolved.clone()),
            (Err(err), _) | (_, Err(err)) => Err(err.clone()),
        }
    }
}

/// One published configuration.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Router,
    /// Index-aligned with `config.profiles`.
    pub pools: Vec<Arc<Pool>>,
    pub codex: CodexStatus,
    /// Unix seconds when this snapshot was built (the `created` of `/v1/models`).
    pub created: u64,
    /// The parsed file this snapshot came from: a reload whose file parses to the same table (only
    /// comments or layout changed) is a no-op.
    pub source_table: Option<toml::Table>,
}

/// What a reload changed, by profile name.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ChangeSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl ChangeSummary {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// A resolved route: the profile, its pool, and how the name matched.
pub struct Route<'a> {
    pub profile: &'a Arc<Profile>,
    pub pool: &'a Arc<Pool>,
    pub kind: RouteKind,
}

impl Snapshot {
    /// Builds a snapshot, reusing `previous`'s pools where the runtime settings are unchanged.
    pub fn build(
        config: Config,
        generation: u64,
        codex: CodexStatus,
        previous: Option<&Snapshot>,
    ) -> (Snapshot, ChangeSummary) {
        let codex_bin = config.server.codex_bin.clone();
        let mut summary = ChangeSummary::default();
        let mut pools = Vec::with_capacity(config.profiles.len());
        for profile in &config.profiles {
            let key = profile.runtime_key(&codex_bin);
            let reused = previous.and_then(|previous| {
                previous.pool_of(&profile.name).filter(|pool| {
                    pool.profile.runtime_key(&previous.config.server.codex_bin) == key
                        && pool.codex.is_ok() == codex.runnable().is_ok()
                })
            });
            match (reused, previous.and_then(|p| p.pool_of(&profile.name))) {
                (Some(pool), _) => {
                    // Same processes, same queue; descriptive fields come from the new profile via routing.
                    if pool.profile.aliases != profile.aliases
                        || pool.profile.description != profile.description
                        || pool.profile.api_keys != profile.api_keys
                        || pool.profile.match_regex.as_ref().map(|r| r.as_str())
                            != profile.match_regex.as_ref().map(|r| r.as_str())
                    {
                        summary.changed.push(profile.name.clone());
                    } else {
                        summary.unchanged.push(profile.name.clone());
                    }
                    pools.push(pool.clone());
                }
                (None, existing) => {
                    if existing.is_some() {
                        summary.changed.push(profile.name.clone());
                    } else {
                        summary.added.push(profile.name.clone());
                    }
                    pools.push(Pool::new(profile.clone(), codex.runnable()));
                }
            }
        }
        if let Some(previous) = previous {
            for profile in &previous.config.profiles {
                if config.profile(&profile.name).is_none() {
                    summary.removed.push(profile.name.clone());
                }
            }
        }
        let router = Router::new(&config);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        (
            Snapshot {
                generation,
                config: Arc::new(config),
                router,
                pools,
                codex,
                created,
                source_table: None,
            },
            summary,
        )
    }

    /// Retires the pools of `previous` that this snapshot does not use any more.
    pub fn retire_unused(&self, previous: &Snapshot) {
        for pool in &previous.pools {
            if !self.pools.iter().any(|kept| Arc::ptr_eq(kept, pool)) {
                pool.retire();
            }
        }
    }

    pub fn pool_of(&self, profile: &str) -> Option<&Arc<Pool>> {
        self.config
            .profiles
            .iter()
            .position(|p| p.name == profile)
            .map(|index| &self.pools[index])
    }

    /// The profile serving `model`.
    pub fn route(&self, model: &str) -> Option<Route<'_>> {
        self.router
            .route(&self.config, model)
            .map(|(index, kind)| Route {
                profile: &self.config.profiles[index],
                pool: &self.pools[index],
                kind,
            })
    }

    /// Every model name a client may send: profile names and aliases.
    pub fn model_names(&self) -> Vec<String> {
        self.config
            .profiles
            .iter()
            .flat_map(|p| std::iter::once(p.name.clone()).chain(p.aliases.iter().cloned()))
            .collect()
    }

    /// Per-profile readiness: `Ok(())` or the reason.
    pub fn readiness(&self) -> BTreeMap<String, Result<(), String>> {
        self.config
            .profiles
            .iter()
            .zip(&self.pools)
            .map(|(profile, pool)| {
                let status = pool.codex.as_ref().map(|_| ()).map_err(Clone::clone);
                (profile.name.clone(), status)
            })
            .collect()
    }
}
