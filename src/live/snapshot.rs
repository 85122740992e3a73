//! The config snapshot every request works from: an immutable [`Snapshot`] (config, router, one pool per
//! profile, the resolved Codex binary) published through one `ArcSwap` in [`crate::live::state`].
//!
//! [`Snapshot::build`] makes a complete new snapshot from a validated config, reusing the previous
//! snapshot's pool for every profile whose runtime settings did not change (so its queue and warm
//! workers carry over). It never publishes anything itself; the caller stores the result with a single
//! `store`.
//!
//! Pools are retired by reference, not by the reload: every snapshot holds a shared lease on each of its
//! pools, and a pool is retired when the last snapshot holding it is gone. A request keeps the snapshot it
//! loaded until it has been admitted, so a request that routed just before a reload is still admitted by
//! the pool it chose, while every request after the swap routes through the new snapshot and never sees
//! the old pool: replaced and removed pools take no new work and finish what they have.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::account::keys::KeyLimits;
use crate::account::login::{LoginTarget, LoginWatcher};
use crate::account::models::{CatalogTarget, ModelCatalog};
use crate::account::{home_from_env, profile_account, ProfileAccount};
use crate::codex::env::ChildEnv;
use crate::codex::launch::{self, CodexUnavailable, ResolvedCodex};
use crate::config::{Config, Profile};
use crate::engine::Engine;
use crate::pool::Pool;
use crate::routing::{RouteKind, Router};

/// The resolved Codex binary and whether it runs.
#[derive(Debug, Clone)]
pub struct CodexStatus {
    pub resolved: Result<ResolvedCodex, CodexUnavailable>,
    /// `codex --version` output, or why it could not run.
    pub version: Result<String, CodexUnavailable>,
    /// Device, inode, modification time and size of the program that answered `--version`.
    program_identity: Option<(u64, u64, i64, u64)>,
}

fn program_identity(
    resolved: &Result<ResolvedCodex, CodexUnavailable>,
) -> Option<(u64, u64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let program = &resolved.as_ref().ok()?.program;
    let meta = std::fs::metadata(program).ok()?;
    Some((
        meta.dev(),
        meta.ino(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        meta.size(),
    ))
}

impl CodexStatus {
    pub async fn probe(codex_bin: &str) -> CodexStatus {
        let resolved = launch::resolve(codex_bin);
        let program_identity = program_identity(&resolved);
        let version = match &resolved {
            Ok(resolved) => launch::probe_version(resolved).await,
            Err(err) => Err(err.clone()),
        };
        CodexStatus {
            resolved,
            version,
            program_identity,
        }
    }

    /// The status for `codex_bin` on a reload: this one again when `codex_bin` still resolves to the
    /// same, unmodified program that answered `--version`; otherwise a fresh [`CodexStatus::probe`].
    /// (Running `codex --version` is most of the time a reload takes.)
    pub async fn reprobe(&self, codex_bin: &str) -> CodexStatus {
        let resolved = launch::resolve(codex_bin);
        let same = self.version.is_ok()
            && resolved.is_ok()
            && resolved == self.resolved
            && self.program_identity.is_some()
            && program_identity(&resolved) == self.program_identity;
        if same {
            self.clone()
        } else {
            CodexStatus::probe(codex_bin).await
        }
    }

    /// What pools should run: the binary if it was found *and* answered `--version`.
    pub fn runnable(&self) -> Result<ResolvedCodex, CodexUnavailable> {
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
    /// The parsed file this snapshot came from: a reload whose file parses to the same table, in the
    /// same order (only comments or layout changed), is a no-op. See [`same_table`].
    pub source_table: Option<toml::Table>,
    /// Index-aligned with `pools`; shared with the snapshots that reuse the pool.
    leases: Vec<Arc<PoolLease>>,
    /// Index-aligned with `config.profiles`: the Codex home each profile runs with and whether it needs
    /// a login.
    pub accounts: Vec<ProfileAccount>,
    /// Keeps the login state of the homes that need one fresh while this snapshot is alive.
    pub login_watcher: Option<LoginWatcher>,
    /// The running requests and recent starts of named keys; handed on from snapshot to snapshot.
    pub key_limits: Arc<KeyLimits>,
    /// Index-aligned with `config.profiles`: the `model/list` catalog of `list_models` profiles
    /// (handed on while the profile's runtime settings stay the same).
    pub catalogs: Vec<Option<Arc<ModelCatalog>>>,
}

/// Keeps a pool in service; the last snapshot holding it retires the pool when it is dropped.
struct PoolLease(Arc<Pool>);

impl Drop for PoolLease {
    fn drop(&mut self) {
        // Retiring may start a task (app-server pools stop their workers once idle). Outside a runtime
        // (the process is ending) there is nothing left to serve, and the pool's processes die with it.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.0.retire();
        }
    }
}

/// The `model/list` catalog of each `pass_model` profile with `list_models = true`: the previous
/// snapshot's when the profile's runtime settings are unchanged (its cache carries over).
fn catalogs_of(
    config: &Config,
    runnable: &Result<ResolvedCodex, CodexUnavailable>,
    child_env: &ChildEnv,
    accounts: &[ProfileAccount],
    previous: Option<&Snapshot>,
) -> Vec<Option<Arc<ModelCatalog>>> {
    config
        .profiles
        .iter()
        .zip(accounts)
        .map(|(profile, account)| {
            if !(profile.list_models && profile.runtime.pass_model) {
                return None;
            }
            let resolved = runnable.as_ref().ok()?;
            let kept = previous.and_then(|previous| {
                let index =
                    previous.config.profiles.iter().position(|old| {
                        old.name == profile.name && old.runtime == profile.runtime
                    })?;
                previous.catalogs.get(index).cloned().flatten()
            });
            if kept.is_some() {
                return kept;
            }
            let mut args = crate::engine::app_server::worker::base_args();
            for item in profile.effective_codex_config() {
                args.push("-c".to_string());
                args.push(item);
            }
            Some(Arc::new(ModelCatalog::new(CatalogTarget {
                program: resolved.program.clone(),
                args,
                env: child_env.build(
                    std::env::vars_os(),
                    resolved,
                    profile.runtime.proxy.as_deref(),
                ),
                codex_home: account.codex_home.clone(),
            })))
        })
        .collect()
}

/// Each profile's account, and a watcher of the login state of the homes that need one (when Codex
/// runs at all: otherwise every request already fails as `codex_unavailable`).
fn accounts_of(
    config: &Config,
    runnable: &Result<ResolvedCodex, CodexUnavailable>,
    child_env: &ChildEnv,
) -> (Vec<ProfileAccount>, Option<LoginWatcher>) {
    let env = runnable
        .as_ref()
        .map(|resolved| child_env.build(std::env::vars_os(), resolved, None))
        .unwrap_or_else(|_| std::env::vars_os().collect());
    let user_home = home_from_env(env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())));
    let accounts: Vec<ProfileAccount> = config
        .profiles
        .iter()
        .map(|profile| profile_account(profile, &user_home))
        .collect();
    let Ok(resolved) = runnable else {
        return (accounts, None);
    };
    let mut targets: Vec<LoginTarget> = Vec::new();
    for account in accounts.iter().filter(|account| account.needs_login) {
        if targets.iter().any(|t| t.codex_home == account.codex_home) {
            continue;
        }
        let private = account.codex_home != user_home;
        // The user's own home is served by exec profiles: no app-server reports its quota unless it
        // is read.
        let quota_reader = (!private).then(|| CatalogTarget {
            program: resolved.program.clone(),
            args: crate::engine::app_server::worker::base_args(),
            env: env.clone(),
            codex_home: account.codex_home.clone(),
        });
        targets.push(LoginTarget {
            codex_home: account.codex_home.clone(),
            program: resolved.program.clone(),
            env: env.clone(),
            links_auth_from: private.then(|| user_home.clone()),
            quota_reader,
        });
    }
    (accounts, LoginWatcher::start(targets))
}

/// Whether two parsed config files say the same thing, *including* the order of tables and keys
/// (`toml::Table`'s own `==` ignores order, but profile order decides which `match` wins).
pub fn same_table(a: &toml::Table, b: &toml::Table) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((key_a, a), (key_b, b))| key_a == key_b && same_value(a, b))
}

fn same_value(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => same_table(a, b),
        (toml::Value::Array(a), toml::Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_value(a, b))
        }
        (a, b) => a == b,
    }
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

/// Whether the fields that are not runtime settings (routing, description, access) are equal.
fn same_routing_and_access(a: &Profile, b: &Profile) -> bool {
    a.routing == b.routing && a.access == b.access
}

/// What the previous snapshot held for a profile of the same name.
#[derive(Clone, Copy)]
enum Before {
    /// No profile of that name: the profile is added.
    Absent,
    /// A pool whose processes were shaped differently: a new pool replaces it.
    Rebuilt,
    /// A pool that serves the new profile as it is; `same` when routing and access are unchanged too.
    Reusable { index: usize, same: bool },
}

/// A resolved route: the profile, its pool, and how the name matched.
///
/// `profile` is this snapshot's profile: use it for authorisation, descriptions and logs. `pool.profile`
/// may be an older profile with the same runtime settings (a reload that only changed aliases,
/// description or `api_keys` keeps the pool).
pub struct Route<'a> {
    pub profile: &'a Arc<Profile>,
    pub pool: &'a Arc<Pool>,
    pub kind: RouteKind,
}

impl Snapshot {
    /// A first snapshot of `config` without a Codex binary, for unit tests of code that reads one.
    #[cfg(test)]
    pub fn for_tests(config: Config) -> Snapshot {
        let codex = CodexStatus {
            resolved: Err(CodexUnavailable("not used in unit tests".into())),
            version: Err(CodexUnavailable("not used in unit tests".into())),
            program_identity: None,
        };
        Snapshot::build(config, 1, codex, None).0
    }

    /// Builds a snapshot, reusing `previous`'s pools where the runtime settings are unchanged.
    pub fn build(
        config: Config,
        generation: u64,
        codex: CodexStatus,
        previous: Option<&Snapshot>,
    ) -> (Snapshot, ChangeSummary) {
        let runnable = codex.runnable();
        let child_env = Arc::new(ChildEnv::from_config(&config));
        let mut summary = ChangeSummary::default();
        let mut pools = Vec::with_capacity(config.profiles.len());
        let mut leases = Vec::with_capacity(config.profiles.len());
        for profile in &config.profiles {
            let before = previous.map_or(Before::Absent, |previous| {
                previous.before(
                    profile,
                    &config.server.codex_bin,
                    &child_env,
                    runnable.is_ok(),
                )
            });
            let names = match before {
                Before::Absent => &mut summary.added,
                Before::Rebuilt => &mut summary.changed,
                Before::Reusable { same: true, .. } => &mut summary.unchanged,
                Before::Reusable { same: false, .. } => &mut summary.changed,
            };
            names.push(profile.name.clone());
            if let (Before::Reusable { index, .. }, Some(previous)) = (before, previous) {
                // Same processes, same queue. Routing, auth and descriptions use the new profile
                // (`Route::profile`); the pool only runs it.
                leases.push(previous.leases[index].clone());
                pools.push(previous.pools[index].clone());
            } else {
                let engine = Engine::new(profile.clone(), runnable.clone(), child_env.clone());
                let pool = Pool::new(profile.clone(), engine);
                leases.push(Arc::new(PoolLease(pool.clone())));
                pools.push(pool);
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
        let source_table = config.source_table.clone();
        let (accounts, login_watcher) = accounts_of(&config, &runnable, &child_env);
        let catalogs = catalogs_of(&config, &runnable, &child_env, &accounts, previous);
        (
            Snapshot {
                generation,
                config: Arc::new(config),
                router,
                pools,
                codex,
                created,
                source_table,
                leases,
                accounts,
                login_watcher,
                key_limits: previous
                    .map_or_else(Arc::default, |previous| previous.key_limits.clone()),
                catalogs,
            },
            summary,
        )
    }

    /// What this (older) snapshot offers a profile of the next one: nothing under its name, a pool
    /// that must be rebuilt, or a pool it can keep.
    fn before(
        &self,
        profile: &Profile,
        codex_bin: &str,
        child_env: &Arc<ChildEnv>,
        runnable: bool,
    ) -> Before {
        let Some(index) = self
            .config
            .profiles
            .iter()
            .position(|p| p.name == profile.name)
        else {
            return Before::Absent;
        };
        let old_pool = &self.pools[index];
        // The pool's processes are shaped by its own profile (the one it was built with).
        let reusable = old_pool.profile.runtime == profile.runtime
            && self.config.server.codex_bin == codex_bin
            && old_pool.engine().child_env() == child_env
            && old_pool.engine().codex_runnable() == runnable;
        if !reusable {
            return Before::Rebuilt;
        }
        Before::Reusable {
            index,
            same: same_routing_and_access(&self.config.profiles[index], profile),
        }
    }

    /// The account `profile` runs under.
    pub fn account_of(&self, profile: &str) -> Option<&ProfileAccount> {
        self.config
            .profiles
            .iter()
            .position(|p| p.name == profile)
            .map(|index| &self.accounts[index])
    }

    /// The reset time (unix seconds) until which `profile`'s account is out of quota at `now`, if it
    /// is (for the fallback decision, `account::fallback::next_profile`).
    pub fn exhausted_until(&self, profile: &str, now: u64) -> Option<u64> {
        let account = self.account_of(profile)?;
        crate::account::book()
            .account(&account.codex_home)
            .exhausted_until(now)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ServerOverrides};
    use std::path::Path;

    fn config(text: &str) -> Config {
        parse(
            text,
            Path::new("/etc/proxy/c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap()
    }

    fn codex() -> CodexStatus {
        CodexStatus {
            resolved: Err(CodexUnavailable("not used".into())),
            version: Err(CodexUnavailable("not used".into())),
            program_identity: None,
        }
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn table_comparison_sees_order_but_not_comments() {
        let a = table("[profiles.a]\nmatch = \"^g\"\n[profiles.b]\nmatch = \"^g\"\n");
        let commented = table(
            "# note\n[profiles.a]\nmatch   = \"^g\" # same\n\n[profiles.b]\nmatch = \"^g\"\n",
        );
        let reordered = table("[profiles.b]\nmatch = \"^g\"\n[profiles.a]\nmatch = \"^g\"\n");
        assert!(same_table(&a, &commented));
        // `==` ignores order; profile order decides which `match` wins, so it is a change.
        assert!(a == reordered);
        assert!(!same_table(&a, &reordered));
        assert!(!same_table(
            &a,
            &table("[profiles.a]\nmatch = \"^g\"\n[profiles.b]\nmatch = \"^h\"\n")
        ));
    }

    #[test]
    fn build_reuses_pools_and_reports_changes_against_the_previous_profile() {
        let first =
            config("[profiles.keep]\n[profiles.relabel]\n[profiles.limits]\n[profiles.gone]\n");
        let (first, _) = Snapshot::build(first, 1, codex(), None);
        let second = config(
            "[profiles.keep]\n[profiles.relabel]\ndescription = \"new\"\naliases = [\"r\"]\n\
             [profiles.limits]\nmax_concurrency = 3\n[profiles.new]\n",
        );
        let (second, summary) = Snapshot::build(second, 2, codex(), Some(&first));
        assert_eq!(summary.unchanged, vec!["keep"]);
        assert_eq!(summary.changed, vec!["relabel", "limits"]);
        assert_eq!(summary.added, vec!["new"]);
        assert_eq!(summary.removed, vec!["gone"]);
        let id = |snapshot: &Snapshot, name: &str| snapshot.pool_of(name).unwrap().id;
        assert_eq!(id(&first, "keep"), id(&second, "keep"));
        assert_eq!(id(&first, "relabel"), id(&second, "relabel"));
        assert_ne!(id(&first, "limits"), id(&second, "limits"));
        // Routing uses the new profile even though the pool is the old one.
        let route = second.route("r").unwrap();
        assert_eq!(route.profile.routing.description, "new");
        assert_eq!(route.pool.id, id(&first, "relabel"));

        // The same file again: compared with generation 2's profiles, nothing changed (the reused pool
        // still carries generation 1's description).
        let third = config(
            "[profiles.keep]\n[profiles.relabel]\ndescription = \"new\"\naliases = [\"r\"]\n\
             [profiles.limits]\nmax_concurrency = 3\n[profiles.new]\n",
        );
        let (_, summary) = Snapshot::build(third, 3, codex(), Some(&second));
        assert!(summary.is_empty(), "{summary:?}");
        assert_eq!(summary.unchanged.len(), 4);
    }

    #[test]
    fn a_change_of_the_codex_environment_replaces_the_pools() {
        let with_env = |text: &str| {
            parse(
                text,
                Path::new("/etc/proxy/c.toml"),
                &ServerOverrides::default(),
                &|_| Some("value".to_string()),
            )
            .unwrap()
        };
        let base = "[server]\napi_keys = [\"${A}\"]\n[profiles.p]\n";
        let (mut previous, _) = Snapshot::build(with_env(base), 1, codex(), None);
        let variants = [
            "[server]\napi_keys = [\"${A}\"]\ncodex_env = \"minimal\"\n[profiles.p]\n",
            "[server]\napi_keys = [\"${A}\"]\npass_env = [\"X\"]\n[profiles.p]\n",
            "[server]\napi_keys = [\"${A}\"]\ncodex_log = \"error\"\n[profiles.p]\n",
            "[server]\napi_keys = [\"${B}\"]\n[profiles.p]\n",
        ];
        for (generation, text) in variants.iter().enumerate() {
            let (next, summary) = Snapshot::build(
                with_env(text),
                generation as u64 + 2,
                codex(),
                Some(&previous),
            );
            assert_eq!(summary.changed, vec!["p"], "{text}");
            assert_ne!(next.pools[0].id, previous.pools[0].id, "{text}");
            previous = next;
        }
        // The same settings again keep the pool.
        let (same, _) = Snapshot::build(with_env(variants[3]), 9, codex(), Some(&previous));
        assert_eq!(same.pools[0].id, previous.pools[0].id);
    }

    #[tokio::test]
    async fn a_pool_retires_when_the_last_snapshot_holding_it_is_gone() {
        let (first, _) = Snapshot::build(
            config("[profiles.keep]\n[profiles.gone]\n"),
            1,
            codex(),
            None,
        );
        let kept = first.pool_of("keep").unwrap().clone();
        let gone = first.pool_of("gone").unwrap().clone();
        let (second, _) = Snapshot::build(config("[profiles.keep]\n"), 2, codex(), Some(&first));
        // A request that loaded the first snapshot may still be admitted by its pools.
        assert!(!gone.is_retired());
        drop(first);
        assert!(gone.is_retired());
        assert!(!kept.is_retired());
        drop(second);
        assert!(kept.is_retired());
    }
}
