//! The deployment recipes in `deploy/` checked against the binary they deploy: the Kubernetes
//! manifests (parsed as YAML), the nginx upstream and the systemd unit must name flags the binary
//! parses, a config it accepts, the port it listens on, and probe paths it answers without a key (with
//! the Host header the probes send), and nginx's timeouts must outlast the config's.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use codex_api_proxy::cli::{Cli, Command};
use codex_api_proxy::config::{self, ServerOverrides};
use serde_yaml_ng::Value as Yaml;
use support::app::{App, TestEnv};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml(name: &str) -> Yaml {
    let path = deploy_dir().join("kubernetes").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn text(value: &Yaml) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .unwrap()
        .iter()
        .map(|item| text(item).to_string())
        .collect()
}

/// The entry of a YAML list whose `name` is `name`.
fn named<'a>(list: &'a Yaml, name: &str) -> &'a Yaml {
    list.as_sequence()
        .unwrap()
        .iter()
        .find(|item| item["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no entry named {name} in {list:?}"))
}

/// The ConfigMap's config file, validated by the binary's own config parser.
fn configmap_config() -> (String, config::Config) {
    let configmap = yaml("configmap.yaml");
    assert_eq!(configmap["kind"], "ConfigMap");
    let file = text(&configmap["data"]["config.toml"]).to_string();
    let lookup = |name: &str| (name == "CODEX_PROXY_API_KEY").then(|| "k".to_string());
    // Paths that exist inside the pod, not here, are checked by the end-to-end part below.
    let local = file.replace("/workspace", env!("CARGO_MANIFEST_DIR"));
    let parsed = config::parse(
        &local,
        Path::new("config.toml"),
        &ServerOverrides::default(),
        &lookup,
    )
    .unwrap_or_else(|errors| panic!("the ConfigMap's config is invalid: {errors}"));
    (file, parsed)
}

#[test]
fn the_kubernetes_manifests_match_the_binary() {
    let deployment = yaml("deployment.yaml");
    let service = yaml("service.yaml");
    let configmap = yaml("configmap.yaml");
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(service["kind"], "Service");
    let (_, config) = configmap_config();

    let pod = &deployment["spec"]["template"];
    let container = named(&pod["spec"]["containers"], "codex-api-proxy");

    // The command is one the binary parses: a foreground start with the mounted config.
    let command = strings(&container["command"]);
    let cli = Cli::try_parse_from(&command)
        .unwrap_or_else(|error| panic!("the container command does not parse: {error}"));
    let Command::Start(start) = cli.command else {
        panic!("the container does not run `start`: {command:?}");
    };
    assert!(start.foreground, "a container must run in the foreground");
    let config_path = start.settings.config.clone().expect("--config is given");
    let mount = named(&container["volumeMounts"], "config");
    let mount_path = text(&mount["mountPath"]);
    assert_eq!(config_path, Path::new(mount_path).join("config.toml"));
    // A subPath mount never sees ConfigMap updates; the directory mount gets the symlink swap.
    assert!(
        mount["subPath"].is_null(),
        "the config must not be mounted with subPath"
    );
    let volume = named(&pod["spec"]["volumes"], "config");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    assert!(configmap["data"]["config.toml"].is_string());

    // The grace period outlasts the proxy's own.
    let grace = start
        .settings
        .grace_seconds
        .expect("--grace-seconds is given");
    let termination = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(termination > grace, "{termination} <= {grace}");

    // Ports: the container port is the config's, the probes and the Service use it by name.
    let port = named(&container["ports"], "http");
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(config.server.port))
    );
    assert_eq!(
        config.server.host, "0.0.0.0",
        "a pod must listen beyond loopback"
    );
    let probe_ports = [
        &container["readinessProbe"]["httpGet"]["port"],
        &container["livenessProbe"]["httpGet"]["port"],
    ];
    for probe_port in probe_ports {
        assert_eq!(probe_port, "http");
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        service["spec"]["selector"], pod["metadata"]["labels"],
        "the Service selects the pods"
    );
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        pod["metadata"]["labels"]
    );

    // Probes: readiness on /ready, liveness on /health.
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    // The kubelet sends no key, so /ready must be open to it.
    assert!(
        config.server.public_metrics || config.server.api_keys.is_empty(),
        "the readiness probe would get 401"
    );
    // The key itself comes from a Secret, not from the ConfigMap.
    let key = named(&container["env"], "CODEX_PROXY_API_KEY");
    assert!(key["valueFrom"]["secretKeyRef"].is_mapping());
    assert!(!config.server.api_keys.is_empty());
}

#[tokio::test]
async fn the_probes_get_answers_from_the_real_binary() {
    let env = TestEnv::new().await;
    let (file, _) = configmap_config();
    let deployment = yaml("deployment.yaml");
    let container = named(
        &deployment["spec"]["template"]["spec"]["containers"],
        "codex-api-proxy",
    );
    let ledger = env.path().join("usage.sqlite3");
    let local = file
        .replace("/workspace", &env.workspace.display().to_string())
        .replace(
            "/var/lib/codex-api-proxy/usage.sqlite3",
            &ledger.display().to_string(),
        );
    let path = env.write_config(&local);
    // The pod gets its Codex login from a Secret (the init container copies auth.json into
    // CODEX_HOME); here the real CLI logs the test's CODEX_HOME in with an API key.
    support::app::login_with_api_key(&env).await;
    let mut command = env.command();
    command
        .env("CODEX_PROXY_API_KEY", "deploy-test-key")
        .args([
            "start",
            "--foreground",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
        ])
        .arg("--config")
        .arg(&path)
        .arg("--codex-bin")
        .arg(support::codex_bin())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let app = App::spawn(command).await;

    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        let host = text(&named(&get["httpHeaders"], "Host")["value"]);
        let url = app.url(text(&get["path"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let response = App::client()
                .get(&url)
                .header("host", host)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            // The kubelet counts 200..400 as success.
            if (200..400).contains(&status) {
                break;
            }
            assert!(
                status == 503 && std::time::Instant::now() < deadline,
                "{probe} {url} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Without the Host header the kubelet would send the pod's address, which the proxy refuses.
    let refused = App::client()
        .get(app.url("/health"))
        .header("host", "10.1.2.3:8765")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
}

/// The value of an nginx directive (`name value;`) in `conf`, every occurrence.
fn directive(conf: &str, name: &str) -> Vec<String> {
    conf.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter_map(|line| line.strip_prefix(name))
        .filter(|rest| name.ends_with(' ') || rest.starts_with([' ', ';']))
        .map(str::trim)
        .filter(|rest| rest.ends_with(';'))
        .map(|rest| rest.trim_end_matches(';').trim().to_string())
        .collect()
}

fn seconds(value: &str) -> u64 {
    let value = value.trim();
    if let Some(minutes) = value.strip_suffix('m') {
        return minutes.parse::<u64>().unwrap() * 60;
    }
    value.trim_end_matches('s').parse().unwrap()
}

#[test]
fn the_nginx_recipe_balances_streams_and_retries_only_connection_errors() {
    let conf = std::fs::read_to_string(deploy_dir().join("nginx/codex-api-proxy.conf")).unwrap();
    assert_eq!(directive(&conf, "least_conn"), [""]);
    assert_eq!(directive(&conf, "proxy_buffering"), ["off"]);
    // Connection errors only: never `timeout`, `http_5xx` or `non_idempotent`.
    assert_eq!(directive(&conf, "proxy_next_upstream"), ["error"]);
    assert_eq!(directive(&conf, "proxy_http_version"), ["1.1"]);
    assert_eq!(directive(&conf, "proxy_set_header Host"), ["$host"]);

    // The read timeout outlasts the longest turn of the shipped config and the default.
    let (_, config) = configmap_config();
    let longest = config
        .profiles
        .iter()
        .map(|profile| (profile.runtime.timeout + profile.runtime.queue_timeout).as_secs())
        .max()
        .unwrap();
    let default_timeout = 300;
    for name in ["proxy_read_timeout", "proxy_send_timeout"] {
        let values = directive(&conf, name);
        assert_eq!(values.len(), 1, "{name}");
        let value = seconds(&values[0]);
        assert!(
            value > longest && value > default_timeout,
            "{name} {value}s"
        );
    }
    let servers = directive(&conf, "server ");
    assert!(servers.len() >= 2, "an upstream of several instances");
}

#[test]
fn the_systemd_unit_starts_the_binary_in_the_foreground() {
    let unit =
        std::fs::read_to_string(deploy_dir().join("systemd/codex-api-proxy.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
        .replace("%h", "/home/someone");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/codex-api-proxy"), "{exec}");
    let cli = Cli::try_parse_from(&words)
        .unwrap_or_else(|error| panic!("ExecStart does not parse: {error}"));
    let Command::Start(start) = cli.command else {
        panic!("ExecStart does not run `start`");
    };
    assert!(start.foreground, "systemd supervises a foreground process");
    assert!(start.settings.config.is_some());
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("WantedBy=default.target"), "a user unit");
    // systemd waits longer than the proxy's grace period before SIGKILL.
    let stop: u64 = unit
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > start.settings.grace_seconds.unwrap());
}
