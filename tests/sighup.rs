//! SIGHUP re-reads the config. In env-var mode (no file to watch) it is the only way to reload, so this
//! uses a variable source the test can change. Its own test binary: the signal goes to the whole process.

mod support;

use std::time::Duration;

use support::fake_api::FakeApi;
use support::{NS, Vars};

/// The image of the env-var set's DaemonSet.
fn image_of(api: &FakeApi) -> Option<String> {
    support::first_image(api, "kubernetes-image-puller")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_env_var_config() {
    let (api, client) = FakeApi::start();
    let vars = Vars::default();
    vars.set("NAMESPACE", NS);
    vars.set("IMAGES", "main=quay.io/kip/main:1");
    let settings = support::env_var_settings();
    let support::Booted {
        shutdown: stop, task, ..
    } = support::boot(client, settings, vars.clone());
    support::wait_for(&api, "the DaemonSet of the env-var set", Duration::from_secs(5), || {
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
    support::wait_for(&api, "the new image after SIGHUP", Duration::from_secs(5), || {
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
