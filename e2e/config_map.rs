//! `--config-map` against a real API server: an edit adding a set creates its DaemonSet at once, a broken
//! edit leaves a Warning Event on the ConfigMap (file position and reason) and changes nothing, and deleting
//! the ConfigMap deletes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};

use super::*;

const CM: &str = "kip-e2e-config";

fn config_map(text: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CM.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("config.toml".to_owned(), text.to_owned())])),
        ..Default::default()
    }
}

/// `kubectl apply` of the ConfigMap; returns when the API server has accepted it.
async fn apply(api: &Api<ConfigMap>, text: &str) -> Instant {
    let params = PatchParams::apply("kip-e2e").force();
    api.patch(CM, &params, &Patch::Apply(&config_map(text)))
        .await
        .expect("apply ConfigMap");
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_edits_apply_through_the_api() {
    let client = client_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e-cm").await;
    let image = "registry.k8s.io/pause:3.10";
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    let one = config_text(&ns.name, &[("general", image)]);
    apply(&cms, &one).await;
    // The mounted file stand-in: the same content, never updated (kubelet's sync is what this avoids).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write_config(&path, &one);

    let settings = Settings {
        config_path: Some(path),
        reload_debounce: Duration::from_millis(200),
        resync: Duration::from_secs(300),
        leader_elect: false,
        pod_name: None,
        pod_namespace: Some(ns.name.clone()),
        failure_settle: kubernetes_image_puller::controller::FAILURE_SETTLE,
        plain_http_registries: Vec::new(),
    };
    let controller = Controller::new(
        client.clone(),
        settings,
        Box::new(Env),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
    )
    .with_config_map(Some(CM.into()));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(async move { controller.run(rx).await.expect("controller run") });
    let running = Running { stop, task };
    wait_until("general created", || async { get(&dss, "general").await.is_some() }).await;

    // 1. An edit adding a set: its DaemonSet exists moments after the API accepted the edit.
    let two = config_text(&ns.name, &[("general", image), ("second", image)]);
    let accepted = apply(&cms, &two).await;
    while get(&dss, "second").await.is_none() {
        assert!(accepted.elapsed() < WAIT, "second set never created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = accepted.elapsed();
    println!("e2e: ConfigMap edit accepted -> new DaemonSet visible: {took:?} (goal <= 100 ms for the create)");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let before: Vec<(String, Option<i64>)> = dss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|d| (d.uid().unwrap_or_default(), d.metadata.generation))
        .collect();

    // 2. A broken edit: a Warning Event on the ConfigMap with the position and reason; nothing changes.
    let broken = format!("{two}node_selecter = {{ \"kubernetes.io/os\" = \"linux\" }}\n");
    let line = broken.lines().position(|l| l.starts_with("node_selecter")).unwrap() + 1;
    let edited = apply(&cms, &broken).await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let note = loop {
        let list = events.list(&ListParams::default()).await.expect("list events");
        let found = list.items.into_iter().find(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("ConfigMap") && r.name.as_deref() == Some(CM))
                && e.reason.as_deref() == Some("ConfigRejected")
        });
        if let Some(e) = found {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            break e.note.unwrap_or_default();
        }
        assert!(edited.elapsed() < WAIT, "no Event on the ConfigMap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("e2e: broken edit -> Event on the ConfigMap: {:?}", edited.elapsed());
    assert!(note.contains(&format!("configmap/{CM}:config.toml:{line}:1")), "{note}");
    assert!(note.contains("node_selecter"), "{note}");

    // 3. The ConfigMap deleted: nothing deleted.
    cms.delete(CM, &Default::default()).await.expect("delete ConfigMap");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<(String, Option<i64>)> = dss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|d| (d.uid().unwrap_or_default(), d.metadata.generation))
        .collect();
    assert_eq!(
        before, after,
        "a rejected edit or a deleted ConfigMap changed DaemonSets"
    );
    running.stop().await;
}
