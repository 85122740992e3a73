//! The scale-out recipe, run for real: two proxy instances (the real binary, the real Codex CLI, the
//! mock model) behind Debian's nginx on loopback with `deploy/nginx/codex-api-proxy.conf` (its
//! upstream lines pointed at the two instances, its `listen` at a free port, wrapped in a minimal
//! main config with a temporary prefix).
//!
//! It shows, reading each instance's `/metrics`: requests spread across both; a config edit applied
//! to both takes effect on both; a tool-call round trip whose second request lands on the other
//! instance completes by replay; and killing an instance (SIGKILL) loses no request that had not
//! started on it, because nginx moves a request whose connection is refused to the other instance.

use crate::support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, send_signal, App, TestEnv};
use support::mock_model::TOOL_REPLY_PREFIX;

const KEY: &str = "sk-scale-out-key-9012";
const NGINX: &str = "/usr/sbin/nginx";

/// nginx in the foreground with a private prefix; killed on drop.
struct Nginx {
    child: Child,
    base_url: String,
    prefix: PathBuf,
}

impl Nginx {
    /// Starts nginx with the recipe's server block, upstream set to `instances`.
    fn start(dir: &Path, instances: &[u16]) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "the scale-out test needs Debian's nginx at {NGINX}: `sudo apt-get install -y nginx` (scripts/test.sh installs it)"
        );
        let recipe = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/codex-api-proxy.conf"),
        )
        .unwrap();
        let port = free_port();
        let mut site = String::new();
        let mut servers_written = false;
        for line in recipe.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("server ") && trimmed.ends_with(';') {
                if !servers_written {
                    for instance in instances {
                        site.push_str(&format!(
                            "    server 127.0.0.1:{instance} max_fails=1 fail_timeout=10s;\n"
                        ));
                    }
                    servers_written = true;
                }
                continue;
            }
            if trimmed == "listen 80;" {
                site.push_str(&format!("    listen 127.0.0.1:{port};\n"));
                continue;
            }
            site.push_str(line);
            site.push('\n');
        }
        assert!(servers_written, "the recipe has no upstream server lines");
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        std::fs::write(prefix.join("site.conf"), site).unwrap();
        // As root, nginx's workers would switch to an unprivileged user that cannot enter the test's
        // private directory.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let p = prefix.display();
        let main = format!(
            "{user}worker_processes 1;\nerror_log {p}/logs/error.log warn;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               log_format upstream '$request_uri $status $upstream_addr';\n\
               access_log {p}/logs/access.log upstream;\n\
               client_body_temp_path {p}/client_body;\n\
               proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n\
               scgi_temp_path {p}/scgi;\n\
               include {p}/site.conf;\n\
             }}\n"
        );
        std::fs::write(prefix.join("nginx.conf"), main).unwrap();
        let test = Command::new(NGINX)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-t")
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t rejects the recipe: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx never listened on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            prefix,
        }
    }

    /// The upstream address of every request nginx logged.
    fn upstreams(&self) -> Vec<String> {
        std::fs::read_to_string(self.prefix.join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| line.split(' ').skip(2).collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        send_signal(self.child.id(), libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One instance's config: the shared profile, its own ledger. `aliases` is the edited part.
fn instance_config(env: &TestEnv, name: &str, aliases: &str) -> String {
    let ledger = env.path().join(format!("usage-{name}.sqlite3"));
    format!(
        "{}{}",
        env.server(&format!(
            "api_keys = [\"{KEY}\"]\nusage_db = {:?}",
            ledger.display().to_string()
        )),
        env.profile(
            "fast",
            &format!("engine = \"app-server\"\nworkers = 1\naliases = [{aliases}]\n")
        ),
    )
}

async fn start_instance(env: &TestEnv, name: &str) -> (App, PathBuf) {
    let path = env.path().join(format!("{name}.toml"));
    std::fs::write(&path, instance_config(env, name, "")).unwrap();
    let args = vec!["--config".to_string(), path.display().to_string()];
    (App::start_args(env, &args).await, path)
}

async fn metrics(app: &App) -> Value {
    let response = App::client()
        .get(app.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

async fn requests_total(app: &App) -> u64 {
    metrics(app).await["requests_total"].as_u64().unwrap()
}

/// POSTs a chat request through nginx; returns the status and the body.
async fn through(nginx: &Nginx, body: &Value) -> (u16, Value) {
    let response = App::client()
        .post(format!("{}/v1/chat/completions", nginx.base_url))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
    (status, body)
}

/// The aliases `/v1/models` lists for the profile `fast`.
async fn aliases(app: &App) -> Vec<Value> {
    let response = App::client()
        .get(app.url("/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["id"] == "fast")
        .and_then(|model| model["aliases"].as_array().cloned())
        .unwrap_or_default()
}

fn lookup_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
    }}])
}

#[tokio::test]
async fn two_instances_behind_nginx_share_the_load_reloads_and_replays_and_survive_a_kill() {
    let env = TestEnv::new().await;
    let (a, a_config) = start_instance(&env, "a").await;
    let (b, b_config) = start_instance(&env, "b").await;
    let nginx = Nginx::start(env.path(), &[a.port, b.port]);

    // 1. Requests spread across both instances.
    let mut batch = Vec::new();
    for index in 0..8 {
        let body = chat_body("fast", &format!("spread {index}"));
        let nginx = &nginx;
        batch.push(async move { through(nginx, &body).await });
    }
    let results = futures_util::future::join_all(batch).await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }
    let (on_a, on_b) = (requests_total(&a).await, requests_total(&b).await);
    assert_eq!(on_a + on_b, 8);
    assert!(
        on_a >= 2 && on_b >= 2,
        "least_conn spread 8 requests as {on_a} + {on_b}"
    );
    let upstreams = nginx.upstreams();
    assert_eq!(upstreams.len(), 8, "{upstreams:?}");

    // 2. A config edit applied to both instances takes effect on both.
    std::fs::write(&a_config, instance_config(&env, "a", "\"edited-model\"")).unwrap();
    std::fs::write(&b_config, instance_config(&env, "b", "\"edited-model\"")).unwrap();
    for app in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !aliases(app).await.contains(&json!("edited-model")) {
            if Instant::now() > deadline {
                panic!(
                    "{} never reloaded: {}",
                    app.base_url,
                    metrics(app).await["config"]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(metrics(app).await["config"]["generation"], 2);
    }
    let (before_a, before_b) = (requests_total(&a).await, requests_total(&b).await);
    for index in 0..4 {
        let (status, body) =
            through(&nginx, &chat_body("edited-model", &format!("edit {index}"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (after_a, after_b) = (requests_total(&a).await, requests_total(&b).await);
    assert_eq!(after_a - before_a + after_b - before_b, 4);
    assert!(
        after_a > before_a && after_b > before_b,
        "the edited name worked on one instance only"
    );

    // 3. A tool call answered on one instance ...
    let first = json!({
        "model": "fast",
        "messages": [{"role": "user", "content": r#"look it up mock:call=lookup:{"word":"otter"}"#}],
        "tools": lookup_tool(),
    });
    let (status, body) = through(&nginx, &first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let message = body["choices"][0]["message"].clone();
    let call_id = message["tool_calls"][0]["id"].clone();
    let (now_a, now_b) = (requests_total(&a).await, requests_total(&b).await);
    let (mut served, survivor) = if now_a > after_a {
        (a, b)
    } else {
        assert!(now_b > after_b);
        (b, a)
    };

    // ... whose instance is then killed outright, with nothing in flight on it.
    let killed_port = served.port;
    send_signal(served.pid(), libc::SIGKILL);
    served.terminate(Duration::from_secs(5));
    let survivor_before = requests_total(&survivor).await;

    // The second request of the round trip lands on the other instance and completes by replay.
    let mut second = first.clone();
    let messages = second["messages"].as_array_mut().unwrap();
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "a river animal"}));
    let (status, body) = through(&nginx, &second).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}a river animal"),
        "{body}"
    );

    // 4. No request that had not started on the killed instance is lost: each one nginx tried there
    //    was refused at connect and moved to the survivor.
    let mut batch = Vec::new();
    for index in 0..6 {
        let body = chat_body("fast", &format!("after the kill {index}"));
        let nginx = &nginx;
        batch.push(async move { through(nginx, &body).await });
    }
    for (status, body) in futures_util::future::join_all(batch).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(requests_total(&survivor).await - survivor_before, 7);
    let tried_dead = nginx
        .upstreams()
        .iter()
        .filter(|upstream| upstream.contains(&format!("127.0.0.1:{killed_port}")))
        .count();
    assert!(
        tried_dead >= 1,
        "nginx never tried the killed instance: {:?}",
        nginx.upstreams()
    );
    drop(nginx);
    drop(survivor);
    // The killed instance's app-server worker saw its stdin close and ended too.
    let left = env.wait_no_processes(&[], Duration::from_secs(10)).await;
    assert!(
        left.is_empty(),
        "Codex processes outlived their proxies: {left:?}"
    );
}
