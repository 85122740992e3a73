//! One certificate file for app-server workers, instead of the system's certificate directory.
//!
//! Codex builds an HTTP client for every turn and loads the trusted certificates each time: the
//! bundle file (`SSL_CERT_FILE`, or the system's) and every file of the certificate directory
//! (`SSL_CERT_DIR`, or `/etc/ssl/certs`) — on Debian about 290 files, most of them copies or links of
//! the bundle's certificates. Against the mock model that is about a tenth of Codex's CPU per tool-free
//! turn (34.0 against 30.5 ms, `examples/bench_codex_options.rs`).
//!
//! [`compact`] writes the union of the bundle's and the directory's certificates, once per worker
//! start, into one file in the worker's private `CODEX_HOME`, and points `SSL_CERT_FILE` at it and
//! `SSL_CERT_DIR` at an empty directory next to it. The worker trusts exactly the same certificates; a
//! certificate added to the system later is trusted from the worker's next start. Nothing changes
//! unless every file in the directory holds only PEM certificates (anything else, such as a CRL or an
//! OpenSSL `TRUSTED CERTIFICATE`, leaves the environment as it was), or when reading fails.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the system's bundle is looked for when `SSL_CERT_FILE` is unset (the usual Linux places).
const SYSTEM_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];
/// The system's certificate directory when `SSL_CERT_DIR` is unset.
const SYSTEM_DIR: &str = "/etc/ssl/certs";
/// Files larger than this are not certificate files: leave the environment alone.
const MAX_FILE: u64 = 4 << 20;
/// Directories with more files than this are left alone.
const MAX_FILES: usize = 5_000;
const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Points `env`'s `SSL_CERT_FILE` at one file holding every certificate of its bundle and directory,
/// written under `home`, and `SSL_CERT_DIR` at an empty directory. Returns whether it did.
pub fn compact(env: &mut Vec<(OsString, OsString)>, home: &Path) -> bool {
    let get = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| PathBuf::from(value))
    };
    let file = get("SSL_CERT_FILE").or_else(|| {
        SYSTEM_FILES
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
    });
    let dirs: Vec<PathBuf> = match get("SSL_CERT_DIR") {
        Some(value) => std::env::split_paths(value.as_os_str()).collect(),
        None => vec![PathBuf::from(SYSTEM_DIR)],
    };
    let Some(pem) = union(file.as_deref(), &dirs) else {
        return false;
    };
    let trust = home.join("trust");
    let empty = trust.join("no-directory");
    let bundle = trust.join("ca-certificates.pem");
    let written = std::fs::create_dir_all(&empty).and_then(|()| {
        if std::fs::read_to_string(&bundle).ok().as_deref() == Some(pem.as_str()) {
            return Ok(());
        }
        // Workers of one pool share their home and start at once: each writes its own partial file.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let partial = trust.join(format!(
            ".ca-certificates.{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&partial, &pem)?;
        std::fs::rename(&partial, &bundle)
    });
    if written.is_err() {
        return false;
    }
    env.retain(|(key, _)| key != "SSL_CERT_FILE" && key != "SSL_CERT_DIR");
    env.push(("SSL_CERT_FILE".into(), bundle.into_os_string()));
    env.push(("SSL_CERT_DIR".into(), empty.into_os_string()));
    true
}

/// The bundle's certificates, then the directories' that are not in it yet, as PEM text; `None` when
/// there is nothing to gain (no directory files) or a file is not plain PEM certificates.
fn union(file: Option<&Path>, dirs: &[PathBuf]) -> Option<String> {
    let mut seen = HashSet::new();
    let mut pem = String::new();
    if let Some(file) = file {
        for block in certificates(&read_small(file)?)? {
            if seen.insert(normalized(block)) {
                pem.push_str(block);
                pem.push('\n');
            }
        }
    }
    let mut files = Vec::new();
    for dir in dirs.iter().filter(|dir| dir.is_dir()) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_file())
            .collect();
        entries.sort();
        files.extend(entries);
    }
    if files.is_empty() || files.len() > MAX_FILES {
        return None;
    }
    for path in files {
        for block in certificates(&read_small(&path)?)? {
            if seen.insert(normalized(block)) {
                pem.push_str(block);
                pem.push('\n');
            }
        }
    }
    Some(pem)
}

fn read_small(path: &Path) -> Option<String> {
    if std::fs::metadata(path).ok()?.len() > MAX_FILE {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The `CERTIFICATE` blocks of a PEM text (each from BEGIN to END); `None` when it holds any other
/// PEM block, a block that is not base64 of one DER structure, or text that is not PEM at all.
fn certificates(text: &str) -> Option<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        if !rest[start..].starts_with(BEGIN) {
            return None;
        }
        let end = rest[start..].find(END)? + start + END.len();
        let block = &rest[start..end];
        if !well_formed(block) {
            return None;
        }
        blocks.push(block);
        rest = &rest[end..];
    }
    if blocks.is_empty() && !text.trim().is_empty() {
        return None;
    }
    Some(blocks)
}

/// Whether a certificate block is base64 of exactly one DER SEQUENCE, as every X.509 certificate is.
/// Codex reads `SSL_CERT_FILE` as a custom CA bundle too, a stricter reader than the directory's, so a
/// damaged certificate the directory's reader skips must not reach the file.
fn well_formed(block: &str) -> bool {
    use base64::Engine;
    let body: String = block[BEGIN.len()..block.len() - END.len()]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) else {
        return false;
    };
    der_sequence_len(&der) == Some(der.len())
}

/// The whole length (header included) of the DER SEQUENCE that `der` starts with.
fn der_sequence_len(der: &[u8]) -> Option<usize> {
    if der.first() != Some(&0x30) {
        return None;
    }
    let first = usize::from(*der.get(1)?);
    if first < 0x80 {
        return Some(2 + first);
    }
    let count = first & 0x7f;
    if count == 0 || count > 4 {
        return None;
    }
    let mut length = 0usize;
    for index in 0..count {
        length = (length << 8) | usize::from(*der.get(2 + index)?);
    }
    Some(2 + count + length)
}

/// A certificate block without its line breaks and spaces (the same certificate, however wrapped).
fn normalized(block: &str) -> String {
    block.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(body: &str) -> String {
        format!("{BEGIN}\n{body}\n{END}\n")
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.crt");
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::write(&bundle, format!("{}{}", cert("MAMCAQU="), cert("MAMCAQY="))).unwrap();
        std::fs::write(certs.join("a.pem"), cert("MAMCAQU=")).unwrap();
        std::fs::write(certs.join("local.pem"), cert("MAMC\nAQc=")).unwrap();
        std::os::unix::fs::symlink(certs.join("a.pem"), certs.join("1a2b3c4d.0")).unwrap();
        (dir, bundle, certs)
    }

    fn env_of(bundle: &Path, certs: &Path) -> Vec<(OsString, OsString)> {
        vec![
            ("PATH".into(), "/bin".into()),
            ("SSL_CERT_FILE".into(), bundle.into()),
            ("SSL_CERT_DIR".into(), certs.into()),
        ]
    }

    #[test]
    fn the_worker_trusts_the_bundle_and_the_directory_from_one_file() {
        let (dir, bundle, certs) = setup();
        let home = dir.path().join("home");
        let mut env = env_of(&bundle, &certs);
        assert!(compact(&mut env, &home));
        let value = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| PathBuf::from(value))
                .unwrap()
        };
        let file = std::fs::read_to_string(value("SSL_CERT_FILE")).unwrap();
        // Every certificate once, the bundle's first, however it was wrapped.
        assert_eq!(
            file,
            format!(
                "{}{}{}",
                cert("MAMCAQU="),
                cert("MAMCAQY="),
                cert("MAMC\nAQc=")
            )
        );
        let empty = value("SSL_CERT_DIR");
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        assert!(empty.starts_with(&home) && value("SSL_CERT_FILE").starts_with(&home));
        assert_eq!(env.len(), 3, "{env:?}");
        // A second start finds the file as it should be.
        let mut again = env_of(&bundle, &certs);
        assert!(compact(&mut again, &home));
        assert_eq!(again, env);
    }

    #[test]
    fn anything_but_pem_certificates_leaves_the_environment_alone() {
        for odd in [
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_string(),
            "-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED CERTIFICATE-----\n"
                .to_string(),
            "\u{30}\u{82}binary".to_string(),
            format!("{BEGIN}\nunterminated\n"),
            // Not base64, and base64 of something that is not one DER structure.
            format!("{BEGIN}\n%%%%\n{END}\n"),
            format!("{BEGIN}\nQUFB\n{END}\n"),
            format!("{BEGIN}\nMAMCAQUA\n{END}\n"),
        ] {
            let (dir, bundle, certs) = setup();
            std::fs::write(certs.join("odd.crt"), odd).unwrap();
            let mut env = env_of(&bundle, &certs);
            let before = env.clone();
            assert!(!compact(&mut env, &dir.path().join("home")));
            assert_eq!(env, before);
        }
    }

    #[test]
    fn an_empty_or_missing_directory_changes_nothing() {
        let (dir, bundle, certs) = setup();
        for entry in std::fs::read_dir(&certs).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let mut env = env_of(&bundle, &certs);
        assert!(!compact(&mut env, &dir.path().join("home")));
        let mut env = env_of(&bundle, &dir.path().join("missing"));
        assert!(!compact(&mut env, &dir.path().join("home")));
    }
}
