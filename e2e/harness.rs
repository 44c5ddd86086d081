//! What the real-cluster tests need beyond a client: the release binary run as a process (as a pod runs it),
//! identities with a ServiceAccount token, the harness's components stopped and started (`e2e/cluster/ctl.sh`),
//! and the real node with its loopback registry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};

use super::wait_until_for;

/// The node `e2e/cluster/up.sh --real-node` starts: a kubelet with containerd.
pub const REAL_NODE: &str = "kip-real";
/// Pods must tolerate it to run on the real node (so no other test's pod pulls there).
pub const REAL_NODE_TAINT: &str = "kubernetes-image-puller.io/real-node";
pub const REAL_NODE_LABEL: &str = "kubernetes-image-puller.io/node";

/// The loopback registry of the real node (`KIP_E2E_REGISTRY`, set by `.ci/run`), e.g. `127.0.0.1:5000`.
pub fn registry() -> Option<String> {
    std::env::var("KIP_E2E_REGISTRY").ok().filter(|s| !s.is_empty())
}

/// The release binary the tests run as a process: `KIP_E2E_BIN`, else `target/release`.
pub fn release_binary() -> PathBuf {
    std::env::var_os("KIP_E2E_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/kubernetes-image-puller"),
        PathBuf::from,
    )
}

/// helm: `KIP_E2E_HELM`, else the one ci/deploy-checks.sh caches, else PATH.
pub fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("KIP_E2E_HELM") {
        return h.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cache = std::env::var("KIP_CI_CACHE").unwrap_or_else(|_| format!("{home}/.cache/kip-ci"));
    let cached = Path::new(&cache).join("bin/helm");
    if cached.exists() { cached } else { "helm".into() }
}

/// Runs `e2e/cluster/ctl.sh ACTION COMPONENT` (stop, start, restart a component of the harness).
pub fn ctl(action: &str, component: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/cluster/ctl.sh");
    let status = Command::new("bash")
        .arg(&script)
        .args([action, component])
        .status()
        .expect("run e2e/cluster/ctl.sh");
    assert!(status.success(), "ctl.sh {action} {component} failed: {status}");
}

/// Whether the real node is there and Ready; the reason when not.
pub async fn real_node(client: &Client) -> Result<(), String> {
    if registry().is_none() {
        return Err("KIP_E2E_REGISTRY unset (start the harness with e2e/cluster/up.sh --real-node)".into());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .get_opt(REAL_NODE)
        .await
        .map_err(|e| format!("get node {REAL_NODE}: {e}"))?
        .ok_or_else(|| format!("no node {REAL_NODE} (start the harness with --real-node)"))?;
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        Ok(())
    } else {
        Err(format!("node {REAL_NODE} is not Ready"))
    }
}

/// A token of `account` in `namespace` from the TokenRequest API, as kubelet mounts one into a pod.
pub async fn service_account_token(admin: &Client, namespace: &str, account: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token")
        .token
}

/// A kubeconfig file with the current context's cluster (server, CA) and `token` as the only credential.
pub fn token_kubeconfig(dir: &Path, token: &str, namespace: &str) -> PathBuf {
    let kc = kube::config::Kubeconfig::read().expect("read the admin kubeconfig");
    let context = kc.current_context.clone().expect("a current context");
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("the current context's cluster");
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .expect("the cluster entry");
    let file = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster_name, "user": "sa", "namespace": namespace}}],
        "current-context": "sa",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    path
}

/// The release binary as a child process; SIGTERM on drop. Its output goes to a file the test can read.
pub struct Process {
    child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl Process {
    /// `kubernetes-image-puller ARGS` with exactly `env` (and PATH), its HTTP server on a free loopback port.
    pub fn start(dir: &Path, name: &str, args: &[&str], env: &[(&str, String)]) -> Process {
        let bin = release_binary();
        assert!(
            bin.exists(),
            "{} missing: build it with `cargo build --release` or set KIP_E2E_BIN",
            bin.display()
        );
        let metrics_port = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HTTP_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Process {
            child,
            log,
            metrics_port,
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's /metrics text, or empty while it does not answer.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").await.unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then its exit status (SIGKILL after 10 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }

    /// SIGKILL: a crash, or a node gone, without a chance to release anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.running() {
            self.terminate();
        }
        // What the real cluster made it warn about: the first place to look for a departure of the fake API.
        let output = self.output();
        let warnings: Vec<&str> = output
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        if !warnings.is_empty() {
            println!("{} warned:\n  {}", self.log.display(), warnings.join("\n  "));
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET on loopback: the controller's own server, no client crate needed.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
    })
    .await
    .ok()
    .flatten()
}

/// The value of one sample line `name{labels} value` in a metrics text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Runs `bin ARGS` to completion with the given env; (exit code, stdout, stderr).
pub fn run_to_end(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(release_binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run the release binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits up to `limit` for the node's Ready pods of a DaemonSet to be `count`.
pub async fn wait_daemonset_ready(client: &Client, namespace: &str, name: &str, count: i32, limit: Duration) {
    let api: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client.clone(), namespace);
    wait_until_for(&format!("{name}: {count} pod(s) ready"), limit, || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.status)
            .is_some_and(|s| s.desired_number_scheduled == count && s.number_ready == count)
    })
    .await;
}

/// The images the real node's containerd holds (`ctr -n k8s.io images ls -q`).
pub fn node_images() -> Vec<String> {
    let dir = std::env::var("KIP_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/kip-cluster".into());
    let out = Command::new("ctr")
        .args([
            "--address",
            &format!("{dir}/containerd/containerd.sock"),
            "-n",
            "k8s.io",
        ])
        .args(["images", "ls", "-q"])
        .output()
        .expect("run ctr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes `reference` from the real node's containerd (as kubelet's image garbage collection would).
pub fn remove_node_image(reference: &str) {
    let dir = std::env::var("KIP_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/kip-cluster".into());
    let status = Command::new("ctr")
        .args([
            "--address",
            &format!("{dir}/containerd/containerd.sock"),
            "-n",
            "k8s.io",
        ])
        .args(["images", "rm", reference])
        .status()
        .expect("run ctr");
    assert!(status.success(), "ctr images rm {reference}: {status}");
}

/// The digest (`sha256:...`) the registry serves for `repo:tag` on the loopback registry.
pub async fn registry_digest(repo: &str, tag: &str) -> String {
    let registry = registry().expect("KIP_E2E_REGISTRY");
    let out = Command::new("curl")
        .args(["-sfI", "-H"])
        .arg("Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json")
        .arg(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .output()
        .expect("curl");
    content_digest(&out.stdout).unwrap_or_else(|| panic!("no digest for {repo}:{tag} on {registry}"))
}

/// The `Docker-Content-Digest` header of a registry answer (curl `-i`/`-I` output).
pub fn content_digest(headers: &[u8]) -> Option<String> {
    String::from_utf8_lossy(headers).lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("docker-content-digest:")
            .map(|d| d.trim().to_owned())
    })
}
