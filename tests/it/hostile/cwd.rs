//! `metadata.cwd`: escapes through `..`, symlinks, files and missing names are 400, paths inside the
//! profile's roots run Codex exactly there, and every path resolves the way the filesystem does.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use super::{check_chat_reply, check_property, openai_error, runtime, Proxy};
use super::{profile_section, server_section};
use crate::support;
use support::app::chat_body;
use support::http::short;

/// The directory tree of the cwd tests, under the test directory `base`:
///
/// ```text
/// root/ sub/deep/  ünïcödé/  file.txt  link-in -> sub  link-in-abs -> /…/root/sub  link-out -> ../outside
///       link-up -> ..  link-slash -> /  dangling -> missing  loop -> loop
/// root-link -> root      outside/      root-evil/   (a sibling whose name starts with "root")
/// ```
fn cwd_tree(base: &Path) -> PathBuf {
    use std::os::unix::fs::symlink;
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub").join("deep")).unwrap();
    std::fs::create_dir_all(root.join("ünïcödé")).unwrap();
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::create_dir_all(base.join("root-evil")).unwrap();
    std::fs::write(root.join("file.txt"), "x").unwrap();
    symlink("sub", root.join("link-in")).unwrap();
    symlink(root.join("sub"), root.join("link-in-abs")).unwrap();
    symlink("../outside", root.join("link-out")).unwrap();
    symlink("..", root.join("link-up")).unwrap();
    symlink("/", root.join("link-slash")).unwrap();
    symlink("missing", root.join("dangling")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    symlink("root", base.join("root-link")).unwrap();
    std::fs::canonicalize(&root).unwrap()
}

/// Profiles `plain` (root `root/`) and `linked` (root `root-link`, a symlink to `root/`).
fn cwd_proxy(runtime: &tokio::runtime::Runtime) -> (Proxy, PathBuf) {
    let proxy = Proxy::start(
        runtime,
        |env, fake| {
            let root = cwd_tree(env.path());
            let link = env.path().join("root-link");
            format!(
                "{}{}{}",
                server_section(fake, ""),
                profile_section("plain", &root, ""),
                profile_section("linked", &link, ""),
            )
        },
        &[],
    );
    let root = std::fs::canonicalize(proxy.env.path().join("root")).unwrap();
    (proxy, root)
}

fn cwd_body(model: &str, cwd: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "metadata": {"cwd": cwd}})
}

#[test]
fn metadata_cwd_escapes_are_400_and_inside_paths_run_there() {
    let runtime = runtime();
    let (proxy, root) = cwd_proxy(&runtime);
    let base = proxy.env.path().to_path_buf();
    let r = root.display().to_string();
    let b = base.display().to_string();

    // (profile, requested cwd, where Codex must run)
    let inside = [
        ("plain", r.clone(), r.clone()),
        ("plain", format!("{r}/sub"), format!("{r}/sub")),
        ("plain", format!("{r}/sub/"), format!("{r}/sub")),
        ("plain", format!("{r}//sub"), format!("{r}/sub")),
        ("plain", format!("{r}/./sub"), format!("{r}/sub")),
        ("plain", format!("{r}/sub/../sub"), format!("{r}/sub")),
        ("plain", format!("{r}/sub/deep/../.."), r.clone()),
        ("plain", format!("{r}/link-in"), format!("{r}/sub")),
        ("plain", format!("{r}/link-in-abs"), format!("{r}/sub")),
        (
            "plain",
            format!("{r}/link-in/deep"),
            format!("{r}/sub/deep"),
        ),
        ("plain", format!("{r}/ünïcödé"), format!("{r}/ünïcödé")),
        ("plain", format!("{b}/root-link/sub"), format!("{r}/sub")),
        ("linked", format!("{b}/root-link"), r.clone()),
        ("linked", format!("{b}/root-link/sub"), format!("{r}/sub")),
        ("linked", format!("{r}/sub"), format!("{r}/sub")),
        (
            "linked",
            format!("{b}/root-link/link-in"),
            format!("{r}/sub"),
        ),
    ];
    for (model, cwd, expected) in &inside {
        let reply = runtime
            .block_on(proxy.post(&cwd_body(model, cwd), None))
            .unwrap();
        assert_eq!(
            reply.status,
            200,
            "{model} {cwd:?}: {}",
            short(&reply.text())
        );
        check_chat_reply(&reply, Some(model)).unwrap();
        assert_eq!(proxy.last_codex_cwd(), *expected, "{model} {cwd:?}");
    }
    // Without metadata.cwd, each profile runs in its (canonical) default_cwd.
    for model in ["plain", "linked"] {
        let reply = runtime
            .block_on(proxy.post(&chat_body(model, "hi"), None))
            .unwrap();
        assert_eq!(reply.status, 200, "{}", short(&reply.text()));
        assert_eq!(proxy.last_codex_cwd(), r);
    }

    let long_name = format!("{r}/{}", "a".repeat(300));
    let long_path = format!("{r}/{}", "sub/..".repeat(1_000));
    let outside = [
        ("plain", format!("{r}/..")),
        ("plain", format!("{r}/../outside")),
        ("plain", format!("{r}/sub/../../outside")),
        ("plain", format!("{r}/link-out")),
        ("plain", format!("{r}/link-out/..")),
        ("plain", format!("{r}/link-up")),
        ("plain", format!("{r}/link-slash")),
        ("plain", format!("{r}/link-slash/etc")),
        ("plain", format!("{r}/dangling")),
        ("plain", format!("{r}/loop")),
        ("plain", format!("{r}/file.txt")),
        ("plain", format!("{r}/file.txt/..")),
        ("plain", format!("{r}/missing")),
        ("plain", format!("{b}/root-evil")),
        ("plain", format!("{b}/outside")),
        ("plain", "/".to_string()),
        ("plain", "/dev/null".to_string()),
        ("plain", "/proc/self/cwd".to_string()),
        ("plain", "relative/path".to_string()),
        ("plain", "sub".to_string()),
        ("plain", "./sub".to_string()),
        ("plain", "../root".to_string()),
        ("plain", "~".to_string()),
        ("plain", "~/x".to_string()),
        ("plain", format!(" {r}")),
        ("plain", format!("file://{r}")),
        ("plain", format!("{r}\u{0}")),
        ("plain", format!("{r}/sub\u{0}/deep")),
        ("plain", format!("{r}/sub\n")),
        ("plain", long_name),
        ("plain", long_path),
        ("linked", format!("{b}/root-link/..")),
        ("linked", format!("{b}/root-link/../outside")),
        ("linked", format!("{b}/root-link/link-out")),
        ("linked", format!("{b}/root-evil")),
    ];
    for (model, cwd) in &outside {
        let reply = runtime
            .block_on(proxy.post(&cwd_body(model, cwd), None))
            .unwrap();
        assert_eq!(
            reply.status,
            400,
            "{model} {cwd:?}: {}",
            short(&reply.text())
        );
        let error = openai_error(&reply).unwrap();
        assert_eq!(error["param"], "metadata.cwd", "{model} {cwd:?}: {error:?}");
        assert_eq!(error["type"], "invalid_request_error");
    }
}

#[test]
fn metadata_cwd_paths_resolve_like_the_filesystem() {
    let runtime = runtime();
    let (proxy, root) = cwd_proxy(&runtime);
    let base = proxy.env.path().to_path_buf();
    let start = prop::sample::select(vec![
        root.display().to_string(),
        base.join("root-link").display().to_string(),
        base.join("root").display().to_string(),
        base.join("outside").display().to_string(),
        base.display().to_string(),
        String::new(),
        "/".to_string(),
    ]);
    let part = prop::sample::select(
        &[
            "..",
            ".",
            "",
            "sub",
            "deep",
            "link-in",
            "link-in-abs",
            "link-out",
            "link-up",
            "link-slash",
            "file.txt",
            "missing",
            "ünïcödé",
            "loop",
            "dangling",
            "root",
            "root-link",
            "root-evil",
            "outside",
        ][..],
    );
    let case = (
        prop::sample::select(&["plain", "linked"][..]),
        start,
        prop::collection::vec(part, 0..5),
    );
    check_property("metadata.cwd paths", 256, case, |(model, start, parts)| {
        let cwd = if parts.is_empty() {
            start
        } else {
            format!("{start}/{}", parts.join("/"))
        };
        let profile_root = std::fs::canonicalize(if model == "plain" {
            base.join("root")
        } else {
            base.join("root-link")
        })
        .unwrap();
        let expected = Path::new(&cwd)
            .is_absolute()
            .then(|| std::fs::canonicalize(&cwd).ok())
            .flatten()
            .filter(|path| path.is_dir() && path.starts_with(&profile_root));
        let reply = runtime
            .block_on(proxy.post(&cwd_body(model, &cwd), None))
            .map_err(TestCaseError::fail)?;
        match expected {
            Some(directory) => {
                prop_assert_eq!(reply.status, 200, "{:?}: {}", cwd, short(&reply.text()));
                check_chat_reply(&reply, Some(model)).map_err(TestCaseError::fail)?;
                prop_assert_eq!(proxy.last_codex_cwd(), directory.display().to_string());
            }
            None => {
                prop_assert_eq!(reply.status, 400, "{:?}: {}", cwd, short(&reply.text()));
                let error = openai_error(&reply).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&error["param"], "metadata.cwd");
            }
        }
        Ok(())
    });
}
