//! The fault suite: the whole controller loop through a long, seeded sequence of config changes (sets added,
//! edited, removed; broken files; rapid edits) against the fake API server while it injects faults (409s,
//! 500s, slow answers, dropped watches, an API that is away for a while) and another user deletes or edits
//! DaemonSets. Bounded in steps and time.
//!
//! Asserted throughout: nothing unlabelled or outside the namespace is ever written; a set present in every
//! good config ("keep") is never deleted by the controller; a DaemonSet is deleted only when some good
//! config written before the delete lacked its set (never because of a fault or a broken file).
//! Asserted at the end: the cluster converges to the last good config, then makes no writes.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::DaemonSet;
use kubernetes_image_puller::controller::Settings;
use kubernetes_image_puller::labels;
use kubernetes_image_puller::reconcile::{contains, spec_hash_of};
use tokio::time::Instant;

use support::fake_api::{Action, FakeApi, Match};
use support::{NS, Vars, config_toml, rendered, set_toml};

const STEPS: usize = 60;
const OTHER_NS: &str = "someone-else";

/// A small deterministic generator (xorshift), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A good config: "keep" always, plus a random subset of the optional sets with random image tags.
fn good_config(rng: &mut Rng) -> (String, BTreeSet<String>) {
    let mut names = BTreeSet::from(["keep".to_owned()]);
    let mut sets = vec![set_toml(
        "keep",
        &[("main", &format!("quay.io/kip/keep:{}", rng.below(3)))],
    )];
    for name in ["alpha", "beta", "gamma", "delta"] {
        if rng.below(2) == 0 {
            let tag = format!("quay.io/kip/{name}:{}", rng.below(4));
            sets.push(set_toml(
                name,
                &[
                    ("main", &tag),
                    (
                        "side",
                        "quay.io/kip/side@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                    ),
                ],
            ));
            names.insert(name.to_owned());
        }
    }
    (config_toml(&sets), names)
}

fn broken_config(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => "namespace = \"kip-test\"\n[[sets]\nname = ".to_owned(),
        1 => config_toml(&[format!(
            "{}memory_request = \"64Mi\"\nmemory_limit = \"32Mi\"\n",
            set_toml("keep", &[("main", "quay.io/kip/keep:1")])
        )]),
        _ => config_toml(&[]),
    }
}

fn write(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn foreign(namespace: &str, name: &str, labelled_ours: bool) -> DaemonSet {
    let mut labels = serde_json::json!({"app": name});
    if labelled_ours {
        labels[labels::MANAGED_BY] = serde_json::json!(labels::MANAGER);
        labels[labels::INSTANCE] = serde_json::json!(support::INSTANCE);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "quay.io/x/y:1"}]}}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_config_changes_and_api_faults() {
    let seed = std::env::var("KIP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    let mut rng = Rng(seed);
    let (api, client) = FakeApi::start();
    // Objects the controller must never touch: an unlabelled one in its namespace, and one labelled as its
    // own but in another namespace.
    api.create(&foreign(NS, "not-ours", false));
    api.create(&foreign(OTHER_NS, "alpha", true));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let (first, first_names) = good_config(&mut rng);
    write(&path, &first);
    let start = Instant::now();
    // Good configs by the time they were written: a delete is justified only by one of them.
    let mut good: Vec<(Instant, BTreeSet<String>, String)> = vec![(start, first_names, first)];

    let settings = Settings {
        reload_debounce: Duration::from_millis(30),
        resync: Duration::from_secs(2),
        ..support::settings(Some(&path))
    };
    let support::Booted {
        shutdown: stop, task, ..
    } = support::boot(client, settings, Vars::default());

    let (mut applied, mut broken, mut faults, mut user_actions) = (0u32, 0u32, 0u32, 0u32);
    for _ in 0..STEPS {
        match rng.below(10) {
            0..=2 => {
                let (text, names) = good_config(&mut rng);
                good.push((Instant::now(), names, text.clone()));
                write(&path, &text);
                applied += 1;
            }
            3 => {
                // Rapid edits: only the last one has to win.
                for _ in 0..3 {
                    let (text, names) = good_config(&mut rng);
                    good.push((Instant::now(), names, text.clone()));
                    write(&path, &text);
                    applied += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            4 => {
                write(&path, &broken_config(&mut rng));
                broken += 1;
            }
            5 => {
                let (matcher, action, times) = match rng.below(5) {
                    0 => (Match::Apply, Action::Status(409), 2),
                    1 => (Match::Any, Action::Status(500), 3),
                    2 => (Match::DaemonSetWrites, Action::Delay(Duration::from_millis(300)), 2),
                    3 => (Match::Watch, Action::WatchGone, 1),
                    _ => (Match::Any, Action::ConnectionError, 2),
                };
                api.inject(matcher, action, times);
                faults += 1;
            }
            6 => {
                if rng.below(2) == 0 {
                    api.drop_watches();
                } else {
                    api.away_for(Duration::from_millis(400));
                }
                faults += 1;
            }
            7 => {
                // Another user deletes one of ours.
                if let Some(name) = api
                    .daemonset_names(NS)
                    .into_iter()
                    .filter(|n| n != "not-ours")
                    .nth(rng.below(3) as usize)
                {
                    api.delete(NS, &name);
                    user_actions += 1;
                }
            }
            // Another user edits one of ours by hand.
            8 if api.edit(NS, "keep", |ds| {
                ds["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/evil/x:1".into()
            }) =>
            {
                user_actions += 1;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(40 + rng.below(120))).await;
    }

    // The last good config is what must be in force; write it once more so the end state is unambiguous.
    let (_, final_names, final_text) = good.last().cloned().unwrap();
    let final_written = Instant::now();
    write(&path, &final_text);
    let want = rendered(&final_text);
    let converged = loop {
        let live: BTreeSet<String> = api
            .daemonset_names(NS)
            .into_iter()
            .filter(|n| {
                api.daemonset(NS, n)
                    .is_some_and(|d| d.metadata.labels.unwrap_or_default().contains_key(labels::MANAGED_BY))
            })
            .collect();
        // Same spec hash and no hand edit left standing (a hand edit keeps the hash).
        let hashes_match = want.iter().all(|d| {
            api.daemonset(NS, d.metadata.name.as_deref().unwrap())
                .is_some_and(|live| spec_hash_of(&live) == spec_hash_of(d) && contains(&live, d))
        });
        if live == final_names && hashes_match {
            break final_written.elapsed();
        }
        assert!(
            final_written.elapsed() < Duration::from_secs(20),
            "no convergence: live {live:?}, want {final_names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Steady state: no writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes_at_rest = api.daemonset_writes_since(quiet_from);

    let _ = stop.send(true);
    let stopped = tokio::time::timeout(Duration::from_secs(3), task).await;

    // Safety over the whole history.
    let requests = api.requests();
    for r in &requests {
        assert!(
            !r.path.contains(&format!("/namespaces/{OTHER_NS}/")),
            "touched another namespace: {r}"
        );
        if r.method != Method::GET {
            assert!(
                !r.path.ends_with("/daemonsets/not-ours"),
                "wrote an object that is not ours: {r}"
            );
        }
        if r.method == Method::DELETE && r.path.contains("/daemonsets/") && (200..300).contains(&r.status) {
            let name = r.path.rsplit('/').next().unwrap();
            assert_ne!(name, "keep", "deleted a set present in every good config: {r}");
            let justified = good.iter().any(|(at, names, _)| *at <= r.at && !names.contains(name));
            assert!(
                justified,
                "deleted {name} though every good config written before had it: {r}"
            );
        }
    }
    assert_eq!(
        api.daemonset(NS, "not-ours")
            .unwrap()
            .metadata
            .resource_version
            .as_deref(),
        Some("1")
    );
    assert!(writes_at_rest.is_empty(), "writes at steady state: {writes_at_rest:?}");
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "controller did not stop cleanly: {stopped:?}"
    );

    let writes = requests.iter().filter(|r| r.is_daemonset_write()).count();
    let failed = requests.iter().filter(|r| r.status == 0 || r.status >= 400).count();
    println!(
        "fault suite (seed {seed:#x}): {STEPS} steps in {:?}; {applied} good configs, {broken} broken files, {faults} faults injected, \
         {user_actions} edits/deletes by another user; {} requests ({writes} DaemonSet writes, {failed} failed); \
         converged {converged:?} after the last write; 0 writes at rest",
        start.elapsed(),
        requests.len()
    );
}
