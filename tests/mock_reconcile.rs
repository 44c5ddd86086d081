//! Tier 1: one reconcile pass against a tower-test mock API (the controller-rs `ApiServerVerifier`
//! pattern). Each scenario answers the requests the pass sends, in order, and checks verb, path, query and
//! body; a scenario that expects no request fails if one is sent.

mod support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;
use kubernetes_image_puller::k8s::Cluster;
use kubernetes_image_puller::labels;
use kubernetes_image_puller::reconcile::{self, Drift, PassReport};
use kubernetes_image_puller::render::Desired;
use serde_json::{Value, json};

use support::fake_api::as_served;
use support::verifier::{Verifier, mock_cluster, respond, status};
use support::{INSTANCE, NS, arcs, config_toml, rendered, set_toml};

const BASE: &str = "/apis/apps/v1/namespaces/kip-test/daemonsets";

fn path(name: &str) -> String {
    format!("{BASE}/{name}")
}

/// Sets `a` (one image) and `b` (two images), default resources (cpu limit ".2").
fn two_sets() -> Vec<DaemonSet> {
    rendered(&config_toml(&[
        set_toml("a", &[("web", "nginx:1.25")]),
        set_toml(
            "b",
            &[
                ("tools", "busybox:1.36"),
                (
                    "db",
                    "postgres@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ),
            ],
        ),
    ]))
}

fn served(ds: &DaemonSet, uid: u64, rv: u64) -> Value {
    as_served(ds, uid, rv)
}

fn live(ds: &DaemonSet, uid: u64, rv: u64) -> DaemonSet {
    serde_json::from_value(served(ds, uid, rv)).expect("served DaemonSet")
}

fn find<'a>(list: &'a [DaemonSet], name: &str) -> &'a DaemonSet {
    list.iter().find(|d| d.name_any() == name).expect("rendered set")
}

/// Objects rendered here, as the desired sets a pass takes.
fn as_desired(rendered: &[DaemonSet]) -> Vec<Desired> {
    rendered.iter().cloned().map(Desired::from).collect()
}

/// Runs one pass while `server` answers for the API; both must finish within 5 s.
async fn pass<F>(
    cluster: &Cluster,
    desired: &[DaemonSet],
    owned: &[Arc<DaemonSet>],
    known: &HashSet<String>,
    server: F,
) -> PassReport
where
    F: Future<Output = Verifier>,
{
    let desired = as_desired(desired);
    let both = async { tokio::join!(reconcile::reconcile(cluster, &desired, owned, INSTANCE, known), server) };
    let (report, mut verifier) = tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .expect("pass or verifier timed out");
    verifier.assert_idle();
    report
}

/// A pass that must send nothing at all: it would block on the unanswered mock if it did.
async fn pass_without_requests(
    cluster: &Cluster,
    verifier: &mut Verifier,
    desired: &[DaemonSet],
    owned: &[Arc<DaemonSet>],
) -> PassReport {
    let (known, desired) = (HashSet::new(), as_desired(desired));
    let report = tokio::time::timeout(
        Duration::from_millis(500),
        reconcile::reconcile(cluster, &desired, owned, INSTANCE, &known),
    )
    .await
    .expect("the pass waited on the API: it sent a request");
    verifier.assert_idle();
    report
}

fn container_images(body: &Value) -> Vec<(String, String)> {
    body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["image"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn kinds(report: &PassReport) -> Vec<&'static str> {
    report.errors.iter().map(|e| e.kind()).collect()
}

// ---- a. first run ----

#[tokio::test]
async fn first_run_checks_each_name_then_applies_each_set() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    let server = async {
        for ds in &desired {
            let name = ds.name_any();
            let (seen, send) = verifier.expect(Method::GET, &path(&name)).await;
            assert!(seen.query.is_empty(), "{seen:?}");
            respond(send, 404, &status(404, "NotFound", "not found"));

            let (seen, send) = verifier.expect(Method::PATCH, &path(&name)).await;
            seen.assert_apply(&path(&name));
            let body = &seen.body;
            assert_eq!(body["apiVersion"], "apps/v1");
            assert_eq!(body["kind"], "DaemonSet");
            assert_eq!(body["metadata"]["name"], name.as_str());
            assert_eq!(body["metadata"]["namespace"], NS);
            let l = &body["metadata"]["labels"];
            assert_eq!(l[labels::MANAGED_BY], labels::MANAGER);
            assert_eq!(l[labels::INSTANCE], INSTANCE);
            assert_eq!(l[labels::SET], name.as_str());
            assert!(body["metadata"]["annotations"][labels::SPEC_HASH].is_string());
            assert!(body["metadata"].get("uid").is_none() && body["metadata"].get("resourceVersion").is_none());
            assert!(body.get("status").is_none_or(Value::is_null));
            let want: Vec<(String, String)> = ds
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap()))
                .collect();
            assert_eq!(container_images(body), want);
            respond(send, 201, &served(ds, 1, 10));
        }
        verifier
    };
    let report = pass(&cluster, &desired, &[], &HashSet::new(), server).await;
    assert_eq!(report.created, ["a", "b"]);
    assert!(report.repaired.is_empty() && report.deleted.is_empty() && report.is_clean());
    assert_eq!((report.reads, report.writes), (2, 2));
    assert_eq!(report.live.len(), 2);
    assert_eq!(
        report.live[0].uid().as_deref(),
        Some("00000000-0000-4000-8000-000000000001")
    );
}

/// A set this process applied before and now finds missing (deleted by someone) is a repair.
#[tokio::test]
async fn recreating_a_known_set_counts_as_repair() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    let b = find(&desired, "b").clone();
    let owned = arcs(&[live(find(&desired, "a"), 1, 5)]);
    let known: HashSet<String> = ["a".to_owned(), "b".to_owned()].into();
    let server = async {
        let (_, send) = verifier.expect(Method::GET, &path("b")).await;
        respond(send, 404, &status(404, "NotFound", "not found"));
        let (seen, send) = verifier.expect(Method::PATCH, &path("b")).await;
        seen.assert_apply(&path("b"));
        respond(send, 201, &served(&b, 2, 11));
        verifier
    };
    let report = pass(&cluster, &desired, &owned, &known, server).await;
    assert_eq!(report.repaired, ["b"]);
    assert_eq!(report.unchanged, ["a"]);
    assert!(report.created.is_empty());
}

// ---- b. steady state ----

#[tokio::test]
async fn steady_state_sends_nothing() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    // What the server holds after applying exactly the rendered objects: defaults added, ".2" → "200m",
    // uid, resourceVersion, status.
    let owned: Vec<DaemonSet> = desired
        .iter()
        .enumerate()
        .map(|(i, d)| live(d, i as u64 + 1, 20))
        .collect();
    let limits = &owned[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits;
    assert_eq!(
        limits.as_ref().unwrap()["cpu"].0,
        "200m",
        "the fixture rewrites quantities like the server"
    );
    for (d, l) in desired.iter().zip(&owned) {
        assert_eq!(reconcile::compare(d, l), Drift::UpToDate);
    }
    let report = pass_without_requests(&cluster, &mut verifier, &desired, &arcs(&owned)).await;
    assert_eq!(report.unchanged, ["a", "b"]);
    assert_eq!((report.reads, report.writes), (0, 0));
    assert!(report.is_clean());
    assert_eq!(report.live.len(), 2);
}

/// Extra labels and annotations from other tools, and managed fields, are not drift either.
#[tokio::test]
async fn steady_state_ignores_additions_by_others() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    let owned: Vec<DaemonSet> = desired
        .iter()
        .map(|d| {
            let mut v = served(d, 1, 20);
            v["metadata"]["labels"]["team"] = json!("infra");
            v["metadata"]["annotations"]["deprecated.daemonset.template.generation"] = json!("3");
            v["spec"]["template"]["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"});
            serde_json::from_value(v).unwrap()
        })
        .collect();
    let report = pass_without_requests(&cluster, &mut verifier, &desired, &arcs(&owned)).await;
    assert_eq!(report.unchanged, ["a", "b"]);
}

// ---- c. prune ----

#[tokio::test]
async fn prune_deletes_only_this_instances_orphans_with_uid_precondition() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = rendered(&config_toml(&[set_toml("a", &[("web", "nginx:1.25")])]));
    let before = two_sets();
    let orphan = live(find(&before, "b"), 7, 30);
    // Same labels, another instance; and one without the managed-by label.
    let mut other_instance = served(&rendered(&config_toml(&[set_toml("x", &[("w", "nginx")])]))[0], 8, 31);
    other_instance["metadata"]["labels"][labels::INSTANCE] = json!("other-puller");
    let mut unmanaged = served(&rendered(&config_toml(&[set_toml("y", &[("w", "nginx")])]))[0], 9, 32);
    unmanaged["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(labels::MANAGED_BY);
    let owned = vec![
        Arc::new(live(&desired[0], 1, 29)),
        Arc::new(orphan.clone()),
        Arc::new(serde_json::from_value::<DaemonSet>(other_instance).unwrap()),
        Arc::new(serde_json::from_value::<DaemonSet>(unmanaged).unwrap()),
    ];
    let server = async {
        let (seen, send) = verifier.expect(Method::DELETE, &path("b")).await;
        assert_eq!(seen.body["preconditions"]["uid"], orphan.uid().unwrap().as_str());
        assert_eq!(seen.body["propagationPolicy"], "Background");
        respond(send, 200, &serde_json::to_value(&orphan).unwrap());
        verifier
    };
    let report = pass(&cluster, &desired, &owned, &HashSet::new(), server).await;
    assert_eq!(report.deleted, ["b"]);
    assert_eq!(report.unchanged, ["a"]);
    assert!(report.is_clean());
}

/// Already gone counts as deleted; a uid mismatch (a same-named newcomer) is an error, not a retry by name.
#[tokio::test]
async fn prune_tolerates_gone_and_reports_uid_mismatch() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = rendered(&config_toml(&[set_toml("a", &[("web", "nginx:1.25")])]));
    let before = two_sets();
    let gone = live(find(&before, "b"), 7, 30);
    let mut replaced = served(find(&before, "b"), 8, 31);
    replaced["metadata"]["name"] = json!("c");
    let replaced: DaemonSet = serde_json::from_value(replaced).unwrap();
    let owned = vec![
        Arc::new(live(&desired[0], 1, 29)),
        Arc::new(gone),
        Arc::new(replaced.clone()),
    ];
    let server = async {
        let (_, send) = verifier.expect(Method::DELETE, &path("b")).await;
        respond(send, 404, &status(404, "NotFound", "daemonsets.apps \"b\" not found"));
        let (seen, send) = verifier.expect(Method::DELETE, &path("c")).await;
        assert_eq!(seen.body["preconditions"]["uid"], replaced.uid().unwrap().as_str());
        respond(
            send,
            409,
            &status(409, "Conflict", "Precondition failed: UID in precondition"),
        );
        verifier
    };
    let report = pass(&cluster, &desired, &owned, &HashSet::new(), server).await;
    assert_eq!(report.deleted, ["b"]);
    assert_eq!(kinds(&report), ["conflict"]);
}

// ---- d. conflict ----

#[tokio::test]
async fn foreign_object_with_the_desired_name_is_left_alone() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    let server = async {
        // `a`: someone else's DaemonSet (helm), `b`: ours by managed-by but another instance.
        let (_, send) = verifier.expect(Method::GET, &path("a")).await;
        let mut foreign = served(find(&desired, "a"), 3, 40);
        foreign["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "Helm", "app": "a"});
        respond(send, 200, &foreign);
        let (_, send) = verifier.expect(Method::GET, &path("b")).await;
        let mut other = served(find(&desired, "b"), 4, 41);
        other["metadata"]["labels"][labels::INSTANCE] = json!("other-puller");
        respond(send, 200, &other);
        verifier
    };
    let report = pass(&cluster, &desired, &[], &HashSet::new(), server).await;
    assert_eq!(report.writes, 0);
    let names: Vec<&str> = report.conflicts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        report.conflicts[0].1.contains("managed-by: Helm"),
        "{:?}",
        report.conflicts
    );
    assert!(report.conflicts[0].1.contains(NS));
    assert!(!report.is_clean());
    assert!(report.created.is_empty() && report.live.is_empty());
}

#[tokio::test]
async fn unlabelled_object_is_reported_as_managed_by_nobody() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = rendered(&config_toml(&[set_toml("a", &[("web", "nginx:1.25")])]));
    let server = async {
        let (_, send) = verifier.expect(Method::GET, &path("a")).await;
        let mut foreign = served(&desired[0], 3, 40);
        foreign["metadata"].as_object_mut().unwrap().remove("labels");
        respond(send, 200, &foreign);
        verifier
    };
    let report = pass(&cluster, &desired, &[], &HashSet::new(), server).await;
    assert_eq!(report.conflicts.len(), 1);
    assert!(
        report.conflicts[0].1.contains("managed-by: nobody"),
        "{:?}",
        report.conflicts
    );
    assert_eq!(report.writes, 0);
}

// ---- e. hand edit ----

fn hand_edited(desired: &DaemonSet, rv: u64) -> DaemonSet {
    let mut v = served(desired, 1, rv);
    v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:hacked");
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn hand_edit_is_repaired_by_apply() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = rendered(&config_toml(&[set_toml("a", &[("web", "nginx:1.25")])]));
    let edited = hand_edited(&desired[0], 7);
    assert_eq!(reconcile::compare(&desired[0], &edited), Drift::Edited);
    let server = async {
        let (seen, send) = verifier.expect(Method::PATCH, &path("a")).await;
        seen.assert_apply(&path("a"));
        assert_eq!(
            container_images(&seen.body),
            [("web".to_owned(), "nginx:1.25".to_owned())]
        );
        respond(send, 200, &served(&desired[0], 1, 8));
        verifier
    };
    let report = pass(&cluster, &desired, &arcs(&[edited]), &HashSet::new(), server).await;
    assert_eq!(report.repaired, ["a"]);
    assert_eq!((report.reads, report.writes), (0, 1));
}

#[tokio::test]
async fn hand_edit_apply_cannot_undo_is_replaced_with_resource_version() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = rendered(&config_toml(&[set_toml("a", &[("web", "nginx:1.25")])]));
    let edited = hand_edited(&desired[0], 7);
    let server = async {
        let (seen, send) = verifier.expect(Method::PATCH, &path("a")).await;
        seen.assert_apply(&path("a"));
        // The apply fixes the image but another manager's container stays.
        let mut after = served(&desired[0], 1, 8);
        after["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "evil:1"}));
        respond(send, 200, &after);

        let (seen, send) = verifier.expect(Method::PUT, &path("a")).await;
        assert_eq!(seen.q("fieldManager"), Some("kubernetes-image-puller"));
        assert_eq!(
            seen.body["metadata"]["resourceVersion"], "8",
            "replace must carry the live resourceVersion"
        );
        assert_eq!(seen.body["metadata"]["name"], "a");
        assert_eq!(
            container_images(&seen.body),
            [("web".to_owned(), "nginx:1.25".to_owned())]
        );
        assert_eq!(seen.body["metadata"]["labels"][labels::MANAGED_BY], labels::MANAGER);
        respond(send, 200, &served(&desired[0], 1, 9));
        verifier
    };
    let report = pass(&cluster, &desired, &arcs(&[edited]), &HashSet::new(), server).await;
    assert_eq!(report.repaired, ["a"]);
    assert_eq!(report.writes, 2);
    assert_eq!(report.live[0].resource_version().as_deref(), Some("9"));
}

#[tokio::test]
async fn config_change_is_one_apply() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let old = rendered(&config_toml(&[set_toml("a", &[("web", "nginx:1.24")])]));
    let desired = rendered(&config_toml(&[set_toml("a", &[("web", "nginx:1.25")])]));
    let server = async {
        let (seen, send) = verifier.expect(Method::PATCH, &path("a")).await;
        seen.assert_apply(&path("a"));
        assert_eq!(
            seen.body["metadata"]["annotations"][labels::SPEC_HASH].as_str(),
            reconcile::spec_hash_of(&desired[0])
        );
        respond(send, 200, &served(&desired[0], 1, 8));
        verifier
    };
    let report = pass(
        &cluster,
        &desired,
        &arcs(&[live(&old[0], 1, 7)]),
        &HashSet::new(),
        server,
    )
    .await;
    assert_eq!(report.updated, ["a"]);
}

// ---- f. errors ----

#[tokio::test]
async fn apply_errors_are_reported_and_delete_only_genuine_orphans() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let old = two_sets();
    let text = config_toml(&[
        set_toml("a", &[("web", "nginx:1.26")]),
        set_toml("b", &[("tools", "busybox:1.37")]),
        set_toml("c", &[("x", "alpine:3")]),
    ]);
    let desired = rendered(&text);
    let mut orphan = served(find(&old, "a"), 9, 12);
    orphan["metadata"]["name"] = json!("gone");
    let orphan: DaemonSet = serde_json::from_value(orphan).unwrap();
    let owned = arcs(&[
        live(find(&old, "a"), 1, 10),
        live(find(&old, "b"), 2, 11),
        orphan.clone(),
    ]);
    let server = async {
        let (seen, send) = verifier.expect(Method::PATCH, &path("a")).await;
        seen.assert_apply(&path("a"));
        respond(send, 409, &status(409, "Conflict", "Apply failed with 1 conflict"));
        let (seen, send) = verifier.expect(Method::PATCH, &path("b")).await;
        seen.assert_apply(&path("b"));
        respond(
            send,
            500,
            &status(500, "InternalError", "etcdserver: request timed out"),
        );
        let (_, send) = verifier.expect(Method::GET, &path("c")).await;
        respond(send, 503, &status(503, "ServiceUnavailable", "try later"));
        // Only the genuine orphan, never a or b (which failed) or c (unknown state).
        let (seen, send) = verifier.expect(Method::DELETE, &path("gone")).await;
        assert_eq!(seen.body["preconditions"]["uid"], orphan.uid().unwrap().as_str());
        respond(send, 200, &serde_json::to_value(&orphan).unwrap());
        verifier
    };
    let report = pass(&cluster, &desired, &owned, &HashSet::new(), server).await;
    assert_eq!(kinds(&report), ["conflict", "server", "server"]);
    assert_eq!(report.deleted, ["gone"]);
    assert!(report.updated.is_empty() && report.created.is_empty());
    let text = report.errors[0].to_string();
    assert!(text.starts_with("apply daemonset a:"), "{text}");
}

#[tokio::test]
async fn transport_error_is_its_own_kind_and_deletes_nothing() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    let server = async {
        let (_, send) = verifier.expect(Method::GET, &path("a")).await;
        send.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        let (_, send) = verifier.expect(Method::GET, &path("b")).await;
        respond(send, 404, &status(404, "NotFound", "not found"));
        let (_, send) = verifier.expect(Method::PATCH, &path("b")).await;
        respond(send, 403, &status(403, "Forbidden", "cannot patch"));
        verifier
    };
    let report = pass(&cluster, &desired, &[], &HashSet::new(), server).await;
    assert_eq!(kinds(&report), ["transport", "forbidden"]);
    assert!(report.deleted.is_empty() && report.created.is_empty());
}

// ---- Cluster calls outside the pass ----

#[tokio::test]
async fn list_owned_selects_by_labels() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    let server = async {
        let (seen, send) = verifier.expect(Method::GET, BASE).await;
        assert_eq!(
            seen.q("labelSelector"),
            Some(
                "app.kubernetes.io/managed-by=kubernetes-image-puller,app.kubernetes.io/instance=kubernetes-image-puller"
            )
        );
        let items: Vec<Value> = desired.iter().map(|d| served(d, 1, 5)).collect();
        respond(
            send,
            200,
            &json!({"kind": "DaemonSetList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "5"}, "items": items}),
        );
        verifier
    };
    let (list, mut verifier) = tokio::join!(cluster.list_owned(INSTANCE), server);
    verifier.assert_idle();
    let names: Vec<String> = list.expect("list").iter().map(|d| d.name_any()).collect();
    assert_eq!(names, ["a", "b"]);

    let server = async {
        let (_, send) = verifier.expect(Method::GET, BASE).await;
        respond(send, 403, &status(403, "Forbidden", "cannot list"));
        verifier
    };
    let (list, _) = tokio::join!(cluster.list_owned(INSTANCE), server);
    assert_eq!(list.expect_err("403").kind(), "forbidden");
}

#[tokio::test]
async fn restart_is_a_merge_patch_by_the_refresh_manager() {
    let (cluster, mut verifier) = mock_cluster(NS);
    let desired = two_sets();
    let server = async {
        let (seen, send) = verifier.expect(Method::PATCH, &path("a")).await;
        assert_eq!(seen.q("fieldManager"), Some("kubernetes-image-puller-refresh"));
        assert_eq!(seen.q("force"), None);
        assert_eq!(seen.content_type.as_deref(), Some("application/merge-patch+json"));
        assert_eq!(
            seen.body,
            json!({"spec": {"template": {"metadata": {"annotations": {labels::RESTARTED_AT: "2025-06-01T00:00:00Z"}}}}})
        );
        respond(send, 200, &served(&desired[0], 1, 6));
        verifier
    };
    let (result, mut verifier) = tokio::join!(cluster.restart("a", "2025-06-01T00:00:00Z"), server);
    verifier.assert_idle();
    result.expect("restart");
}
