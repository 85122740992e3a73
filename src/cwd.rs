//! Choosing the working directory Codex runs in: `metadata.cwd` if the client sent one, else the
//! profile's `default_cwd`. Both must be directories inside one of the profile's `allowed_roots` after
//! canonicalisation, so `..` and symlinks that lead out of the roots are rejected. Pure filesystem
//! reads; the caller turns an error into a 400. The caller checks again after the queue wait and hands
//! the engine the path from that second check (see `api::pipeline`).
//!
//! A client's `metadata.cwd` is resolved in full on every call. The profile's default is resolved in full
//! at most once per [`DEFAULT_TTL`] (per `default_cwd` and `allowed_roots`); in between, one `lstat` of the
//! cached canonical path must still find the same directory (same device and inode, not a symlink), else
//! it is resolved in full again. A directory deleted, replaced or turned into a symlink is therefore
//! noticed at once; a parent directory moved elsewhere with a symlink left in its place (the same
//! directory reached through a new path) is noticed within [`DEFAULT_TTL`].
//!
//! Directories created here (the default workspace and, under `~/.codex-api-proxy`, that directory
//! itself) are created mode 0700: they hold what Codex writes for the user.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Profile;

/// How long a resolved default directory is served from the cache before it is resolved in full again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

/// The most cached defaults; a reload that changes paths adds entries, so the cache is emptied when full.
const MAX_CACHED_DEFAULTS: usize = 64;

/// Why a requested directory was refused (the message is safe to show the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CwdError(pub String);

/// Creates the profile's default working directory if it is missing (the default workspace is empty),
/// with every missing parent, each mode 0700; directories that exist keep their mode.
pub fn ensure_default_cwd(profile: &Profile) -> std::io::Result<()> {
    create_private_dir_all(&profile.runtime.default_cwd)
}

/// `mkdir -p` whose new directories are mode 0700 (less if the umask says so).
pub fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// The canonical directory for a request.
pub fn resolve(profile: &Profile, requested: Option<&str>) -> Result<PathBuf, CwdError> {
    match requested {
        Some(text) => resolve_requested(profile, text),
        None => DEFAULTS.resolve(profile, Instant::now()),
    }
}

/// A client's `metadata.cwd`, resolved in full.
fn resolve_requested(profile: &Profile, text: &str) -> Result<PathBuf, CwdError> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(CwdError(format!(
            "metadata.cwd must be an absolute path, got {text:?}"
        )));
    }
    let canonical = std::fs::canonicalize(path).map_err(|_| {
        CwdError(format!(
            "metadata.cwd {:?} does not exist or cannot be read",
            path.display().to_string()
        ))
    })?;
    if !canonical.is_dir() {
        return Err(CwdError(format!(
            "metadata.cwd {:?} is not a directory",
            path.display().to_string()
        )));
    }
    if !inside_roots(profile, &canonical) {
        return Err(CwdError(format!(
            "metadata.cwd {:?} is outside the allowed roots of profile `{}`",
            path.display().to_string(),
            profile.name
        )));
    }
    Ok(canonical)
}

/// The profile's default directory, resolved in full: recreated if missing, canonicalised, checked.
fn resolve_default_fully(profile: &Profile) -> Result<PathBuf, CwdError> {
    let default = &profile.runtime.default_cwd;
    // The default workspace is ours: recreate it if someone deleted it while we run.
    let _ = create_private_dir_all(default);
    let canonical = std::fs::canonicalize(default).map_err(|_| {
        CwdError(format!(
            "the profile's default_cwd {} does not exist",
            default.display()
        ))
    })?;
    if !canonical.is_dir() {
        return Err(CwdError(format!(
            "the profile's default_cwd {} is not a directory",
            default.display()
        )));
    }
    if !inside_roots(profile, &canonical) {
        return Err(CwdError(format!(
            "the profile's default_cwd {} is outside the allowed roots of profile `{}`",
            default.display(),
            profile.name
        )));
    }
    Ok(canonical)
}

/// Whether the canonical `path` is inside one of the profile's roots (each canonicalised now).
fn inside_roots(profile: &Profile, path: &Path) -> bool {
    profile.runtime.allowed_roots.iter().any(|root| {
        std::fs::canonicalize(root)
            .map(|root| path.starts_with(&root))
            .unwrap_or(false)
    })
}

/// The identity of a directory: (device, inode), if `path` itself is a directory (not a symlink).
fn directory_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path).ok()?;
    metadata
        .file_type()
        .is_dir()
        .then(|| (metadata.dev(), metadata.ino()))
}

/// The process's cache of resolved defaults.
static DEFAULTS: DefaultCache = DefaultCache::new();

/// One resolved default: what it was resolved for, the result, and when.
struct CachedDefault {
    default_cwd: PathBuf,
    allowed_roots: Vec<PathBuf>,
    canonical: PathBuf,
    identity: (u64, u64),
    resolved_at: Instant,
}

/// Resolved defaults keyed by (`default_cwd`, `allowed_roots`), so profiles and snapshots that share
/// both share an entry and a reload that changes either gets a fresh one.
struct DefaultCache {
    entries: Mutex<Vec<CachedDefault>>,
    /// How many full resolutions ran (read by the tests).
    #[cfg(test)]
    full_resolutions: std::sync::atomic::AtomicUsize,
}

impl DefaultCache {
    const fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            #[cfg(test)]
            full_resolutions: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The profile's canonical default directory as of `now`.
    fn resolve(&self, profile: &Profile, now: Instant) -> Result<PathBuf, CwdError> {
        if let Some(canonical) = self.lookup(profile, now) {
            return Ok(canonical);
        }
        #[cfg(test)]
        self.full_resolutions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resolved = resolve_default_fully(profile);
        let identity = resolved.as_deref().ok().and_then(directory_identity);
        let mut entries = self.entries.lock();
        entries.retain(|entry| !Self::matches(entry, profile));
        if let (Ok(canonical), Some(identity)) = (&resolved, identity) {
            if entries.len() >= MAX_CACHED_DEFAULTS {
                entries.clear();
            }
            entries.push(CachedDefault {
                default_cwd: profile.runtime.default_cwd.clone(),
                allowed_roots: profile.runtime.allowed_roots.clone(),
                canonical: canonical.clone(),
                identity,
                resolved_at: now,
            });
        }
        resolved
    }

    /// The cached canonical default, if it is younger than [`DEFAULT_TTL`] and still the same directory.
    fn lookup(&self, profile: &Profile, now: Instant) -> Option<PathBuf> {
        let (canonical, identity) = {
            let entries = self.entries.lock();
            let entry = entries.iter().find(|entry| Self::matches(entry, profile))?;
            if now.saturating_duration_since(entry.resolved_at) >= DEFAULT_TTL {
                return None;
            }
            (entry.canonical.clone(), entry.identity)
        };
        (directory_identity(&canonical) == Some(identity)).then_some(canonical)
    }

    fn matches(entry: &CachedDefault, profile: &Profile) -> bool {
        entry.default_cwd == profile.runtime.default_cwd
            && entry.allowed_roots == profile.runtime.allowed_roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ServerOverrides};

    fn profile(root: &Path) -> Profile {
        let text = format!(
            "[profiles.a]\ndefault_cwd = {:?}\nallowed_roots = [{:?}]\n",
            root.display().to_string(),
            root.display().to_string()
        );
        let config = parse(
            &text,
            Path::new("/c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap();
        (*config.profiles[0]).clone()
    }

    #[test]
    fn accepts_inside_and_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("file.txt"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
        let profile = profile(&root);
        let canonical_root = std::fs::canonicalize(&root).unwrap();

        assert_eq!(resolve(&profile, None).unwrap(), canonical_root);
        // A default workspace created here is private, and so are its new parents.
        let mut private = profile.clone();
        private.runtime.default_cwd = dir.path().join("new").join("workspace");
        ensure_default_cwd(&private).unwrap();
        for path in [dir.path().join("new"), private.runtime.default_cwd.clone()] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        }
        let sub = root.join("sub");
        assert_eq!(
            resolve(&profile, Some(sub.to_str().unwrap())).unwrap(),
            canonical_root.join("sub")
        );
        for bad in [
            root.join("..").join("outside"),
            root.join("link-out"),
            root.join("file.txt"),
            root.join("missing"),
            PathBuf::from("relative/path"),
        ] {
            assert!(
                resolve(&profile, Some(bad.to_str().unwrap())).is_err(),
                "{} should be refused",
                bad.display()
            );
        }
    }

    /// A profile whose default is `default` and whose only root is `root`.
    fn profile_at(root: &Path, default: &Path) -> Profile {
        let mut profile = profile(root);
        profile.runtime.default_cwd = default.to_path_buf();
        profile
    }

    fn full(cache: &DefaultCache) -> usize {
        cache
            .full_resolutions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn the_default_is_resolved_once_and_then_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let profile = profile(&root);
        let canonical = std::fs::canonicalize(&root).unwrap();
        let cache = DefaultCache::new();
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(cache.resolve(&profile, now).unwrap(), canonical);
        }
        assert_eq!(full(&cache), 1);
        // Past the time to live, it is resolved in full again, once.
        let later = now + DEFAULT_TTL;
        assert_eq!(cache.resolve(&profile, later).unwrap(), canonical);
        assert_eq!(cache.resolve(&profile, later).unwrap(), canonical);
        assert_eq!(full(&cache), 2);
    }

    #[test]
    fn a_deleted_replaced_or_symlinked_default_is_noticed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let work = root.join("work");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let profile = profile_at(&root, &work);
        let canonical = std::fs::canonicalize(&work).unwrap();
        let cache = DefaultCache::new();
        let now = Instant::now();
        assert_eq!(cache.resolve(&profile, now).unwrap(), canonical);

        // Deleted: recreated (private) by the full resolution.
        std::fs::remove_dir(&work).unwrap();
        assert_eq!(cache.resolve(&profile, now).unwrap(), canonical);
        assert_eq!(full(&cache), 2);
        assert!(work.is_dir());

        // Replaced by another directory (the old one kept, so its inode is not reused).
        std::fs::rename(&work, root.join("old")).unwrap();
        std::fs::create_dir(&work).unwrap();
        assert_eq!(cache.resolve(&profile, now).unwrap(), canonical);
        assert_eq!(full(&cache), 3);

        // Turned into a symlink out of the roots: refused, and not cached.
        std::fs::remove_dir(&work).unwrap();
        std::os::unix::fs::symlink(&outside, &work).unwrap();
        for _ in 0..2 {
            let err = cache.resolve(&profile, now).unwrap_err();
            assert!(err.0.contains("outside the allowed roots"), "{err}");
        }
        assert_eq!(full(&cache), 5);
    }

    #[test]
    fn a_moved_parent_is_noticed_within_the_time_to_live() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("a").join("work")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let default = root.join("a").join("work");
        let profile = profile_at(&root, &default);
        let cache = DefaultCache::new();
        let now = Instant::now();
        cache.resolve(&profile, now).unwrap();

        // The same directory, now reached through a symlink that leads out of the roots.
        std::fs::rename(root.join("a"), outside.join("a")).unwrap();
        std::os::unix::fs::symlink(outside.join("a"), root.join("a")).unwrap();
        let err = cache.resolve(&profile, now + DEFAULT_TTL).unwrap_err();
        assert!(err.0.contains("outside the allowed roots"), "{err}");
    }

    #[test]
    fn profiles_with_other_roots_do_not_share_a_cached_default() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let allowed = profile(&root);
        let mut narrower = profile(&other);
        narrower.runtime.default_cwd = root.clone();
        let cache = DefaultCache::new();
        let now = Instant::now();
        cache.resolve(&allowed, now).unwrap();
        assert!(cache.resolve(&narrower, now).is_err());
        assert_eq!(full(&cache), 2);
    }

    #[test]
    fn a_requested_cwd_is_always_resolved_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let sub = root.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let profile = profile(&root);
        let text = sub.to_str().unwrap();
        assert!(resolve(&profile, Some(text)).is_ok());
        // Turned into a symlink out of the roots, it is refused on the very next request.
        std::fs::remove_dir(&sub).unwrap();
        std::os::unix::fs::symlink(dir.path(), &sub).unwrap();
        assert!(resolve(&profile, Some(text)).is_err());
    }
}
