//! A SIGHUP reload that changes `caching_interval_hours` re-arms the health check on the new interval (in
//! env-var mode SIGHUP is the only reload, so without this a new interval never took effect). Paused time:
//! hours pass in milliseconds, and the health check is seen by its pod list. Its own test binary: the
//! signal goes to the whole process.

mod support;

use std::time::Duration;

use support::fake_api::FakeApi;
use support::{NS, Vars};
use tokio::time::Instant;

/// The image of the env-var set's DaemonSet.
fn image_of(api: &FakeApi) -> Option<String> {
    support::first_image(api, "kubernetes-image-puller")
}

/// When the health checks since `t` listed the set's pods (the only pod lists the controller makes).
fn health_checks_since(api: &FakeApi, t: Instant) -> Vec<Instant> {
    api.requests_since(t)
        .into_iter()
        .filter(|r| r.path.ends_with("/pods") && !r.is_watch())
        .map(|r| r.at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn sighup_rearms_the_health_check_on_the_new_interval() {
    let (api, client) = FakeApi::start();
    let vars = Vars::default();
    vars.set("NAMESPACE", NS);
    vars.set("IMAGES", "main=quay.io/kip/main:1");
    vars.set("CACHING_INTERVAL_HOURS", "5");
    let settings = support::env_var_settings();
    let support::Booted {
        shutdown: stop, task, ..
    } = support::boot(client, settings, vars.clone());
    let started = Instant::now();
    support::wait_for(&api, "the DaemonSet of the env-var set", Duration::from_secs(5), || {
        image_of(&api).as_deref() == Some("quay.io/kip/main:1")
    })
    .await;

    // The first health check comes a minute after start; the next would be 5 h later.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        health_checks_since(&api, started).len(),
        1,
        "the first health check, a minute in"
    );

    // SIGHUP with a 1 h interval (and a new image, to know when the reload is done).
    vars.set("CACHING_INTERVAL_HOURS", "1");
    vars.set("IMAGES", "main=quay.io/kip/main:2");
    let hup_sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Real time for the signal handler to run before paused time may jump ahead.
    std::thread::sleep(Duration::from_millis(50));
    support::wait_for(&api, "the new image after SIGHUP", Duration::from_secs(5), || {
        image_of(&api).as_deref() == Some("quay.io/kip/main:2")
    })
    .await;

    // The next health check comes one new interval after the reload, not at the old 5 h period.
    tokio::time::sleep(Duration::from_secs(3600 + 120)).await;
    let checks = health_checks_since(&api, hup_sent);
    assert!(
        !checks.is_empty(),
        "no health check within 1 h of a SIGHUP that set a 1 h interval"
    );
    let after = checks[0] - hup_sent;
    assert!(
        after >= Duration::from_secs(3600) && after < Duration::from_secs(3600 + 60),
        "next health check {after:?} after the reload, want one hour"
    );

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
