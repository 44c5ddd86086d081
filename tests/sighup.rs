//! SIGHUP re-reads the config. In env-var mode (no file to watch) it is the only way to reload, so this
//! uses a variable source the test can change. Its own test binary: the signal goes to the whole process.

mod support;

use std::time::Duration;

use kubernetes_image_puller::controller::Settings;
use support::fake_api::FakeApi;
use support::{NS, Vars};
use tokio::time::Instant;

fn image_of(api: &FakeApi) -> Option<String> {
    let ds = api.daemonset(NS, "kubernetes-image-puller")?;
    ds.spec?.template.spec?.containers.first()?.image.clone()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_env_var_config() {
    let (api, client) = FakeApi::start();
    let vars = Vars::default();
    vars.set("NAMESPACE", NS);
    vars.set("IMAGES", "main=quay.io/kip/main:1");
    let settings = Settings {
        reload_debounce: Duration::from_millis(10),
        pod_name: None,
        pod_namespace: None,
        ..support::settings(None)
    };
    let support::Booted {
        shutdown: stop, task, ..
    } = support::boot(client, settings, vars.clone());
    wait_for("the DaemonSet of the env-var set", || {
        image_of(&api).as_deref() == Some("quay.io/kip/main:1")
    })
    .await;

    // A changed variable is not noticed by itself...
    vars.set("IMAGES", "main=quay.io/kip/main:2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(image_of(&api).as_deref(), Some("quay.io/kip/main:1"));

    // ...but SIGHUP re-reads it and applies it.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the new image after SIGHUP", || {
        image_of(&api).as_deref() == Some("quay.io/kip/main:2")
    })
    .await;

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
