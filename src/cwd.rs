//! Choosing the working directory Codex runs in: `metadata.cwd` if the client sent one, else the
//! profile's `default_cwd`. Both must be directories inside one of the profile's `allowed_roots` after
//! canonicalisation, so `..` and symlinks that lead out of the roots are rejected. Pure filesystem
//! reads; the caller turns an error into a 400. The caller checks again after the queue wait and hands
//! the engine the path from that second check (see `api::chat`).
//!
//! Directories created here (the default workspace and, under `~/.codex-api-proxy`, that directory
//! itself) are created mode 0700: they hold what Codex writes for the user.

use std::path::{Path, PathBuf};

use crate::config::Profile;

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
    let (candidate, from_client) = match requested {
        Some(text) => {
            let path = Path::new(text);
            if !path.is_absolute() {
                return Err(CwdError(format!(
                    "metadata.cwd must be an absolute path, got {text:?}"
                )));
            }
            (path.to_path_buf(), true)
        }
        None => {
            // The default workspace is ours: recreate it if someone deleted it while we run.
            let _ = create_private_dir_all(&profile.runtime.default_cwd);
            (profile.runtime.default_cwd.clone(), false)
        }
    };
    let canonical = std::fs::canonicalize(&candidate).map_err(|_| {
        if from_client {
            CwdError(format!(
                "metadata.cwd {:?} does not exist or cannot be read",
                candidate.display().to_string()
            ))
        } else {
            CwdError(format!(
                "the profile's default_cwd {} does not exist",
                candidate.display()
            ))
        }
    })?;
    if !canonical.is_dir() {
        return Err(CwdError(format!(
            "metadata.cwd {:?} is not a directory",
            candidate.display().to_string()
        )));
    }
    let inside = profile.runtime.allowed_roots.iter().any(|root| {
        std::fs::canonicalize(root)
            .map(|root| canonical.starts_with(&root))
            .unwrap_or(false)
    });
    if !inside {
        return Err(CwdError(format!(
            "metadata.cwd {:?} is outside the allowed roots of profile `{}`",
            candidate.display().to_string(),
            profile.name
        )));
    }
    Ok(canonical)
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
}
