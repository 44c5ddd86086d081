//! Issue 9, against the stateful fake API server running the real loop: a quota Event on the DaemonSet of
//! the set that does not fit, with the needed and free amounts; pods the DaemonSet controller could not
//! create (its FailedCreate Events) reported within seconds, in the metrics and in `status`; `status` from an
//! environment without DEPLOYMENT_NAME agreeing with a controller that has it; Events the real API accepts.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use kubernetes_image_puller::controller::{self, Controller, ControllerError, Settings};
use kubernetes_image_puller::k8s::Events;
use kubernetes_image_puller::metrics::Metrics;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use support::fake_api::{Action, FakeApi, Match};
use support::{NS, Vars, config_toml};

/// As the DaemonSet controller words it (controller_utils: "Error creating: %v").
const QUOTA_MESSAGE: &str = "Error creating: pods \"wide-7xk2p\" is forbidden: exceeded quota: tight, requested: limits.memory=100Mi, used: limits.memory=80Mi, limited: limits.memory=100Mi";

fn settings(path: &Path, pod: Option<&str>) -> Settings {
    Settings {
        pod_name: pod.map(Into::into),
        pod_namespace: pod.map(|_| NS.into()),
        ..support::settings(Some(path))
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vars {
    Vars::new(pairs)
}

fn set(name: &str, images: usize) -> String {
    let images: Vec<String> = (0..images)
        .map(|i| format!("i{i} = \"registry.example/{name}/i{i}:1\""))
        .collect();
    format!("[[sets]]\nname = \"{name}\"\nimages = {{ {} }}\n", images.join(", "))
}

struct Running {
    api: FakeApi,
    client: kube::Client,
    dir: tempfile::TempDir,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ControllerError>>,
}

/// The controller loop with `text` as its config file and `env` as its environment.
async fn run(api: FakeApi, client: kube::Client, text: &str, env: Vars) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let support::Booted {
        metrics,
        shutdown,
        task,
        ..
    } = support::boot(client.clone(), settings(&path, Some("kip-0")), env);
    Running {
        api,
        client,
        dir,
        metrics,
        shutdown,
        task,
    }
}

impl Running {
    fn write_config(&self, text: &str) -> Instant {
        let aside = self.dir.path().join(".config.toml.tmp");
        std::fs::write(&aside, text).unwrap();
        let at = Instant::now();
        std::fs::rename(&aside, self.dir.path().join("config.toml")).unwrap();
        at
    }

    async fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> Duration {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}\naccepted events: {:#?}\nrefused: {:#?}",
                self.api.accepted_events(),
                self.api.refused_events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Accepted Events regarding `kind`/`name` with `reason`.
fn events_on(api: &FakeApi, kind: &str, name: &str, reason: &str) -> Vec<Value> {
    api.accepted_events()
        .into_iter()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name && e["reason"] == reason)
        .collect()
}

/// The issue's cluster: 2 nodes, ResourceQuota "tight" (limits.memory 100Mi, 80Mi used by the 2 running
/// pods of `general`), the puller's Deployment "kip". Returns the controller running `general` alone.
async fn issue_scenario() -> Running {
    let (api, client) = FakeApi::start();
    api.add_nodes(2);
    api.add_deployment(NS, "kip");
    general_on_two_nodes_in_tight_quota(api, client).await
}

/// Runs `general` (2 images) and, once created, gives it the status of pods on 2 nodes and the quota
/// "tight" that those pods fill to 80Mi of 100Mi.
async fn general_on_two_nodes_in_tight_quota(api: FakeApi, client: kube::Client) -> Running {
    let env = vars(&[("DEPLOYMENT_NAME", "kip")]);
    let r = run(api, client, &config_toml(&[set("general", 2)]), env).await;
    r.wait_for("general created", Duration::from_secs(5), |r| {
        r.api.daemonset(NS, "general").is_some()
    })
    .await;
    // The DaemonSet controller runs general's pods on both nodes.
    assert!(r.api.set_daemonset_status(NS, "general", 2, 2, 2));
    // Their 2 x 2 x 20Mi are what the quota counts as used.
    r.api.add_quota(
        NS,
        "tight",
        json!({"limits.memory": "100Mi"}),
        json!({"limits.memory": "80Mi"}),
    );
    r
}

#[tokio::test]
async fn quota_event_names_the_set_its_need_and_what_is_free_on_its_daemonset() {
    let r = issue_scenario().await;
    let edit = r.write_config(&config_toml(&[set("general", 2), set("wide", 5)]));
    let took = r
        .wait_for("a QuotaExceeded Event on DaemonSet wide", Duration::from_secs(5), |r| {
            !events_on(&r.api, "DaemonSet", "wide", "QuotaExceeded").is_empty()
        })
        .await;
    let event = &events_on(&r.api, "DaemonSet", "wide", "QuotaExceeded")[0];
    assert_eq!(
        event["note"].as_str().unwrap(),
        "set \"wide\" needs limits.memory 200Mi (5 images × 2 nodes × 20Mi); ResourceQuota \"tight\" has 20Mi free; its cache pods will not be created"
    );
    assert_eq!(event["type"], "Warning");
    // The total goes on the owner Deployment, naming the set that does not fit.
    let total = events_on(&r.api, "Deployment", "kip", "QuotaExceeded");
    assert_eq!(total.len(), 1, "{total:#?}");
    let note = total[0]["note"].as_str().unwrap();
    assert!(note.contains("280Mi") && note.contains("not fitting: wide"), "{note}");
    // The same figures as metrics.
    let text = r.metrics.encode();
    let needed = format!(
        "kip_quota_shortfall_needed{{set=\"wide\",resource=\"limits.memory\",source=\"ResourceQuota/tight\"}} {}",
        200.0 * 1_048_576.0
    );
    assert!(text.contains(&needed), "{needed} not in\n{text}");
    assert!(r.api.refused_events().is_empty(), "{:#?}", r.api.refused_events());
    println!(
        "quota Event on DaemonSet wide {:?} after the edit ({took:?} of waiting)",
        edit.elapsed()
    );
    r.stop().await;
}

/// Seen on the real cluster: the quota counts a set's new pods at their admission, while its DaemonSet status
/// still shows none of them on a node (not yet bound, or not yet synced). Those pods are the set's own, not
/// others' usage: a set that fits is not reported as not fitting.
#[tokio::test]
async fn a_sets_own_new_pods_are_not_counted_as_others_usage() {
    let (api, client) = FakeApi::start();
    api.add_nodes(2);
    let r = run(api, client, &config_toml(&[set("ok", 1)]), Vars::default()).await;
    r.wait_for("ok created", Duration::from_secs(5), |r| {
        r.api.daemonset(NS, "ok").is_some()
    })
    .await;
    // 2 pods of 20Mi admitted: the quota's used is 40Mi of 50Mi; the status shows 2 desired, 0 on a node.
    let pod = |i: usize| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("ok-{i}"), "namespace": NS, "labels": {
                kubernetes_image_puller::labels::NAME: kubernetes_image_puller::labels::CACHE_NAME,
                kubernetes_image_puller::labels::SET: "ok"}},
            "spec": {"containers": [{"name": "i0", "image": "registry.example/ok/i0:1"}]},
            "status": {"phase": "Pending"}})
    };
    r.api.add_pods(NS, [pod(0), pod(1)]);
    r.api.add_quota(
        NS,
        "tight",
        json!({"limits.memory": "50Mi"}),
        json!({"limits.memory": "40Mi"}),
    );
    assert!(r.api.set_daemonset_status(NS, "ok", 2, 0, 0));
    // The quick look after the status change runs the quota check (2 s); give it time to report.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = r.metrics.encode();
    assert!(text.contains("kip_quota_shortfalls 0"), "{text}");
    assert!(
        events_on(&r.api, "DaemonSet", "ok", "QuotaExceeded").is_empty(),
        "{:#?}",
        r.api.accepted_events()
    );
    r.stop().await;
}

#[tokio::test]
async fn quota_event_comes_from_the_daemonset_count_when_nodes_cannot_be_counted() {
    let (api, client) = FakeApi::start();
    // No nodes to list (as without the optional `list nodes`): a new set's count comes from its status.
    let r = general_on_two_nodes_in_tight_quota(api, client).await;
    let edit = r.write_config(&config_toml(&[set("general", 2), set("wide", 5)]));
    r.wait_for("wide created", Duration::from_secs(5), |r| {
        r.api.daemonset(NS, "wide").is_some()
    })
    .await;
    assert!(r.api.set_daemonset_status(NS, "wide", 2, 0, 0));
    r.wait_for("a QuotaExceeded Event on DaemonSet wide", Duration::from_secs(5), |r| {
        !events_on(&r.api, "DaemonSet", "wide", "QuotaExceeded").is_empty()
    })
    .await;
    let waited = edit.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let note = events_on(&r.api, "DaemonSet", "wide", "QuotaExceeded")[0]["note"].clone();
    assert!(
        note.as_str().unwrap().contains("200Mi (5 images × 2 nodes × 20Mi)"),
        "{note}"
    );
    println!("quota Event from the DaemonSet's count {waited:?} after the edit");
    r.stop().await;
}

#[tokio::test]
async fn pods_the_api_refused_are_reported_within_seconds_and_in_status() {
    let r = issue_scenario().await;
    r.write_config(&config_toml(&[set("general", 2), set("wide", 5)]));
    r.wait_for("wide created", Duration::from_secs(5), |r| {
        r.api.daemonset(NS, "wide").is_some()
    })
    .await;
    // The DaemonSet controller: 2 nodes desired, no pod created, the quota's refusal as an Event.
    let write = Instant::now();
    r.api.record_failed_create(NS, "wide", QUOTA_MESSAGE);
    assert!(r.api.set_daemonset_status(NS, "wide", 2, 0, 0));
    let took = r
        .wait_for("a PodsNotCreated Event on wide", Duration::from_secs(5), |r| {
            !events_on(&r.api, "DaemonSet", "wide", "PodsNotCreated").is_empty()
        })
        .await;
    let note = events_on(&r.api, "DaemonSet", "wide", "PodsNotCreated")[0]["note"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.starts_with("2 of 2 nodes have no pod of set \"wide\": FailedCreate (quota): exceeded quota: tight"),
        "{note}"
    );
    let metric = "kip_set_nodes_without_pod{set=\"wide\",reason=\"quota\"} 2";
    r.wait_for("the missing-pod metric", Duration::from_secs(1), |r| {
        r.metrics.encode().contains(metric)
    })
    .await;
    println!(
        "pods not created: Event {:?} after the DaemonSet status ({took:?})",
        write.elapsed()
    );

    // `status` from a laptop: no DEPLOYMENT_NAME, no POD_NAME; same answer as the controller's.
    let dir = r.dir.path().join("config.toml");
    let report = controller::status(r.client.clone(), Some(&dir), &Vars::default())
        .await
        .expect("status");
    let by_name = |n: &str| report.sets.iter().find(|h| h.set == n).unwrap();
    assert!(
        by_name("general").up_to_date && by_name("general").present,
        "{report:#?}"
    );
    assert!(by_name("wide").up_to_date, "{report:#?}");
    let wide = by_name("wide");
    assert_eq!(wide.nodes_without_pod, 2);
    let why = wide.not_created.as_ref().expect("the refusal's reason");
    assert_eq!((why.reason.as_str(), why.cause.as_str()), ("FailedCreate", "quota"));
    assert!(why.message.contains("exceeded quota: tight"));
    assert!(!report.is_healthy(), "status must exit non-zero");
    let json = serde_json::to_value(&report).unwrap();
    let wide_json = json["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["set"] == "wide")
        .unwrap();
    assert_eq!(wide_json["failing"][0]["reason"], "FailedCreate");
    assert_eq!(wide_json["failing"][0]["node_count"], 2);
    assert_eq!(json["shortfalls"][0]["set"], "wide");
    assert_eq!(json["shortfalls"][0]["needed"], "200Mi");
    assert_eq!(json["shortfalls"][0]["available"], "20Mi");
    let table = kubernetes_image_puller::commands::status::table(&report);
    assert!(
        table.contains("not created: set wide lacks a pod on 2 of 2 node(s): FailedCreate (quota)"),
        "{table}"
    );
    r.stop().await;
}

#[tokio::test]
async fn pod_security_and_limit_range_refusals_are_named() {
    let (api, client) = FakeApi::start();
    api.add_nodes(1);
    api.add_limit_range(NS, "small", json!([{"type": "Container", "max": {"memory": "16Mi"}}]));
    let r = run(api, client, &config_toml(&[set("a", 1), set("b", 1)]), Vars::default()).await;
    r.wait_for("both created", Duration::from_secs(5), |r| {
        r.api.daemonset(NS, "a").is_some() && r.api.daemonset(NS, "b").is_some()
    })
    .await;
    r.api.record_failed_create(
        NS,
        "a",
        "Error creating: pods \"a-x1\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true",
    );
    r.api.record_failed_create(
        NS,
        "b",
        "Error creating: pods \"b-x1\" is forbidden: maximum memory usage per Container is 16Mi, but limit is 20Mi",
    );
    assert!(r.api.set_daemonset_status(NS, "a", 1, 0, 0));
    assert!(r.api.set_daemonset_status(NS, "b", 1, 0, 0));
    for (set, cause) in [("a", "pod_security"), ("b", "limit_range")] {
        let metric = format!("kip_set_nodes_without_pod{{set=\"{set}\",reason=\"{cause}\"}} 1");
        r.wait_for(&metric, Duration::from_secs(5), |r| {
            r.metrics.encode().contains(&metric)
        })
        .await;
    }
    // The LimitRange pre-check names the set, what it asks and the bound.
    let lr = events_on(&r.api, "DaemonSet", "b", "QuotaExceeded");
    assert!(
        lr.iter().any(|e| e["note"].as_str().unwrap().starts_with(
            "set \"b\" asks memory limit per container 20Mi (each container 20Mi); LimitRange \"small\" allows at most 16Mi"
        )),
        "{lr:#?}"
    );
    assert!(r.api.refused_events().is_empty(), "{:#?}", r.api.refused_events());
    r.stop().await;
}

#[tokio::test]
async fn events_are_valid_without_a_pod_name_and_aggregated() {
    let (api, client) = FakeApi::start();
    let ds = api.create(&support::rendered(&config_toml(&[set("one", 1)]))[0]);
    // No POD_NAME (a controller outside a pod): reportingInstance falls back to the host name.
    let events = Events::new(client.clone(), None, None);
    for _ in 0..5 {
        events.on_daemonset(&ds, true, "Test", "same note".into()).await;
    }
    events.on_daemonset(&ds, true, "Test", "another note".into()).await;
    let accepted = api.accepted_events();
    assert_eq!(accepted.len(), 2, "one Event per note, not one per call: {accepted:#?}");
    for e in &accepted {
        assert!(!e["reportingInstance"].as_str().unwrap().is_empty());
        assert_eq!(e["regarding"]["kind"], "DaemonSet");
    }
    let posts = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/events"))
        .count();
    assert_eq!(posts, 2);
    // A config-level Event with neither an owner Deployment nor a pod name goes to the log only.
    events.on_config(true, "Nowhere", "logged only".into()).await;
    assert_eq!(api.accepted_events().len(), 2);
    // A refused Event is not taken as written: the same note is tried again next time.
    api.inject(Match::Any, Action::Status(422), 1);
    events.on_daemonset(&ds, true, "Retry", "refused once".into()).await;
    assert!(api.accepted_events().iter().all(|e| e["reason"] != "Retry"));
    events.on_daemonset(&ds, true, "Retry", "refused once".into()).await;
    assert_eq!(
        api.accepted_events().iter().filter(|e| e["reason"] == "Retry").count(),
        1
    );
    // A note over the API's limit is cut to 1024 bytes, on a character boundary.
    events.on_daemonset(&ds, false, "Long", "é".repeat(1000)).await;
    let long = api
        .accepted_events()
        .into_iter()
        .find(|e| e["reason"] == "Long")
        .unwrap();
    assert!(long["note"].as_str().unwrap().len() <= 1024);
    assert!(api.refused_events().is_empty());
}

#[tokio::test]
async fn a_repeat_after_the_period_is_a_series_on_the_same_event() {
    let (api, client) = FakeApi::start();
    let ds = api.create(&support::rendered(&config_toml(&[set("one", 1)]))[0]);
    let events = Events::new(client, Some("kip-0".into()), Some(NS.into())).with_repeat_after(Duration::ZERO);
    for _ in 0..3 {
        events.on_daemonset(&ds, true, "Again", "same note".into()).await;
    }
    let accepted = api.accepted_events();
    assert_eq!(accepted.len(), 1, "one Event, counted: {accepted:#?}");
    assert_eq!(accepted[0]["series"]["count"], 3);
    assert_eq!(accepted[0]["note"], "same note");
    assert_eq!(accepted[0]["reportingInstance"], "kip-0");
    // Expired on the server (Events live about an hour): written anew.
    api.forget_events();
    events.on_daemonset(&ds, true, "Again", "same note".into()).await;
    assert_eq!(api.accepted_events().len(), 1);
    assert!(api.accepted_events()[0]["series"].is_null());
    assert!(api.refused_events().is_empty(), "{:#?}", api.refused_events());
}

#[tokio::test]
async fn the_fake_event_endpoint_refuses_what_the_real_one_refuses() {
    let (api, client) = FakeApi::start();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, NS);
    let valid = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "one.1", "namespace": NS},
        "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Normal", "reason": "R", "action": "A",
        "note": "n", "reportingController": "kubernetes-image-puller", "reportingInstance": "kip-0",
        "regarding": {"kind": "DaemonSet", "name": "one", "namespace": NS},
    });
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: [(&str, Mutation); 6] = [
        (
            "reportingInstance: Required value",
            Box::new(|e| e["reportingInstance"] = json!("")),
        ),
        ("eventTime: Required value", Box::new(|e| e["eventTime"] = Value::Null)),
        ("note: Too long", Box::new(|e| e["note"] = json!("x".repeat(1025)))),
        ("type: Unsupported value", Box::new(|e| e["type"] = json!("Error"))),
        (
            "metadata.name: Invalid value",
            Box::new(|e| e["metadata"]["name"] = json!("Bad_Name")),
        ),
        // About a Node (cluster-scoped) outside `default`: what the real API server answered the warm gate.
        (
            "involvedObject.namespace: Invalid value",
            Box::new(|e| e["regarding"] = json!({"kind": "Node", "name": "n1", "apiVersion": "v1"})),
        ),
    ];
    for (field, mutate) in &cases {
        let mut e = valid.clone();
        mutate(&mut e);
        let e: k8s_openapi::api::events::v1::Event = serde_json::from_value(e).unwrap();
        match events.create(&PostParams::default(), &e).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422);
                assert!(s.message.contains(field), "{field}: {}", s.message);
            }
            other => panic!("{field}: expected a 422, got {other:?}"),
        }
    }
    let ok: k8s_openapi::api::events::v1::Event = serde_json::from_value(valid).unwrap();
    events
        .create(&PostParams::default(), &ok)
        .await
        .expect("a valid Event is accepted");
    assert_eq!(api.refused_events().len(), cases.len());
}

#[tokio::test]
async fn without_list_on_events_status_still_counts_missing_pods() {
    let (api, client) = FakeApi::start();
    api.add_nodes(1);
    api.forbid_event_lists();
    let r = run(api, client.clone(), &config_toml(&[set("a", 1)]), Vars::default()).await;
    r.wait_for("a created", Duration::from_secs(5), |r| {
        r.api.daemonset(NS, "a").is_some()
    })
    .await;
    r.api.record_failed_create(NS, "a", QUOTA_MESSAGE);
    assert!(r.api.set_daemonset_status(NS, "a", 1, 0, 0));
    let metric = "kip_set_nodes_without_pod{set=\"a\",reason=\"unknown\"} 1";
    r.wait_for(metric, Duration::from_secs(5), |r| r.metrics.encode().contains(metric))
        .await;
    let report = controller::status(client, Some(&r.dir.path().join("config.toml")), &Vars::default())
        .await
        .expect("status works without list on events");
    let a = &report.sets[0];
    assert_eq!((a.nodes_without_pod, a.not_created.is_none()), (1, true), "{a:#?}");
    assert!(!report.is_healthy());
    let table = kubernetes_image_puller::commands::status::table(&report);
    assert!(
        table.contains("not created: set a lacks a pod on 1 of 1 node(s): no FailedCreate Event"),
        "{table}"
    );
    // The feature is off after the first 403: one list of events per process, not one per check.
    let lists = r
        .api
        .requests()
        .into_iter()
        .filter(|q| q.path.ends_with("/events") && q.method == http::Method::GET && q.status == 403)
        .count();
    assert!(
        lists <= 2,
        "{lists} forbidden lists: the controller's first and status's"
    );
    r.stop().await;
}

#[tokio::test]
async fn once_fails_when_the_api_refuses_the_pods() {
    let (api, client) = FakeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_toml(&[set("wide", 5)])).unwrap();
    let controller = Controller::new(
        client,
        settings(&path, None),
        Box::new(Vars::default()),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    );
    let once = tokio::spawn(async move { controller::run_once(controller).await.ok() });
    // The DaemonSet controller, while `--once` waits: the pods are refused.
    let start = Instant::now();
    while api.daemonset(NS, "wide").is_none() {
        assert!(start.elapsed() < Duration::from_secs(2), "wide not created");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.record_failed_create(NS, "wide", QUOTA_MESSAGE);
    assert!(api.set_daemonset_status(NS, "wide", 2, 0, 0));
    let ok = tokio::time::timeout(Duration::from_secs(10), once)
        .await
        .unwrap()
        .unwrap();
    assert!(!ok, "--once must exit non-zero when the API refuses the set's pods");
}

#[tokio::test]
async fn pods_missing_later_without_a_write_are_looked_at_too() {
    let (api, client) = FakeApi::start();
    api.add_nodes(1);
    let r = run(api, client, &config_toml(&[set("a", 1)]), Vars::default()).await;
    r.wait_for("a created", Duration::from_secs(5), |r| {
        r.api.daemonset(NS, "a").is_some()
    })
    .await;
    assert!(r.api.set_daemonset_status(NS, "a", 1, 1, 1));
    // Well after the quick checks of the write: a new node whose pod the quota refuses.
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.api.record_failed_create(NS, "a", QUOTA_MESSAGE);
    let at = Instant::now();
    assert!(r.api.set_daemonset_status(NS, "a", 2, 1, 1));
    r.wait_for("a PodsNotCreated Event on a", Duration::from_secs(5), |r| {
        !events_on(&r.api, "DaemonSet", "a", "PodsNotCreated").is_empty()
    })
    .await;
    let note = events_on(&r.api, "DaemonSet", "a", "PodsNotCreated")[0]["note"].clone();
    assert!(note.as_str().unwrap().starts_with("1 of 2 nodes have no pod"), "{note}");
    println!("a later shortage reported {:?} after the status change", at.elapsed());
    r.stop().await;
}
