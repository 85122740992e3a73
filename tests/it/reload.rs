//! End-to-end: live reload of the config file. The real proxy binary, the real Codex CLI, the mock model.
//! Every way of saving (in place, rename, Kubernetes symlink swap), SIGHUP, `POST /admin/reload` and the
//! poll fallback apply a change; bursts of saves end with the last content; invalid files keep the old
//! config serving and report the error; requests in flight finish on their old settings; continuous
//! load across reloads loses nothing; pools of unchanged profiles survive reloads.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, model_ids, send_signal, App, TestEnv};

/// How long a change may take to show before a test gives up (a deadline, not a measurement).
const APPLY_DEADLINE: Duration = Duration::from_secs(15);

/// A config file with `[server]` (plus `server_extra`) and the given `(name, extra)` profiles.
fn config(env: &TestEnv, server_extra: &str, profiles: &[(&str, &str)]) -> String {
    let mut text = env.server(server_extra);
    for (name, extra) in profiles {
        text.push_str(&env.profile(name, extra));
    }
    text
}

/// Starts the proxy on `path` with extra environment variables.
async fn start_with(env: &TestEnv, path: &Path, vars: &[(&str, &str)]) -> App {
    let mut command = env.command();
    command
        .args(["start", "--foreground", "--port", "0", "--config"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut app = App::spawn(command).await;
    app.config_path = Some(path.to_path_buf());
    app
}

/// Saves like `echo > file`: truncate and write the same inode.
fn save_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Saves like most editors: write a temporary file next to it, then rename it over the config.
fn save_by_rename(path: &Path, text: &str) {
    let temporary = path.with_file_name(".config.toml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

async fn ready_config(app: &App) -> Value {
    ready_config_keyed(app, None).await
}

/// [`ready_config`] on a server with keys: `/ready` needs a server key then.
async fn ready_config_keyed(app: &App, key: Option<&str>) -> Value {
    let mut request = App::client().get(app.url("/ready"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let ready: Value = request.send().await.unwrap().json().await.unwrap();
    ready["config"].clone()
}

async fn generation(app: &App) -> u64 {
    ready_config(app).await["generation"].as_u64().unwrap()
}

async fn pool_id(app: &App, profile: &str) -> u64 {
    pool_id_keyed(app, profile, None).await
}

/// [`pool_id`] on a server with keys: `/metrics` needs a server key then.
async fn pool_id_keyed(app: &App, profile: &str, key: Option<&str>) -> u64 {
    let mut request = App::client().get(app.url("/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let metrics: Value = request.send().await.unwrap().json().await.unwrap();
    metrics["profiles"][profile]["pool"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pool id for {profile}: {metrics}"))
}

/// Whether `model` routes (GET /v1/models/{model}).
async fn routable(app: &App, model: &str, key: Option<&str>) -> bool {
    let mut request = App::client().get(app.url(&format!("/v1/models/{model}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let status = request.send().await.unwrap().status().as_u16();
    assert!(
        status == 200 || status == 404,
        "GET /v1/models/{model}: {status}"
    );
    status == 200
}

/// Waits until `model` routes and returns how long that took from `since`.
async fn wait_routable(app: &App, model: &str, key: Option<&str>, since: Instant) -> Duration {
    loop {
        if routable(app, model, key).await {
            return since.elapsed();
        }
        if since.elapsed() > APPLY_DEADLINE {
            panic!(
                "`{model}` never became routable; /ready config: {}\noutput:\n{}",
                ready_config(app).await,
                app.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `/ready`'s `config` block satisfies `done` and returns it.
async fn wait_config(app: &App, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let config = ready_config(app).await;
        if done(&config) {
            return config;
        }
        if started.elapsed() > APPLY_DEADLINE {
            panic!("{what}: never happened; /ready config: {config}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A plain request that must succeed with `reply`.
async fn answers(app: &App, model: &str, reply: &str) {
    let (status, body) = app
        .chat_json(&chat_body(model, &format!("mock:reply={reply}")))
        .await;
    assert_eq!(status, 200, "{model}: {body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        reply.replace('_', " "),
        "{body}"
    );
}

/// The 1-based number of the last line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .rposition(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {text}"))
        + 1
}

#[tokio::test]
async fn in_place_saves_apply_and_other_changes_do_nothing() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "", &[("alpha", "")])).await;
    let path = app.config_path.clone().unwrap();
    assert!(!routable(&app, "beta", None).await);
    let alpha_pool = pool_id(&app, "alpha").await;

    let saved = Instant::now();
    save_in_place(&path, &config(&env, "", &[("alpha", ""), ("beta", "")]));
    let took = wait_routable(&app, "beta", None, saved).await;
    println!("in-place save → beta routable: {took:?}");
    answers(&app, "beta", "beta_answers").await;
    let status = ready_config(&app).await;
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(status["reloads_ok"], 1, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");
    assert!(status["watch"].as_str().unwrap().starts_with("notify+poll"));
    // The unchanged profile kept its pool.
    assert_eq!(pool_id(&app, "alpha").await, alpha_pool);
    let beta_pool = pool_id(&app, "beta").await;

    // Only comments and layout change: a no-op. Other files in the directory change: nothing.
    save_in_place(
        &path,
        &format!(
            "# edited by hand\n\n{}\n# the end\n",
            config(&env, "", &[("alpha", ""), ("beta", "")])
        ),
    );
    for index in 0..20 {
        std::fs::write(env.path().join("notes.txt"), format!("note {index}\n")).unwrap();
    }
    std::fs::write(env.path().join("other.toml"), "not = [valid").unwrap();
    std::fs::rename(
        env.path().join("other.toml"),
        env.path().join("other2.toml"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = ready_config(&app).await;
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(status["reloads_failed"], 0, "{status}");
    assert_eq!(pool_id(&app, "alpha").await, alpha_pool);
    assert_eq!(pool_id(&app, "beta").await, beta_pool);

    // Deleted (some editors delete, then write): still serving, no error; recreated: applied.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(routable(&app, "beta", None).await);
    assert_eq!(ready_config(&app).await["last_error"], Value::Null);
    let saved = Instant::now();
    save_in_place(&path, &config(&env, "", &[("alpha", ""), ("gamma", "")]));
    let took = wait_routable(&app, "gamma", None, saved).await;
    println!("delete + recreate → gamma routable: {took:?}");
    assert!(!routable(&app, "beta", None).await);
    assert_eq!(model_ids(&app.base_url, None).await, vec!["alpha", "gamma"]);
    assert_eq!(generation(&app).await, 3);
    assert_eq!(pool_id(&app, "alpha").await, alpha_pool);
    answers(&app, "alpha", "still_alpha").await;
}

#[tokio::test]
async fn rename_saves_apply() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "", &[("alpha", "")])).await;
    let path = app.config_path.clone().unwrap();

    // Write a temporary file, rename it over the config (the inode changes).
    let saved = Instant::now();
    save_by_rename(&path, &config(&env, "", &[("alpha", ""), ("beta", "")]));
    let took = wait_routable(&app, "beta", None, saved).await;
    println!("rename save → beta routable: {took:?}");

    // Backup-style: move the old file away, write a new one, delete the backup.
    let saved = Instant::now();
    let backup = path.with_file_name("config.toml~");
    std::fs::rename(&path, &backup).unwrap();
    std::fs::write(&path, config(&env, "", &[("alpha", ""), ("gamma", "")])).unwrap();
    std::fs::remove_file(&backup).unwrap();
    let took = wait_routable(&app, "gamma", None, saved).await;
    println!("backup-rename save → gamma routable: {took:?}");
    assert_eq!(model_ids(&app.base_url, None).await, vec!["alpha", "gamma"]);
    answers(&app, "gamma", "gamma_answers").await;
    let status = ready_config(&app).await;
    assert_eq!(status["reloads_failed"], 0, "{status}");
}

/// A Kubernetes ConfigMap volume: `config.toml -> ..data/config.toml`, `..data -> ..<version>`; an update
/// writes a new version directory and renames a new `..data` link over the old one.
struct ConfigMapDir {
    dir: PathBuf,
    version: usize,
}

impl ConfigMapDir {
    fn new(dir: PathBuf, text: &str) -> ConfigMapDir {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = ConfigMapDir { dir, version: 0 };
        volume.update(text);
        std::os::unix::fs::symlink("..data/config.toml", volume.path()).unwrap();
        volume
    }

    fn path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn update(&mut self, text: &str) {
        let old = format!("..2026_{}", self.version);
        self.version += 1;
        let new = format!("..2026_{}", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        std::fs::write(self.dir.join(&new).join("config.toml"), text).unwrap();
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
    }
}

#[tokio::test]
async fn kubernetes_symlink_swaps_apply() {
    let env = TestEnv::new().await;
    let mut volume = ConfigMapDir::new(
        env.path().join("configmap"),
        &config(&env, "", &[("alpha", "")]),
    );
    let app = start_with(&env, &volume.path(), &[]).await;
    assert!(!routable(&app, "beta", None).await);

    let saved = Instant::now();
    volume.update(&config(&env, "", &[("alpha", ""), ("beta", "")]));
    let took = wait_routable(&app, "beta", None, saved).await;
    println!("symlink swap → beta routable: {took:?}");

    // The second swap is seen too (the watch follows the new link).
    let saved = Instant::now();
    volume.update(&config(&env, "", &[("alpha", ""), ("gamma", "")]));
    let took = wait_routable(&app, "gamma", None, saved).await;
    println!("second symlink swap → gamma routable: {took:?}");
    assert!(!routable(&app, "beta", None).await);
    answers(&app, "gamma", "from_the_configmap").await;
    let status = ready_config(&app).await;
    assert_eq!(status["generation"], 3, "{status}");
    assert_eq!(status["reloads_failed"], 0, "{status}");
}

#[tokio::test]
async fn edits_of_a_symlinked_file_in_another_directory_apply() {
    let env = TestEnv::new().await;
    // `conf/config.toml -> ../dotfiles/proxy.toml`: edits happen in `dotfiles/`, which the link's own
    // directory never sees.
    let dotfiles = env.path().join("dotfiles");
    let conf = env.path().join("conf");
    std::fs::create_dir_all(&dotfiles).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    let target = dotfiles.join("proxy.toml");
    std::fs::write(&target, config(&env, "", &[("alpha", "")])).unwrap();
    std::os::unix::fs::symlink("../dotfiles/proxy.toml", conf.join("config.toml")).unwrap();
    // No poll within the test: only the watcher can see the edit.
    let app = start_with(
        &env,
        &conf.join("config.toml"),
        &[("CODEX_PROXY_CONFIG_POLL_MS", "600000")],
    )
    .await;

    let saved = Instant::now();
    save_in_place(&target, &config(&env, "", &[("alpha", ""), ("beta", "")]));
    let took = wait_routable(&app, "beta", None, saved).await;
    println!("edit of the link target → beta routable: {took:?}");
    assert_eq!(ready_config(&app).await["reloads_failed"], 0);
}

#[tokio::test]
async fn poll_only_mode_applies_changes() {
    let env = TestEnv::new().await;
    let path = env.write_config(&config(&env, "", &[("alpha", "")]));
    let app = start_with(
        &env,
        &path,
        &[
            ("CODEX_PROXY_CONFIG_WATCH", "poll"),
            ("CODEX_PROXY_CONFIG_POLL_MS", "300"),
        ],
    )
    .await;
    assert_eq!(ready_config(&app).await["watch"], "poll (300 ms)");
    let saved = Instant::now();
    save_in_place(&path, &config(&env, "", &[("alpha", ""), ("beta", "")]));
    let took = wait_routable(&app, "beta", None, saved).await;
    println!("poll (300 ms) → beta routable: {took:?}");
    answers(&app, "beta", "polled").await;
}

#[tokio::test]
async fn sighup_applies_a_change_and_reports_restart_required() {
    let env = TestEnv::new().await;
    let path = env.write_config(&config(&env, "", &[("alpha", "")]));
    // No watcher and no poll within the test: only the signal can apply the change.
    let app = start_with(
        &env,
        &path,
        &[
            ("CODEX_PROXY_CONFIG_WATCH", "poll"),
            ("CODEX_PROXY_CONFIG_POLL_MS", "600000"),
        ],
    )
    .await;
    // The watcher checks the file once as it starts (a change made since the first load is applied at
    // once): save only after that check, or the change would not wait for the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready_config(&app).await["watch"] != "poll (600000 ms)" {
        assert!(Instant::now() < deadline, "the watcher never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    save_in_place(
        &path,
        &config(&env, "host = \"localhost\"", &[("alpha", ""), ("beta", "")]),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!routable(&app, "beta", None).await);

    let signalled = Instant::now();
    send_signal(app.pid(), libc::SIGHUP);
    let took = wait_routable(&app, "beta", None, signalled).await;
    println!("SIGHUP → beta routable: {took:?}");
    answers(&app, "beta", "after_sighup").await;
    // The host cannot change without a restart; everything else was applied.
    let status = ready_config(&app).await;
    let required = status["restart_required"].to_string();
    assert!(
        required.contains("host (127.0.0.1 → localhost)"),
        "{status}"
    );
    assert_eq!(status["generation"], 2, "{status}");
    app.wait_for_line("restart required for: host").await;
}

#[tokio::test]
async fn admin_reload_reports_changes_and_new_access_rules_apply_to_a_kept_pool() {
    let env = TestEnv::new().await;
    let server = "api_keys = [\"server-key\"]";
    let path = env.write_config(&config(&env, server, &[("alpha", ""), ("beta", "")]));
    let app = start_with(
        &env,
        &path,
        &[
            ("CODEX_PROXY_CONFIG_WATCH", "poll"),
            ("CODEX_PROXY_CONFIG_POLL_MS", "600000"),
        ],
    )
    .await;
    let alpha_pool = pool_id_keyed(&app, "alpha", Some("server-key")).await;
    let reload = |key: Option<&'static str>| {
        let mut request = App::client().post(app.url("/admin/reload"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(reload(None).await.0, 401);
    assert_eq!(reload(Some("wrong")).await.0, 401);

    // alpha keeps its runtime settings (so its pool) but gets an alias, a description and its own key.
    let second = config(
        &env,
        server,
        &[
            (
                "alpha",
                "aliases = [\"a1\"]\ndescription = \"relabelled\"\napi_keys = [\"alpha-key\"]",
            ),
            ("gamma", ""),
        ],
    );
    save_in_place(&path, &second);
    let requested = Instant::now();
    let (status, body) = reload(Some("server-key")).await;
    println!("POST /admin/reload answered in {:?}", requested.elapsed());
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["reload"],
        json!({
            "generation": 2,
            "applied": true,
            "added": ["gamma"],
            "changed": ["alpha"],
            "removed": ["beta"],
            "unchanged": [],
            "restart_required": [],
        })
    );
    assert_eq!(
        pool_id_keyed(&app, "alpha", Some("server-key")).await,
        alpha_pool
    );

    // Routing and authorisation use the new profile, although the old pool runs it.
    let request = chat_body("a1", "mock:reply=relabelled_alpha");
    assert_eq!(app.chat_with_key(&request, None).await.status(), 401);
    assert_eq!(
        app.chat_with_key(&request, Some("server-key"))
            .await
            .status(),
        403
    );
    let response = app.chat_with_key(&request, Some("alpha-key")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "relabelled alpha");
    // A profile key opens only the profiles that list it (README, Safety), not the unrestricted gamma.
    assert_eq!(
        model_ids(&app.base_url, Some("alpha-key")).await,
        vec!["alpha"]
    );
    let (_, entry) = {
        let response = App::client()
            .get(app.url("/v1/models/a1"))
            .bearer_auth("alpha-key")
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(entry["description"], "relabelled", "{entry}");
    let gone = app
        .chat_with_key(&chat_body("beta", "hi"), Some("server-key"))
        .await;
    assert_eq!(gone.status(), 404);
    // A profile key is not an admin key.
    assert_eq!(reload(Some("alpha-key")).await.0, 401);

    // The same file again: nothing to do.
    let (status, body) = reload(Some("server-key")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reload"]["applied"], false);
    assert_eq!(body["reload"]["generation"], 2);

    // An invalid file: the error, with its line, and generation 2 keeps serving.
    let broken = format!("{second}[profiles.delta]\nmatch = \"(\"\n");
    save_in_place(&path, &broken);
    let (status, body) = reload(Some("server-key")).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    let line = line_of(&broken, "match = \"(\"");
    assert!(
        message.contains(&format!("config.toml:{line}: profile `delta`")),
        "{message}"
    );
    assert_eq!(
        ready_config_keyed(&app, Some("server-key")).await["generation"],
        2
    );
    assert_eq!(
        ready_config_keyed(&app, Some("server-key")).await["reloads_failed"],
        1
    );
}

#[tokio::test]
async fn ten_saves_within_100ms_end_with_the_last_one_applied_once() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "", &[("alpha", "")])).await;
    let path = app.config_path.clone().unwrap();
    let before = generation(&app).await;

    let started = Instant::now();
    for index in 0..10 {
        let name = format!("burst{index}");
        save_by_rename(&path, &config(&env, "", &[("alpha", ""), (&name, "")]));
        if index < 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let burst = started.elapsed();
    let took = wait_routable(&app, "burst9", None, started).await;
    // Let any late reload happen before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = ready_config(&app).await;
    let reloads = status["generation"].as_u64().unwrap() - before;
    println!("10 saves in {burst:?}; last applied after {took:?}; {reloads} reload(s) applied");
    assert_eq!(
        model_ids(&app.base_url, None).await,
        vec!["alpha", "burst9"]
    );
    assert!((1..=3).contains(&reloads), "{reloads} reloads: {status}");
    assert_eq!(status["reloads_failed"], 0, "{status}");
    answers(&app, "burst9", "last_one").await;
}

#[tokio::test]
async fn invalid_files_keep_the_old_config_serving_and_fixing_recovers() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "", &[("alpha", "")])).await;
    let path = app.config_path.clone().unwrap();
    let alpha_pool = pool_id(&app, "alpha").await;
    let unset = "CODEX_PROXY_RELOAD_TEST_UNSET";
    assert!(std::env::var_os(unset).is_none());

    let base = config(&env, "", &[("alpha", "")]);
    let cases: Vec<(&str, String, &str, Vec<String>)> = vec![
        (
            "invalid TOML",
            format!("{base}[profiles.beta]\nmodel = \n"),
            "model = ",
            vec![],
        ),
        (
            "bad regex",
            format!("{base}[profiles.beta]\nmatch = \"gpt-(\"\n"),
            "match = ",
            vec![
                "profile `beta`".into(),
                "not a valid regular expression".into(),
            ],
        ),
        (
            "duplicate alias",
            format!("{base}[profiles.beta]\naliases = [\"alpha\"]\n"),
            "[profiles.beta]",
            vec![
                "profile `beta`".into(),
                "the model name `alpha` is already used by profile `alpha`".into(),
            ],
        ),
        (
            "unset variable",
            format!("{base}[profiles.beta]\nproxy = \"${{{unset}}}\"\n"),
            "proxy = ",
            vec!["profile `beta`".into(), unset.into()],
        ),
    ];
    let mut failed = 0;
    for (what, text, needle, expected) in &cases {
        // By rename: a save in place can be read while truncated, which is one more failure and would
        // throw the count off (it did once under load: "no profiles" instead of the case's error).
        save_by_rename(&path, text);
        failed += 1;
        let status = wait_config(&app, what, |c| c["reloads_failed"] == failed).await;
        let error = status["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let line = line_of(text, needle);
        assert!(
            error.contains(&format!("config.toml:{line}:")),
            "{what}: line {line} not in {error}"
        );
        for part in expected {
            assert!(
                error.contains(part.as_str()),
                "{what}: {part:?} not in {error}"
            );
        }
        assert_eq!(status["generation"], 1, "{what}: {status}");
        let metrics = app.get_json("/metrics").await.1;
        assert_eq!(metrics["config"]["last_error"], status["last_error"]);
        assert_eq!(metrics["config"]["reloads_failed"], failed);
        assert!(routable(&app, "alpha", None).await, "{what}");
        assert!(!routable(&app, "beta", None).await, "{what}");
        println!("{what}: {error}");
    }
    // The same bad file again (SIGHUP): counted, not logged a second time.
    send_signal(app.pid(), libc::SIGHUP);
    failed += 1;
    wait_config(&app, "second failure", |c| c["reloads_failed"] == failed).await;
    let logged = app
        .output()
        .lines()
        .filter(|line| line.contains("config reload rejected") && line.contains(unset))
        .count();
    assert_eq!(logged, 1, "{}", app.output());
    answers(&app, "alpha", "old_config_serves").await;
    assert_eq!(pool_id(&app, "alpha").await, alpha_pool);

    // A half-written file is just another error; the complete write applies. The half is put in
    // place by rename so that exactly one failure is counted.
    let fixed = config(&env, "", &[("alpha", ""), ("beta", "")]);
    let cut = fixed.rfind("codex_config").unwrap() + 20;
    save_by_rename(&path, &fixed[..cut]);
    failed += 1;
    wait_config(&app, "half-written file", |c| c["reloads_failed"] == failed).await;
    let saved = Instant::now();
    save_in_place(&path, &fixed);
    let took = wait_routable(&app, "beta", None, saved).await;
    println!("fixed file → beta routable: {took:?}");
    let status = ready_config(&app).await;
    assert_eq!(status["last_error"], Value::Null, "{status}");
    assert_eq!(status["generation"], 2, "{status}");
    assert_eq!(status["reloads_ok"], 1, "{status}");
    assert_eq!(pool_id(&app, "alpha").await, alpha_pool);
    answers(&app, "beta", "recovered").await;
}

#[tokio::test]
async fn streams_in_flight_finish_on_their_old_settings() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &config(
            &env,
            "",
            &[("steady", "description = \"v1\""), ("gone", "")],
        ),
    )
    .await;
    let path = app.config_path.clone().unwrap();
    let steady_pool = pool_id(&app, "steady").await;
    let app = Arc::new(app);
    let stream = |model: &'static str| {
        let app = app.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut body = chat_body(
                model,
                "mock:deltas=8 mock:delay_ms=250 mock:reply=finished_on_old_settings",
            );
            body["stream"] = json!(true);
            let response = app.chat(&body).await;
            assert_eq!(response.status(), 200);
            (App::sse(response).await, started.elapsed())
        })
    };
    let steady = stream("steady");
    let gone = stream("gone");
    // Both Codex runs have reached the model: the reload lands mid-answer.
    assert!(env.mock.wait_for_requests(2, APPLY_DEADLINE).await);

    // `steady` changes its model and limits (a new pool); `gone` is removed.
    let saved = Instant::now();
    save_by_rename(
        &path,
        &config(
            &env,
            "",
            &[("steady", "description = \"v2\"\nmax_concurrency = 2")],
        )
        .replace("model = \"mock-model\"", "model = \"mock-model-v2\""),
    );
    wait_config(&app, "reload", |c| c["generation"] == 2).await;
    println!(
        "reload applied {:?} after the save, mid-stream",
        saved.elapsed()
    );
    assert!(!routable(&app, "gone", None).await);
    assert_eq!(app.chat_json(&chat_body("gone", "hi")).await.0, 404);
    assert_ne!(pool_id(&app, "steady").await, steady_pool);

    for (name, handle) in [("steady", steady), ("gone", gone)] {
        let (transcript, took) = handle.await.unwrap();
        println!("{name}: stream finished after {took:?}");
        assert!(transcript.done(), "{name}: {:?}", transcript.data);
        assert_eq!(transcript.content(), "finished on old settings", "{name}");
    }
    // New requests run on the new settings.
    answers(&app, "steady", "new_settings").await;
    let models: Vec<String> = env
        .mock
        .requests()
        .iter()
        .map(|request| request.model().unwrap_or_default())
        .collect();
    assert_eq!(models, vec!["mock-model", "mock-model", "mock-model-v2"]);
    // The one error is the 404 for the removed profile.
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["errors_by_status"], json!({"404": 1}), "{metrics}");
}

#[tokio::test]
async fn a_request_that_routed_before_a_reload_is_served_by_the_pool_it_chose() {
    use futures_util::StreamExt;
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "", &[("steady", "")])).await;
    let path = app.config_path.clone().unwrap();
    let old_pool = pool_id(&app, "steady").await;

    // The request's headers and half its body arrive; the rest only after the reload. The proxy has
    // loaded its snapshot (and so chosen the profile's old pool) while the body was still coming.
    let body = serde_json::to_vec(&chat_body("steady", "mock:reply=routed_before")).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let chunks = futures_util::stream::once(async move { head })
        .chain(futures_util::stream::once(async move {
            let _ = released.await;
            tail
        }))
        .map(Ok::<Vec<u8>, std::io::Error>);
    let request = App::client()
        .post(app.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send();
    let response = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The profile gets new limits and a new model: a new pool; the old one is replaced.
    save_by_rename(
        &path,
        &config(&env, "", &[("steady", "max_concurrency = 2")])
            .replace("model = \"mock-model\"", "model = \"mock-model-v2\""),
    );
    wait_config(&app, "reload", |c| c["generation"] == 2).await;
    assert_ne!(pool_id(&app, "steady").await, old_pool);
    release.send(()).unwrap();

    let response = response.await.unwrap().unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "routed before");
    // It ran on the settings of the snapshot it loaded; the next request runs on the new ones.
    answers(&app, "steady", "after").await;
    let models: Vec<String> = env
        .mock
        .requests()
        .iter()
        .map(|request| request.model().unwrap_or_default())
        .collect();
    assert_eq!(models, vec!["mock-model", "mock-model-v2"]);
}

#[tokio::test]
async fn continuous_load_across_reloads_loses_nothing() {
    let env = TestEnv::new().await;
    // `steady` never changes; `busy` alternates description and limits (a new pool each time);
    // `extra` comes and goes.
    let version = |odd: bool| {
        let busy = if odd {
            "description = \"odd\"\nmax_concurrency = 2\nmax_queue_size = 40"
        } else {
            "description = \"even\"\nmax_concurrency = 3\nmax_queue_size = 50"
        };
        let mut profiles = vec![("steady", "max_concurrency = 2"), ("busy", busy)];
        if odd {
            profiles.push(("extra", ""));
        }
        config(&env, "", &profiles)
    };
    let app = Arc::new(App::start(&env, &version(false)).await);
    let path = app.config_path.clone().unwrap();
    let steady_pool = pool_id(&app, "steady").await;
    let busy_pool = pool_id(&app, "busy").await;
    let before = generation(&app).await;

    let run_for = Duration::from_secs(20);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (app, stop, ok, failures) = (app.clone(), stop.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let model = if client % 2 == 0 { "steady" } else { "busy" };
            let streaming = client >= 2;
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let reply = format!("c{client}_r{round}");
                let mut body = chat_body(model, &format!("mock:reply={reply}"));
                body["stream"] = json!(streaming);
                let expected = reply.replace('_', " ");
                let response = app.chat(&body).await;
                let status = response.status().as_u16();
                let outcome = if streaming {
                    let transcript = App::sse(response).await;
                    if status == 200 && transcript.done() && transcript.content() == expected {
                        Ok(())
                    } else {
                        Err(format!("{status} {:?}", transcript.data))
                    }
                } else {
                    let text = response.text().await.unwrap_or_default();
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status == 200 && body["choices"][0]["message"]["content"] == expected {
                        Ok(())
                    } else {
                        Err(format!("{status} {text}"))
                    }
                };
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => failures
                        .lock()
                        .unwrap()
                        .push(format!("client {client} ({model}): {error}")),
                }
            }
        }));
    }

    let started = Instant::now();
    let mut saves = 0;
    let mut busy_pools = std::collections::BTreeSet::from([busy_pool]);
    while started.elapsed() < run_for {
        saves += 1;
        save_by_rename(&path, &version(saves % 2 == 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if saves % 10 == 0 {
            assert_eq!(pool_id(&app, "steady").await, steady_pool);
            busy_pools.insert(pool_id(&app, "busy").await);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let status = ready_config(&app).await;
    let reloads = status["generation"].as_u64().unwrap() - before;
    let ok = ok.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap().clone();
    println!(
        "{saves} saves in {:?}: {reloads} reloads applied, {ok} requests ok, {} failed, busy pools seen: {}",
        started.elapsed(),
        failures.len(),
        busy_pools.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(ok >= 8, "only {ok} requests completed");
    assert!(reloads >= 10, "only {reloads} reloads: {status}");
    assert_eq!(status["reloads_failed"], 0, "{status}");
    assert_eq!(pool_id(&app, "steady").await, steady_pool);
    assert!(busy_pools.len() > 1, "busy never got a new pool");
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["requests_error"], 0, "{metrics}");

    let leaked = env
        .wait_no_processes(&[app.pid()], Duration::from_secs(10))
        .await;
    assert!(leaked.is_empty(), "Codex processes left: {leaked:?}");
}
