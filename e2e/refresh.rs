//! The digest refresh on the harness's real node (issue: a cache that survives a registry outage, and
//! refreshes only what changed), with the release binary and the loopback registry:
//! 1. the registry stopped and every cache pod deleted: all back Running from the node's disk within 10 s,
//!    `status` says cached and registry unreachable (exit 0); a cache container killed on the node comes back;
//! 2. nothing pushed for 3 check intervals: the same pods, no restart, at most one manifest request per
//!    moving tag and interval in the registry's log;
//! 3. new content pushed to a cached tag: within one interval plus 30 s the node's tag and the cache pod's
//!    `imageID` are the new digest; the other set's pod is untouched.
//!
//! And on simulated nodes, against registries that answer 401, 404, 500 or nothing (4, 5): a line per image
//! in `status`, the metric and a Warning Event, nothing deleted or rolled; a private registry resolved with
//! the set's pull secret.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Command;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::ListParams;

use super::real_node::{RegistryStopped, describe, image, put_registry_manifest, registry_manifest, statuses};
use super::*;
use harness::{Process, REAL_NODE_LABEL, REAL_NODE_TAINT};

const CHECK_SECONDS: u64 = 10;

fn cluster_dir() -> String {
    std::env::var("KIP_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/kip-cluster".into())
}

pub(super) fn ctr(args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .args([
            "--address",
            &format!("{}/containerd/containerd.sock", cluster_dir()),
            "-n",
            "k8s.io",
        ])
        .args(args)
        .output()
        .expect("run ctr")
}

/// The digest the real node's runtime has for `reference` (`ctr images ls`: REF TYPE DIGEST ...).
fn node_tag_digest(reference: &str) -> Option<String> {
    let out = ctr(&["images", "ls"]);
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(reference)).then(|| cols.nth(1).map(str::to_owned))?
    })
}

/// The digest in the `imageID` of container `name` of `pod`.
fn image_id_digest(pod: &Pod, name: &str) -> Option<String> {
    statuses(pod)
        .into_iter()
        .find(|c| c.name == name)
        .and_then(|c| c.image_id.rsplit_once('@').map(|(_, d)| d.to_owned()))
}

/// Manifest requests (HEAD or GET) for `repo:tag` in the loopback registry's access log so far.
pub(super) fn manifest_requests(repo: &str, tag: &str) -> usize {
    let log = std::fs::read_to_string(format!("{}/logs/registry.log", cluster_dir())).unwrap_or_default();
    let path = format!("/v2/{repo}/manifests/{tag} HTTP");
    log.lines()
        .filter(|l| (l.contains("\"HEAD ") || l.contains("\"GET ")) && l.contains(&path))
        .count()
}

/// A fresh tag of busybox's layers with an image config of its own (a label holding `nonce`), so it is a
/// distinct image on the node: containerd names an image by its config, and an image shared by several
/// manifests reports any one of their digests as a container's `imageID`. Pushing to the tag moves no other.
pub(super) fn push_own_tag(repo: &str, tag: &str, nonce: &str) -> String {
    let registry = harness::registry().expect("registry");
    let mut manifest = registry_manifest(repo, "1");
    let config_digest = manifest["config"]["digest"].as_str().expect("config digest").to_owned();
    let out = Command::new("curl")
        .args(["-sf"])
        .arg(format!("http://{registry}/v2/{repo}/blobs/{config_digest}"))
        .output()
        .expect("curl");
    let mut config: serde_json::Value = serde_json::from_slice(&out.stdout).expect("image config");
    config["config"]["Labels"]["kip-e2e.nonce"] = serde_json::Value::String(nonce.to_owned());
    let bytes = serde_json::to_vec(&config).unwrap();
    let digest = {
        use sha2::Digest as _;
        let sum = sha2::Sha256::digest(&bytes);
        format!("sha256:{}", sum.iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    // A monolithic upload: POST for the upload location, then PUT the bytes with their digest.
    let out = Command::new("curl")
        .args(["-sfi", "-X", "POST"])
        .arg(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    let location = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("location:")
                .then(|| l[9..].trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no upload location: {headers}"));
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let status = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "@-",
        ])
        .arg(format!("{url}{sep}digest={digest}"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(&bytes)?;
            child.wait()
        })
        .expect("curl");
    assert!(status.success(), "upload of the config blob");
    manifest["config"]["digest"] = serde_json::Value::String(digest);
    manifest["config"]["size"] = serde_json::Value::from(bytes.len());
    put_registry_manifest(repo, tag, &manifest)
}

fn uids_and_restarts(pod: &Pod) -> (String, i32) {
    (
        pod.uid().unwrap_or_default(),
        statuses(pod).iter().map(|c| c.restart_count).sum(),
    )
}

/// The cache pod of `set` on the real node.
async fn set_pod(client: &Client, namespace: &str, set: &str) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = health_selector(set);
    pods.list(&ListParams::default().labels(&selector))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(harness::REAL_NODE))
}

fn health_selector(set: &str) -> String {
    kubernetes_image_puller::health::pod_selector(set)
}

fn all_running(pod: &Pod) -> bool {
    let s = statuses(pod);
    !s.is_empty()
        && s.iter()
            .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
}

/// Warning Events with `reason` about objects in `namespace`, their notes.
pub(super) async fn warnings(client: &Client, namespace: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
        .map(|e| e.message.unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_holds_through_a_registry_outage_and_only_changed_tags_are_pulled_again() {
    let client = real_node_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e-digest").await;
    let dir = tempfile::tempdir().unwrap();
    let repo = "kip-e2e/busybox";
    let nonce = format!("{}-{}", std::process::id(), jiff::Timestamp::now().as_second());
    let tag = format!("moving-{nonce}");
    let first = push_own_tag(repo, &tag, &format!("{nonce}-a"));
    let moving = format!("{}:{tag}", image("busybox"));
    let pinned = format!(
        "{}@{}",
        image("tools"),
        harness::registry_digest("kip-e2e/tools", "1").await
    );
    let config = dir.path().join("config.toml");
    let text = format!(
        r#"namespace = "{ns}"
kip_image = "{kip}"
refresh_check_interval = "{CHECK_SECONDS}s"

[defaults]
node_selector = {{ "{REAL_NODE_LABEL}" = "real" }}
tolerations = [{{ key = "{REAL_NODE_TAINT}", operator = "Exists", effect = "NoSchedule" }}]

[[sets]]
name = "moving"
images = {{ m = "{moving}", pinned = "{pinned}" }}

[[sets]]
name = "other"
images = {{ tools = "{tools}" }}
"#,
        ns = ns.name,
        kip = image("kubernetes-image-puller:e2e"),
        tools = image("tools:1"),
    );
    std::fs::write(&config, text).unwrap();
    let registry = harness::registry().expect("registry");
    let env = [
        ("KUBECONFIG", std::env::var("KUBECONFIG").expect("KUBECONFIG")),
        ("CONFIG_FILE", config.display().to_string()),
        ("PLAIN_HTTP_REGISTRIES", registry.clone()),
    ];
    let mut controller = Process::start(dir.path(), "controller", &["run"], &env);
    harness::wait_daemonset_ready(&client, &ns.name, "moving", 1, Duration::from_secs(120)).await;
    harness::wait_daemonset_ready(&client, &ns.name, "other", 1, Duration::from_secs(120)).await;
    let pod = set_pod(&client, &ns.name, "moving").await.expect("cache pod");
    let spec_policy: Vec<String> = pod
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| format!("{}={}", c.name, c.image_pull_policy.clone().unwrap_or_default()))
        .collect();
    assert!(
        spec_policy.iter().all(|p| p.ends_with("=IfNotPresent")),
        "{spec_policy:?}"
    );
    assert_eq!(
        image_id_digest(&pod, "m").as_deref(),
        Some(first.as_str()),
        "{}",
        describe(&pod)
    );

    // 2. Nothing pushed for 3 check intervals: same pods, no restart, <= 1 manifest request per interval.
    tokio::time::sleep(Duration::from_secs(FIRST_CHECK_SECONDS)).await;
    let before_moving = uids_and_restarts(&set_pod(&client, &ns.name, "moving").await.unwrap());
    let before_other = uids_and_restarts(&set_pod(&client, &ns.name, "other").await.unwrap());
    let requests_before = manifest_requests(repo, &tag);
    let window = Duration::from_secs(3 * CHECK_SECONDS);
    tokio::time::sleep(window).await;
    let requests = manifest_requests(repo, &tag) - requests_before;
    let after_moving = uids_and_restarts(&set_pod(&client, &ns.name, "moving").await.unwrap());
    let after_other = uids_and_restarts(&set_pod(&client, &ns.name, "other").await.unwrap());
    println!(
        "nothing pushed for {window:?} (3 check intervals): {requests} manifest request(s) for {repo}:{tag}; pods {before_moving:?} -> {after_moving:?}"
    );
    assert_eq!(
        before_moving, after_moving,
        "the moving set's pod restarted or was replaced"
    );
    assert_eq!(
        before_other, after_other,
        "the other set's pod restarted or was replaced"
    );
    assert_eq!(after_moving.1, 0);
    assert!(
        (1..=4).contains(&requests),
        "{requests} manifest requests in 3 intervals"
    );
    let metrics = controller.metrics().await;
    assert_eq!(
        harness::sample(&metrics, "kip_image_stale_nodes{set=\"moving\",image=\"m\"}"),
        Some(0.0),
        "{metrics}"
    );

    // 3. New content pushed to the tag: the node's tag and the cache pod's imageID follow within an
    //    interval + 30 s; the other set's pod is untouched.
    let second = push_own_tag(repo, &tag, &format!("{nonce}-b"));
    assert_ne!(first, second);
    let pushed = Instant::now();
    let refreshed = loop {
        let pod = set_pod(&client, &ns.name, "moving").await;
        let id = pod.as_ref().and_then(|p| image_id_digest(p, "m"));
        if id.as_deref() == Some(second.as_str()) && pod.as_ref().is_some_and(all_running) {
            break pod.unwrap();
        }
        assert!(
            pushed.elapsed() < Duration::from_secs(CHECK_SECONDS + 30),
            "not refreshed within an interval + 30 s: {:?}; controller:\n{}",
            pod.as_ref().map(describe),
            controller.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let took = pushed.elapsed();
    assert_eq!(
        node_tag_digest(&moving).as_deref(),
        Some(second.as_str()),
        "the node's tag did not move"
    );
    println!("pushed new content: node tag and cache pod imageID at {second} {took:?} later");
    let other_now = uids_and_restarts(&set_pod(&client, &ns.name, "other").await.unwrap());
    assert_eq!(
        before_other, other_now,
        "the other set's pod was touched by the refresh"
    );
    // No refresh pod left behind, and one Refreshed Event.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let leftovers = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=kip-refresh"))
        .await
        .unwrap()
        .items;
    assert!(
        leftovers.is_empty(),
        "refresh pods left: {:?}",
        leftovers.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    let metrics = controller.metrics().await;
    assert_eq!(
        harness::sample(&metrics, "kip_refreshed_nodes_total{set=\"moving\"}"),
        Some(1.0),
        "{metrics}"
    );
    let _ = refreshed;

    // 1. The registry stopped, every cache pod deleted: back Running from disk within 10 s.
    let outage = RegistryStopped::new();
    let mut old = BTreeMap::new();
    for set in ["moving", "other"] {
        let p = set_pod(&client, &ns.name, set).await.unwrap();
        old.insert(set, p.uid().unwrap_or_default());
        pods.delete(&p.name_any(), &DeleteParams::default().grace_period(1))
            .await
            .unwrap();
    }
    let deleted = Instant::now();
    loop {
        let mut back = true;
        for (set, uid) in &old {
            let p = set_pod(&client, &ns.name, set).await;
            back &= p
                .as_ref()
                .is_some_and(|p| p.uid().as_deref() != Some(uid.as_str()) && all_running(p));
        }
        if back {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(10),
            "cache pods not back Running within 10 s of an outage: {:?}",
            set_pod(&client, &ns.name, "moving").await.as_ref().map(describe)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "registry stopped, cache pods deleted: all Running again {:?} later",
        deleted.elapsed()
    );

    // A cache container killed on the node (not the pod) comes back from disk too.
    let pod = set_pod(&client, &ns.name, "moving").await.unwrap();
    let container_id = statuses(&pod)
        .into_iter()
        .find(|c| c.name == "m")
        .and_then(|c| c.container_id)
        .expect("container id");
    let id = container_id.rsplit("://").next().unwrap().to_owned();
    let killed = ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    assert!(
        killed.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let killed_at = Instant::now();
    loop {
        let p = set_pod(&client, &ns.name, "moving").await.unwrap();
        let restarted = statuses(&p).iter().any(|c| c.name == "m" && c.restart_count >= 1);
        if restarted && all_running(&p) {
            println!(
                "cache container killed on the node: running again {:?} later",
                killed_at.elapsed()
            );
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(40),
            "killed container not back: {}",
            describe(&p)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // `status` during the outage: cached, registry unreachable, exit 0.
    tokio::time::sleep(Duration::from_secs(CHECK_SECONDS + 2)).await;
    let (code, out, err) = harness::run_to_end(&["status", "--config", &config.display().to_string()], &env);
    println!("status during the outage (exit {code}):\n{out}");
    assert_eq!(code, 0, "status exit {code}: {out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("digest: set moving image m "))
        .expect("a digest line");
    assert!(line.contains("cached on 1 node(s); registry unreachable"), "{line}");
    let metrics = controller.metrics().await;
    assert_eq!(
        harness::sample(
            &metrics,
            "kip_registry_check_failed{set=\"moving\",image=\"m\",reason=\"unreachable\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let notes = warnings(&client, &ns.name, "RegistryCheckFailed").await;
    assert!(
        notes.iter().any(|n| n.contains("image m") && n.contains("unreachable")),
        "{notes:?}"
    );
    drop(outage);

    let status = controller.terminate();
    assert!(status.success(), "controller exit {status}:\n{}", controller.output());
    let _ = std::io::stdout().flush();
    drop(ns);
}

/// The first digest check runs this long after the controller starts (`FIRST_DIGEST_CHECK`), plus slack.
const FIRST_CHECK_SECONDS: u64 = 22;

/// A TCP listener on loopback that answers every request with `status` (Some) or never answers (None).
fn fake_registry(status: Option<u16>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            match status {
                Some(code) => {
                    let mut s = stream;
                    let mut buf = [0u8; 4096];
                    let _ = std::io::Read::read(&mut s, &mut buf);
                    let _ = write!(
                        s,
                        "HTTP/1.1 {code} Oops\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\noops\n"
                    );
                }
                // Accepted, never answered: a timeout.
                None => held.push(stream),
            }
        }
    });
    port
}

/// docker-registry with htpasswd auth on a free loopback port (user "kip", password "secret"), storing
/// into the harness registry's own directory (read-only use: only manifests of existing images are asked).
struct PrivateRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateRegistry {
    fn start() -> PrivateRegistry {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("htpasswd")
            .args(["-Bbn", "kip", "secret"])
            .output()
            .expect("htpasswd");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, &out.stdout).unwrap();
        let port = harness::free_port();
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem: {{rootdirectory: {root}/registry}}\n  maintenance: {{readonly: {{enabled: true}}, uploadpurging: {{enabled: false}}}}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd: {{realm: kip-e2e, path: {h}}}\n",
                root = cluster_dir(),
                h = htpasswd.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "private registry not up");
            std::thread::sleep(Duration::from_millis(100));
        }
        PrivateRegistry { child, port, _dir: dir }
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn docker_config_secret(name: &str, host: &str, user: &str, password: &str) -> Secret {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = serde_json::json!({"auths": {host: {"auth": auth}}}).to_string();
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            k8s_openapi::ByteString(json.into_bytes()),
        )])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_failures_are_reported_per_image_and_private_registries_use_the_pull_secret() {
    let client = client_or_skip!();
    if harness::registry().is_none() {
        skip_or_fail("no loopback registry (KIP_E2E_REGISTRY)");
        return;
    }
    let ns = TempNamespace::new(&client, "kip-e2e-regfail").await;
    let dir = tempfile::tempdir().unwrap();
    let private = PrivateRegistry::start();
    let private_host = format!("127.0.0.1:{}", private.port);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    for (name, password) in [("good", "secret"), ("wrong", "not-the-password")] {
        secrets
            .create(
                &PostParams::default(),
                &docker_config_secret(name, &private_host, "kip", password),
            )
            .await
            .unwrap();
    }
    let server_error = format!("127.0.0.1:{}", fake_registry(Some(500)));
    let silent = format!("127.0.0.1:{}", fake_registry(None));
    let registry = harness::registry().unwrap();
    let config = dir.path().join("config.toml");
    let text = format!(
        r#"namespace = "{ns}"
kip_image = "{kip}"
refresh_check_interval = "{CHECK_SECONDS}s"

[defaults]
node_selector = {{ type = "kwok" }}
tolerations = [{{ key = "kwok.x-k8s.io/node", operator = "Exists", effect = "NoSchedule" }}]

[[sets]]
name = "failing"
images = {{ missing = "{registry}/kip-e2e/no-such-image:1", broken = "{server_error}/kip-e2e/busybox:1", silent = "{silent}/kip-e2e/busybox:1" }}

[[sets]]
name = "private"
image_pull_secrets = ["good"]
images = {{ busybox = "{private_host}/kip-e2e/busybox:1" }}

[[sets]]
name = "private-wrong"
image_pull_secrets = ["wrong"]
images = {{ busybox = "{private_host}/kip-e2e/busybox:1" }}
"#,
        ns = ns.name,
        kip = image("kubernetes-image-puller:e2e"),
    );
    std::fs::write(&config, text).unwrap();
    let env = [
        ("KUBECONFIG", std::env::var("KUBECONFIG").expect("KUBECONFIG")),
        ("CONFIG_FILE", config.display().to_string()),
        (
            "PLAIN_HTTP_REGISTRIES",
            format!("{registry},{private_host},{server_error},{silent}"),
        ),
    ];
    let mut controller = Process::start(dir.path(), "controller", &["run"], &env);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    let mut uids = BTreeMap::new();
    while uids.len() < 3 {
        for set in ["failing", "private", "private-wrong"] {
            if let Ok(Some(ds)) = daemonsets.get_opt(set).await {
                uids.insert(set, ds.uid().unwrap_or_default());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "DaemonSets not created:\n{}",
            controller.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failed = |metrics: &str, set: &str, image: &str, reason: &str| {
        harness::sample(
            metrics,
            &format!("kip_registry_check_failed{{set=\"{set}\",image=\"{image}\",reason=\"{reason}\"}}"),
        )
    };
    let expected = [
        ("failing", "missing", "not_found"),
        ("failing", "broken", "server"),
        ("failing", "silent", "timeout"),
        ("private-wrong", "busybox", "unauthorized"),
    ];
    let mut metrics = String::new();
    while started.elapsed() < Duration::from_secs(FIRST_CHECK_SECONDS + 30) {
        metrics = controller.metrics().await;
        if expected.iter().all(|(s, i, r)| failed(&metrics, s, i, r) == Some(1.0)) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (set, image, reason) in expected {
        assert_eq!(
            failed(&metrics, set, image, reason),
            Some(1.0),
            "{set}/{image} {reason}:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .all(|l| !l.starts_with("kip_registry_check_failed{set=\"private\",")),
        "the private registry with the right secret failed:\n{metrics}"
    );
    let (code, out, err) = harness::run_to_end(&["status", "--config", &config.display().to_string()], &env);
    println!("status (exit {code}):\n{out}{err}");
    for (set, image, reason) in expected {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("digest: set {set} image {image} "))
                    && l.contains(&format!("registry {reason}"))),
            "no {reason} line for {set}/{image}:\n{out}"
        );
    }
    let ok = out
        .lines()
        .find(|l| l.starts_with("digest: set private image busybox "))
        .expect("the private set's line");
    assert!(ok.contains("current on") && ok.contains("sha256:"), "{ok}");
    let notes = warnings(&client, &ns.name, "RegistryCheckFailed").await;
    for (set, image, _) in expected {
        assert!(
            notes.iter().any(|n| n.contains(&format!("set {set} image {image} "))),
            "no Warning Event for {set}/{image}: {notes:?}"
        );
    }
    // Nothing deleted or rolled.
    for (set, uid) in &uids {
        let ds = daemonsets.get(set).await.unwrap();
        assert_eq!(ds.uid().as_deref(), Some(uid.as_str()), "{set} was recreated");
        assert_eq!(ds.metadata.generation, Some(1), "{set} was rolled");
    }
    let status = controller.terminate();
    assert!(status.success(), "controller exit {status}:\n{}", controller.output());
    drop(private);
    drop(ns);
}
