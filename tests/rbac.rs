//! The controller under the permissions real installs have, against the fake API server enforcing RBAC
//! (403 with the real Status body for anything the rules do not grant):
//! - the upstream Role (daemonsets create, delete, get, list, watch; deployments get) with the Che
//!   operator's environment: converges by create and delete-then-create, no 403 at all, one warning per
//!   missing permission;
//! - the chart's own Role (the rendered golden fixture, compared with `helm template` in CI) and the
//!   OpenShift template's Role (parsed from deploy/openshift/serviceaccount.yaml): nothing is ever denied;
//! - no SelfSubjectRulesReview answer: the first 403 teaches the strategy, and 403s do not repeat;
//! - the handover from the upstream process, and leader election with the API away at start.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kube::{Client, ResourceExt};
use kubernetes_image_puller::controller::{self, Controller, Settings};
use kubernetes_image_puller::metrics::Metrics;
use serde_json::{Value, json};
use tokio::time::Instant;

use support::Vars;
use support::fake_api::{Action, FakeApi, Match};
use support::logs::{LOGGING, Logs};

const NS: &str = "che-images";
const DS: &str = "kubernetes-image-puller";
const SOON: Duration = Duration::from_secs(3);

/// The ConfigMap env the Che image-puller operator writes (its defaults).
fn operator_env(images: &str) -> Vars {
    let pairs = [
        ("IMAGES", images),
        ("DAEMONSET_NAME", DS),
        ("DEPLOYMENT_NAME", "kubernetes-image-puller"),
        ("NAMESPACE", NS),
        ("CACHING_INTERVAL_HOURS", "1"),
        ("CACHING_MEMORY_REQUEST", "10Mi"),
        ("CACHING_MEMORY_LIMIT", "20Mi"),
        ("CACHING_CPU_REQUEST", ".05"),
        ("CACHING_CPU_LIMIT", ".2"),
        ("NODE_SELECTOR", "{}"),
        ("IMAGE_PULL_SECRETS", ""),
        ("AFFINITY", "{}"),
        ("TOLERATIONS", "[]"),
        ("KIP_IMAGE", "quay.io/eclipse/kubernetes-image-puller:next"),
    ];
    Vars::new(&pairs)
}

const TWO_IMAGES: &str = "che-code=quay.io/che-incubator/che-code:next;base-developer-image=quay.io/devfile/base-developer-image:ubi9-latest";
const THREE_IMAGES: &str = "che-code=quay.io/che-incubator/che-code:next;base-developer-image=quay.io/devfile/base-developer-image:ubi9-latest;udi=quay.io/devfile/universal-developer-image:latest";

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("YAML")
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
}

fn rules_of(role: &Value) -> Vec<Value> {
    role["rules"].as_array().expect("rules").clone()
}

fn upstream_role() -> Vec<Value> {
    rules_of(&yaml(&fixture("tests/fixtures/rbac/upstream-role.yaml")))
}

/// The chart's Role as `helm template` renders it (CI fails when this fixture is stale).
fn chart_role() -> Vec<Value> {
    rules_of(&yaml(&fixture("tests/fixtures/rbac/chart-role.yaml")))
}

/// The Role object of the OpenShift template, read from the template itself.
fn openshift_role() -> Vec<Value> {
    let template = yaml(&fixture("deploy/openshift/serviceaccount.yaml"));
    let role = template["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["kind"] == "Role")
        .expect("a Role in the template")
        .clone();
    rules_of(&role)
}

/// The running controller of a test.
type Running = support::Booted;

async fn run(client: Client, env: Vars, leader_elect: bool) -> Running {
    let settings = Settings {
        leader_elect,
        ..support::settings(None)
    };
    support::boot(client, settings, env)
}

fn containers(api: &FakeApi) -> Vec<String> {
    api.daemonset(NS, DS)
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .map(|s| s.containers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

fn uid(api: &FakeApi) -> Option<String> {
    api.daemonset(NS, DS).and_then(|d| d.uid())
}

fn forbidden(api: &FakeApi) -> Vec<String> {
    api.forbidden_requests().iter().map(ToString::to_string).collect()
}

fn add_container(ds: &mut Value) {
    ds["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "intruder", "image": "busybox"}));
}

#[tokio::test]
async fn upstream_role_converges_by_create_and_delete_then_create_without_a_403() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    api.authorize(upstream_role(), vec![], NS, "kubernetes-image-puller");

    let t0 = Instant::now();
    let ctl = run(client.clone(), operator_env(TWO_IMAGES), false).await;
    let took = support::wait_for(&api, "the DaemonSet", SOON, || api.daemonset(NS, DS).is_some()).await;
    assert_eq!(containers(&api).len(), 2, "{:?}", containers(&api));
    println!(
        "upstream Role: DaemonSet created {:?} after start",
        t0.elapsed().max(took)
    );
    let creates = api.requests().iter().filter(|r| r.is_daemonset_write()).count();
    assert_eq!(creates, 1, "one create, no apply");

    // Deleted by hand: back at once (a plain create).
    let before = uid(&api);
    api.delete(NS, DS);
    let back = support::wait_for(&api, "the DaemonSet back", SOON, || api.daemonset(NS, DS).is_some()).await;
    assert_ne!(uid(&api), before);
    println!("upstream Role: deleted DaemonSet back after {back:?}");

    // A hand edit adding a container: undone by delete-then-create (no patch, no update).
    let before = uid(&api);
    api.edit(NS, DS, add_container);
    support::wait_for(&api, "the hand edit undone", SOON, || {
        containers(&api).len() == 2 && uid(&api) != before
    })
    .await;

    // The next status: strategy and what is missing.
    let metrics = ctl.metrics.encode();
    assert!(
        metrics.contains("kip_write_strategy{strategy=\"delete-then-create\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kip_permission_denied{verb=\"patch\",resource=\"daemonsets.apps\"} 1"));
    assert!(metrics.contains("kip_permission_denied{verb=\"list\",resource=\"pods\"} 1"));
    ctl.stop().await;
    assert!(
        api.daemonset(NS, DS).is_some(),
        "shutdown leaves the DaemonSet in place"
    );

    // A new process (the operator rolled the Deployment) with one more image: applied by delete-then-create.
    let before = uid(&api);
    let t1 = Instant::now();
    let ctl = run(client, operator_env(THREE_IMAGES), false).await;
    support::wait_for(&api, "the third image", SOON, || containers(&api).len() == 3).await;
    println!(
        "upstream Role: new image applied {:?} after the new process started",
        t1.elapsed()
    );
    assert_ne!(uid(&api), before, "changed by delete-then-create");
    ctl.stop().await;

    assert!(forbidden(&api).is_empty(), "403s: {:#?}", forbidden(&api));
    // One warning per missing permission and process, never repeated.
    let text = logs.text();
    for (verb, resource) in [
        ("patch", "daemonsets"),
        ("update", "daemonsets"),
        ("list", "pods"),
        ("list", "resourcequotas"),
        ("create", "events"),
        ("list", "nodes"),
    ] {
        let n = text
            .lines()
            .filter(|l| l.contains("permission missing") && l.contains(&format!("cannot {verb} {resource} ")))
            .count();
        assert_eq!(n, 2, "{verb} {resource}: once per process, got {n}\n{text}");
    }
    assert_eq!(logs.count("DaemonSet write strategy: delete-then-create"), 2);
    assert_eq!(logs.count("reconcile error"), 0, "{text}");
}

/// Everything the chart's code paths do under the chart's own Role; not one request denied.
async fn nothing_denied_under(role: Vec<Value>, cluster: Vec<Value>) -> FakeApi {
    let (api, client) = FakeApi::start();
    api.authorize(role, cluster, NS, "k8s-image-puller");
    let ctl = run(client.clone(), operator_env(TWO_IMAGES), true).await;
    support::wait_for(&api, "the DaemonSet", SOON, || api.daemonset(NS, DS).is_some()).await;
    let first = uid(&api);

    // A hand-added container: server-side apply cannot remove it, the replace (update) does, in place.
    api.edit(NS, DS, add_container);
    support::wait_for(&api, "the hand edit undone", SOON, || containers(&api).len() == 2).await;
    assert_eq!(uid(&api), first, "repaired in place, not re-created");
    api.delete(NS, DS);
    support::wait_for(&api, "the DaemonSet back", SOON, || api.daemonset(NS, DS).is_some()).await;
    let metrics = ctl.metrics.encode();
    assert!(
        metrics.contains("kip_write_strategy{strategy=\"server-side-apply\"} 1"),
        "{metrics}"
    );
    ctl.stop().await;

    // The status command: health check (pods) and quota check (resourcequotas, limitranges).
    let report = controller::status(client, None, &operator_env(TWO_IMAGES))
        .await
        .expect("status");
    assert_eq!(report.permissions.write_strategy, "server-side-apply");
    let seen: Vec<String> = api.requests().iter().map(ToString::to_string).collect();
    for needed in ["/pods", "/resourcequotas", "/limitranges", "/leases", "/events"] {
        assert!(
            seen.iter().any(|r| r.contains(needed)),
            "{needed} never called:\n{seen:#?}"
        );
    }
    assert!(forbidden(&api).is_empty(), "403s: {:#?}", forbidden(&api));
    api
}

#[tokio::test]
async fn chart_role_denies_nothing() {
    let _serial = LOGGING.lock().await;
    let api = nothing_denied_under(chart_role(), vec![]).await;
    // Without the optional nodes ClusterRole, nodes are never even asked for.
    assert!(!api.requests().iter().any(|r| r.path.ends_with("/nodes")));
}

#[tokio::test]
async fn chart_role_with_the_nodes_cluster_role_denies_nothing() {
    let _serial = LOGGING.lock().await;
    let nodes = vec![json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]})];
    let api = nothing_denied_under(chart_role(), nodes).await;
    assert!(api.requests().iter().any(|r| r.path.ends_with("/nodes")));
}

#[tokio::test]
async fn openshift_template_role_denies_nothing() {
    let _serial = LOGGING.lock().await;
    nothing_denied_under(openshift_role(), vec![]).await;
}

/// Without an answer to the SelfSubjectRulesReview the controller tries server-side apply, learns from the
/// first 403, and converges; each refused verb is refused once, not at every pass.
#[tokio::test]
async fn without_a_rules_review_a_403_teaches_the_strategy_once() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    api.authorize(upstream_role(), vec![], NS, "kubernetes-image-puller");
    api.inject(Match::RulesReview, Action::Status(503), u32::MAX);
    let ctl = run(client, operator_env(TWO_IMAGES), false).await;
    support::wait_for(&api, "the DaemonSet", SOON * 2, || api.daemonset(NS, DS).is_some()).await;
    api.delete(NS, DS);
    support::wait_for(&api, "the DaemonSet back", SOON, || api.daemonset(NS, DS).is_some()).await;
    let edited = uid(&api);
    api.edit(NS, DS, add_container);
    support::wait_for(&api, "the hand edit undone", SOON, || {
        uid(&api) != edited && containers(&api).len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.stop().await;
    let denied = forbidden(&api);
    let patches = denied.iter().filter(|r| r.starts_with("PATCH")).count();
    assert_eq!(patches, 1, "patch refused once, then delete-then-create: {denied:#?}");
    // Events: one refused create, then off. Nothing else refused more than once.
    let mut seen = std::collections::BTreeMap::new();
    for r in api.forbidden_requests() {
        *seen.entry((r.method.to_string(), r.path.clone())).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a 403 repeated: {seen:?}");
    assert_eq!(logs.count("cannot patch daemonsets"), 1, "{}", logs.text());
}

/// The upstream process made an unlabelled DaemonSet of the same name and deletes it when it stops (a
/// rolling update to this image): ours must follow within seconds, not at the next resync.
#[tokio::test]
async fn handover_from_the_upstream_process_takes_seconds() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    api.authorize(upstream_role(), vec![], NS, "kubernetes-image-puller");
    let theirs: k8s_openapi::api::apps::v1::DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": DS, "namespace": NS},
        "spec": {"selector": {"matchLabels": {"test": "daemonset-test"}},
                 "template": {"metadata": {"labels": {"test": "daemonset-test"}},
                              "spec": {"containers": [{"name": "old", "image": "old:1"}]}}}
    }))
    .unwrap();
    let theirs = api.create(&theirs);
    let ctl = run(client, operator_env(TWO_IMAGES), false).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        uid(&api),
        theirs.uid(),
        "the upstream DaemonSet is left alone while it exists"
    );
    assert_eq!(containers(&api), ["old"]);
    let gone = Instant::now();
    api.delete(NS, DS);
    let took = support::wait_for(&api, "ours after theirs is gone", SOON, || containers(&api).len() == 2).await;
    println!(
        "handover: ours created {:?} after the upstream DaemonSet was deleted",
        gone.elapsed().min(took)
    );
    assert!(took < Duration::from_secs(2));
    ctl.stop().await;
    assert!(forbidden(&api).is_empty(), "403s: {:#?}", forbidden(&api));
}

/// `--leader-elect` with the API away at start: no exit, standby meanwhile, then leader and converged.
#[tokio::test]
async fn leader_election_waits_out_an_absent_api() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    api.authorize(chart_role(), vec![], NS, "k8s-image-puller");
    api.away_for(Duration::from_secs(2));
    let ctl = run(client, operator_env(TWO_IMAGES), true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!ctl.task.is_finished(), "run must not end while the API is away");
    assert!(api.daemonset(NS, DS).is_none());
    support::wait_for(
        &api,
        "the DaemonSet once the API is back",
        Duration::from_secs(10),
        || api.daemonset(NS, DS).is_some(),
    )
    .await;
    // Away again while leading: still running, and still leading once it is back.
    api.away_for(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!ctl.task.is_finished(), "run must not end when the API goes away later");
    api.delete(NS, DS);
    support::wait_for(
        &api,
        "the DaemonSet back after the outage",
        Duration::from_secs(10),
        || api.daemonset(NS, DS).is_some(),
    )
    .await;
    ctl.stop().await;
}

/// `status` under the upstream Role: reads only what it may, and says how DaemonSets are written and what
/// is missing (table and JSON).
#[tokio::test]
async fn status_under_the_upstream_role_names_the_strategy_and_what_is_missing() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    api.authorize(upstream_role(), vec![], NS, "kubernetes-image-puller");
    let ctl = run(client.clone(), operator_env(TWO_IMAGES), false).await;
    support::wait_for(&api, "the DaemonSet", SOON, || api.daemonset(NS, DS).is_some()).await;
    ctl.stop().await;
    let report = controller::status(client, None, &operator_env(TWO_IMAGES))
        .await
        .expect("status");
    assert!(report.sets[0].present);
    assert!(report.permissions.reviewed);
    assert_eq!(report.permissions.write_strategy, "delete-then-create");
    let table = kubernetes_image_puller::commands::status::table(&report);
    assert!(table.contains("write strategy: delete-then-create"), "{table}");
    assert!(
        table.contains("rolling updates need: patch (server-side apply) or update on apps/daemonsets"),
        "{table}"
    );
    assert!(
        table.contains("permission: cannot list pods (core): health check"),
        "{table}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["permissions"]["write_strategy"], "delete-then-create");
    assert!(forbidden(&api).is_empty(), "403s: {:#?}", forbidden(&api));
}

/// The upstream Role plus `update`: changes and repairs are made in place by a replace (a rolling update),
/// never by delete-then-create.
#[tokio::test]
async fn with_update_but_no_patch_changes_are_made_in_place() {
    let _serial = LOGGING.lock().await;
    let (api, client) = FakeApi::start();
    let mut role = upstream_role();
    role.push(json!({"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["update"]}));
    api.authorize(role, vec![], NS, "kubernetes-image-puller");
    let ctl = run(client.clone(), operator_env(TWO_IMAGES), false).await;
    support::wait_for(&api, "the DaemonSet", SOON, || api.daemonset(NS, DS).is_some()).await;
    let first = uid(&api);
    api.edit(NS, DS, add_container);
    support::wait_for(&api, "the hand edit undone", SOON, || containers(&api).len() == 2).await;
    assert!(
        ctl.metrics
            .encode()
            .contains("kip_write_strategy{strategy=\"update\"} 1")
    );
    ctl.stop().await;
    let ctl = run(client, operator_env(THREE_IMAGES), false).await;
    support::wait_for(&api, "the third image", SOON, || containers(&api).len() == 3).await;
    ctl.stop().await;
    assert_eq!(uid(&api), first, "updated in place");
    let puts = api.requests().iter().filter(|r| r.method == http::Method::PUT).count();
    assert_eq!(puts, 2, "one replace for the repair, one for the new image");
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.is_daemonset_write() && r.method == http::Method::DELETE)
    );
    assert!(forbidden(&api).is_empty(), "403s: {:#?}", forbidden(&api));
}

/// Runs the periodic refresh once, under `role`, on a DaemonSet created two hours ago (so it is due).
async fn refresh_under(role: Vec<Value>) -> (FakeApi, Option<String>) {
    let (api, client) = FakeApi::start();
    api.authorize(role, vec![], NS, "kubernetes-image-puller");
    let ctl = run(client.clone(), operator_env(TWO_IMAGES), false).await;
    support::wait_for(&api, "the DaemonSet", SOON, || api.daemonset(NS, DS).is_some()).await;
    ctl.stop().await;
    api.edit(NS, DS, |ds| {
        ds["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z")
    });
    let before = uid(&api);
    let settings = Settings {
        config_path: None,
        reload_debounce: Duration::from_millis(50),
        resync: Duration::from_secs(3600),
        leader_elect: false,
        pod_name: None,
        pod_namespace: None,
        failure_settle: kubernetes_image_puller::controller::FAILURE_SETTLE,
        plain_http_registries: Vec::new(),
    };
    let mut controller = Controller::new(
        client,
        settings,
        Box::new(operator_env(TWO_IMAGES)),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    );
    assert!(controller.reload().await);
    controller.review_permissions(NS).await;
    let cluster = controller.cluster(NS);
    let owned: Vec<_> = cluster
        .list_owned("kubernetes-image-puller")
        .await
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    assert_eq!(owned.len(), 1);
    controller.health_check(&cluster, &owned, true).await;
    assert_eq!(containers(&api).len(), 2);
    assert!(!api.requests().iter().any(|r| r.method == http::Method::PATCH));
    assert!(forbidden(&api).is_empty(), "403s: {:#?}", forbidden(&api));
    (api, before)
}

/// The periodic refresh of moving tags without `patch`: delete-then-create (what upstream did), not a
/// rolling-restart patch that would be refused.
#[tokio::test]
async fn refresh_without_patch_deletes_and_creates() {
    let _serial = LOGGING.lock().await;
    let (api, before) = refresh_under(upstream_role()).await;
    assert_ne!(uid(&api), before, "refreshed by delete-then-create");
}

/// With `update` but no `patch`, the refresh is still a rolling restart: a replace carrying a new restart
/// annotation on the pod template.
#[tokio::test]
async fn refresh_with_update_is_a_rolling_restart() {
    let _serial = LOGGING.lock().await;
    let mut role = upstream_role();
    role.push(json!({"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["update"]}));
    let (api, before) = refresh_under(role).await;
    assert_eq!(uid(&api), before, "in place");
    let ds = api.daemonset(NS, DS).unwrap();
    let annotations = ds
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap_or_default();
    assert!(
        annotations.contains_key(kubernetes_image_puller::labels::RESTARTED_AT),
        "{annotations:?}"
    );
}

/// A registry on loopback whose every manifest has digest `sha256:22…22` (so nodes holding `sha256:11…11`
/// are stale). Returns its host.
async fn registry_with_a_new_digest() -> String {
    async fn answer(req: axum::http::Request<axum::body::Body>) -> axum::http::Response<axum::body::Body> {
        let digest = format!("sha256:{}", "2".repeat(64));
        let builder = axum::http::Response::builder().status(200);
        if req.uri().path().contains("/manifests/") {
            builder
                .header("Docker-Content-Digest", digest)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Content-Length", "2")
                .body(axum::body::Body::from("{}"))
                .unwrap()
        } else {
            builder.body(axum::body::Body::empty()).unwrap()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(answer)).await });
    host
}

/// The digest refresh under a Role without `pods` `create`/`delete` (the upstream verbs plus `pods` `list`):
/// stale nodes are found and reported, one 403 at most turns the refresh off with one warning, and nothing
/// else fails.
#[tokio::test]
async fn digest_refresh_without_pod_writes_reports_stale_nodes_and_is_off_with_one_warning() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let (api, client) = FakeApi::start();
    let mut role = upstream_role();
    role.push(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}));
    api.authorize(role, vec![], NS, "k8s-image-puller");
    let host = registry_with_a_new_digest().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("namespace = \"{NS}\"\n\n[[sets]]\nname = \"{DS}\"\nimages = {{ web = \"{host}/web:1\" }}\n"),
    )
    .unwrap();
    let settings = Settings {
        plain_http_registries: vec![host.clone()],
        ..support::settings(Some(&path))
    };
    let metrics = Arc::new(Metrics::default());
    let mut controller = Controller::new(
        client.clone(),
        settings,
        Box::new(Vars::none()),
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    assert!(controller.reload().await);
    let access = Arc::new(kubernetes_image_puller::rbac::Access::default());
    let cluster = kubernetes_image_puller::k8s::Cluster::with_access(client, NS, access);
    let owned = controller.pass(&cluster, &[]).await.live;
    assert_eq!(owned.len(), 1);
    let old = format!("sha256:{}", "1".repeat(64));
    api.add_pods(
        NS,
        (0..3).map(|n| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{DS}-{n}"), "namespace": NS,
                             "labels": {"app.kubernetes.io/name": "kip-cache", "kubernetes-image-puller/set": DS,
                                        "app.kubernetes.io/managed-by": "kubernetes-image-puller"}},
                "spec": {"nodeName": format!("node-{n}"), "containers": []},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "web", "image": format!("{host}/web:1"), "imageID": format!("{host}/web@{old}"),
                     "ready": true, "restartCount": 0, "state": {"running": {}}}]}
            })
        }),
    );
    for _ in 0..3 {
        controller.digest_check(&cluster, &owned, true).await;
    }
    let encoded = metrics.encode();
    assert!(
        encoded.contains(&format!("kip_image_stale_nodes{{set=\"{DS}\",image=\"web\"}} 3")),
        "{encoded}"
    );
    let creates = api
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::POST && r.path.ends_with("/pods"))
        .count();
    assert!(
        creates <= 1,
        "{creates} refresh pod creates: the first 403 turns the refresh off"
    );
    let deletes = api
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::DELETE && r.path.contains("/pods/"))
        .count();
    assert_eq!(deletes, 0, "no cache pod deleted");
    let warned = logs
        .text()
        .lines()
        .filter(|l| l.contains("permission missing") && l.contains("cannot create pods "))
        .count();
    assert_eq!(warned, 1, "{}", logs.text());
    assert_eq!(
        api.daemonset(NS, DS).and_then(|d| d.uid()),
        owned[0].uid(),
        "nothing else changed"
    );
}
