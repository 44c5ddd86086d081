//! Config → DaemonSets: structure, labels, spec hash, the sleeper, Pod Security "restricted", determinism.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Affinity, Container, NodeAffinity, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kubernetes_image_puller::config::{self, Config, Image, Refresh, SLEEPER_INIT_CONTAINER};
use kubernetes_image_puller::labels;
use kubernetes_image_puller::render::{self, RenderOptions};
use support::{Vars, load_ok, read_repo_file};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn gpu_pools() -> Config {
    config::load_toml_str(
        &read_repo_file("config/gpu-pools.toml"),
        "config/gpu-pools.toml",
        &Vars::none(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn full() -> Config {
    config::load_toml_str(&read_repo_file("tests/fixtures/full.toml"), "full.toml", &Vars::none())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn plain() -> RenderOptions {
    RenderOptions::default()
}

fn pod(ds: &DaemonSet) -> &PodSpec {
    ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn by_name<'a>(dss: &'a [DaemonSet], name: &str) -> &'a DaemonSet {
    dss.iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no DaemonSet {name}"))
}

fn hash_of(ds: &DaemonSet) -> String {
    ds.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::SPEC_HASH))
        .cloned()
        .expect("spec-hash annotation")
}

// ---------------------------------------------------------------------------------------------------------------
// Structure

#[test]
fn one_daemonset_per_set_in_config_order_and_namespace() {
    let c = gpu_pools();
    let dss = render::render(&c, &plain());
    let names: Vec<&str> = dss.iter().map(|d| d.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["general", "gpu"]);
    for ds in &dss {
        assert_eq!(ds.metadata.namespace.as_deref(), Some("kubernetes-image-puller"));
        assert_eq!(ds.status, None);
        assert_eq!(ds.metadata.owner_references, None);
    }
    let c = full();
    let dss = render::render(&c, &plain());
    assert_eq!(dss.len(), 3);
    assert!(
        dss.iter()
            .all(|d| d.metadata.namespace.as_deref() == Some("image-cache"))
    );
}

#[test]
fn one_container_per_image_named_by_its_key() {
    let c = gpu_pools();
    let dss = render::render(&c, &plain());
    for (set, ds) in c.sets.iter().zip(&dss) {
        let containers = &pod(ds).containers;
        let got: Vec<(&str, &str)> = containers
            .iter()
            .map(|c| (c.name.as_str(), c.image.as_deref().unwrap()))
            .collect();
        let want: Vec<(&str, &str)> = set
            .images
            .iter()
            .map(|i| (i.name.as_str(), i.reference.as_str()))
            .collect();
        assert_eq!(got, want);
        for container in containers {
            assert_eq!(
                container.command.as_deref(),
                Some(&[render::SLEEPER_PATH.to_owned()][..])
            );
            assert_eq!(
                container.args.as_deref(),
                Some(&[render::SLEEP_DURATION.to_owned()][..])
            );
            let mounts = container.volume_mounts.as_ref().unwrap();
            assert_eq!(mounts.len(), 1);
            assert_eq!(mounts[0].mount_path, render::SLEEPER_DIR);
            assert_eq!(mounts[0].read_only, Some(true), "cache containers only run the sleeper");
            assert!(container.ports.is_none() && container.env.is_none());
        }
    }
}

#[test]
fn resources_are_the_sets() {
    let c = gpu_pools();
    let dss = render::render(&c, &plain());
    let gpu = by_name(&dss, "gpu");
    for container in pod(gpu)
        .containers
        .iter()
        .chain(pod(gpu).init_containers.as_ref().unwrap())
    {
        let r = container.resources.as_ref().unwrap();
        let get = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
            m.as_ref().unwrap()[k].0.clone()
        };
        assert_eq!(get(&r.requests, "cpu"), ".05");
        assert_eq!(get(&r.requests, "memory"), "10Mi");
        assert_eq!(get(&r.limits, "cpu"), ".2");
        assert_eq!(get(&r.limits, "memory"), "50Mi", "{}", container.name);
    }
    let general = by_name(&dss, "general");
    let r = pod(general).containers[0].resources.as_ref().unwrap();
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "20Mi");
}

#[test]
fn scheduling_fields_come_from_the_set() {
    let c = full();
    let dss = render::render(&c, &plain());
    let gpu = pod(by_name(&dss, "gpu"));
    assert_eq!(
        gpu.node_selector,
        Some(BTreeMap::from([(
            "nvidia.com/gpu.present".to_owned(),
            "true".to_owned()
        )]))
    );
    assert_eq!(
        gpu.tolerations.as_deref(),
        Some(
            &[
                Toleration {
                    key: Some("nvidia.com/gpu".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Toleration::default()
                },
                Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Equal".into()),
                    value: Some("gpu".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(3600),
                },
            ][..]
        )
    );
    let terms = &gpu
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .expect("node affinity")
        .node_selector_terms;
    assert_eq!(
        terms[0].match_expressions.as_ref().unwrap()[0].key,
        "node.kubernetes.io/instance-type"
    );
    let secrets: Vec<&str> = gpu
        .image_pull_secrets
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(secrets, ["regcred"]);
    assert_eq!(gpu.priority_class_name.as_deref(), Some("image-cache"));

    // The "pinned" set clears the pull secrets and has no affinity: the fields are left out, not empty.
    let pinned = pod(by_name(&dss, "pinned"));
    assert_eq!(pinned.image_pull_secrets, None);
    assert_eq!(pinned.affinity, None);
    assert_eq!(pinned.tolerations, None);
    assert_eq!(
        pinned.node_selector,
        Some(BTreeMap::from([("kubernetes.io/os".to_owned(), "linux".to_owned())]))
    );

    // Nothing set: nothing rendered.
    let c = load_ok(support::MINIMAL_SET);
    let p = pod(&render::render(&c, &plain())[0]).clone();
    assert_eq!(
        (
            p.node_selector,
            p.tolerations,
            p.affinity,
            p.image_pull_secrets,
            p.priority_class_name
        ),
        (None, None, None, None, None)
    );
}

#[test]
fn set_annotations_go_on_the_daemonset() {
    let c = full();
    let dss = render::render(&c, &plain());
    let gpu = by_name(&dss, "gpu").metadata.annotations.as_ref().unwrap();
    assert_eq!(gpu.get("example.com/team").map(String::as_str), Some("ml"));
    assert!(gpu.contains_key(labels::SPEC_HASH));
    assert_eq!(gpu.len(), 2 + render::CHECKOV_SKIPS.len());
    let ide = by_name(&dss, "ide").metadata.annotations.as_ref().unwrap();
    assert_eq!(ide.get("example.com/team").map(String::as_str), Some("platform"));
}

/// The scanner's by-design findings are written on each DaemonSet in the form checkov reads: `CHECK=reason`,
/// exactly one `=` (checkov splits on every one), a distinct key each; OpenShift adds the user-id one.
#[test]
fn checkov_skips_with_reasons_on_every_daemonset() {
    let well_formed = |a: &BTreeMap<String, String>, want: usize| {
        let skips: Vec<(&String, &String)> = a.iter().filter(|(k, _)| k.starts_with("checkov.io/skip")).collect();
        assert_eq!(skips.len(), want, "{a:?}");
        for (k, v) in skips {
            let (check, reason) = v.split_once('=').unwrap_or_else(|| panic!("{k}: no reason in {v:?}"));
            assert!(check.starts_with("CKV_K8S_"), "{k}: {check}");
            assert!(reason.len() > 20 && !reason.contains('='), "{k}: reason {reason:?}");
        }
    };
    for ds in render::render(&gpu_pools(), &plain()) {
        well_formed(ds.metadata.annotations.as_ref().unwrap(), render::CHECKOV_SKIPS.len());
    }
    let openshift = RenderOptions {
        openshift: true,
        owner: None,
    };
    for ds in render::render(&gpu_pools(), &openshift) {
        let a = ds.metadata.annotations.as_ref().unwrap();
        well_formed(a, render::CHECKOV_SKIPS.len() + 1);
        assert!(a[render::CHECKOV_SKIP_OPENSHIFT.0].starts_with("CKV_K8S_40="));
    }
    // A set's own annotation of the same key wins: the admin's word over the tool's.
    let mut c = gpu_pools();
    c.sets[0]
        .annotations
        .insert("checkov.io/skip1".into(), "CKV_K8S_8=ours".into());
    let dss = render::render(&c, &plain());
    assert_eq!(
        dss[0].metadata.annotations.as_ref().unwrap()["checkov.io/skip1"],
        "CKV_K8S_8=ours"
    );
}

#[test]
fn owner_reference_is_passed_through() {
    let owner = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "kubernetes-image-puller".into(),
        uid: "1234".into(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let options = RenderOptions {
        openshift: false,
        owner: Some(owner.clone()),
    };
    for ds in render::render(&gpu_pools(), &options) {
        assert_eq!(ds.metadata.owner_references, Some(vec![owner.clone()]));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Labels

#[test]
fn labels_mark_what_this_tool_owns() {
    let c = full();
    for ds in render::render(&c, &plain()) {
        let name = ds.metadata.name.clone().unwrap();
        let l = ds.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::MANAGED_BY], "kubernetes-image-puller");
        assert_eq!(l[labels::PART_OF], "kubernetes-image-puller");
        assert_eq!(l[labels::SET], name);
        assert_eq!(
            l[labels::INSTANCE],
            "kubernetes-image-puller",
            "instance = deployment_name"
        );
        assert_eq!(l[labels::NAME], labels::CACHE_NAME);

        let spec = ds.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert!(spec.selector.match_expressions.is_none());
        let template = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        for (k, v) in selector {
            assert_eq!(
                template.get(k),
                Some(v),
                "selector label {k} must be on the pod template"
            );
        }
        assert_eq!(selector[labels::SET], name, "each set selects only its own pods");
        // The owned-objects selector matches the DaemonSet's labels.
        for term in labels::owned_selector(render::instance(&c)).split(',') {
            let (k, v) = term.split_once('=').unwrap();
            assert_eq!(l.get(k).map(String::as_str), Some(v), "{term}");
        }
    }
}

#[test]
fn instance_label_follows_the_deployment_name() {
    let mut c = gpu_pools();
    assert_eq!(render::instance(&c), "kubernetes-image-puller");
    c.deployment_name = Some("other-puller".into());
    let ds = &render::render(&c, &plain())[0];
    assert_eq!(ds.metadata.labels.as_ref().unwrap()[labels::INSTANCE], "other-puller");
    assert_eq!(
        labels::owned_selector("other-puller"),
        "app.kubernetes.io/managed-by=kubernetes-image-puller,app.kubernetes.io/instance=other-puller"
    );
}

#[test]
fn selectors_of_different_sets_do_not_overlap() {
    let dss = render::render(&full(), &plain());
    for a in &dss {
        for b in &dss {
            if a.metadata.name == b.metadata.name {
                continue;
            }
            let sel = a.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap();
            let other_pod_labels = b
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap();
            let matches = sel.iter().all(|(k, v)| other_pod_labels.get(k) == Some(v));
            assert!(
                !matches,
                "{:?} would adopt the pods of {:?}",
                a.metadata.name, b.metadata.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Spec hash

#[test]
fn spec_hash_is_the_hash_of_the_object_without_it() {
    for ds in render::render(&full(), &plain()) {
        let hash = hash_of(&ds);
        assert_eq!(hash.len(), 32);
        assert!(
            hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{hash}"
        );
        let mut bare = ds.clone();
        bare.metadata.annotations.as_mut().unwrap().remove(labels::SPEC_HASH);
        assert_eq!(render::spec_hash(&bare), hash);
    }
}

#[test]
fn spec_hash_changes_with_every_rendered_field() {
    let base = full();
    let set = 1; // "gpu"
    let base_hash = hash_of(&render::render(&base, &plain())[set]);
    type Mutation = (&'static str, Box<dyn Fn(&mut Config, &mut RenderOptions)>);
    let mutations: Vec<Mutation> = vec![
        ("namespace", Box::new(|c, _| c.namespace = "other".into())),
        ("kip_image", Box::new(|c, _| c.kip_image = "quay.io/x/kip:2".into())),
        (
            "deployment_name",
            Box::new(|c, _| c.deployment_name = Some("other".into())),
        ),
        ("set name", Box::new(|c, _| c.sets[1].name = "gpu2".into())),
        (
            "image reference",
            Box::new(|c, _| c.sets[1].images[0].reference = "nvcr.io/nvidia/cuda:12.5".into()),
        ),
        ("image name", Box::new(|c, _| c.sets[1].images[0].name = "cuda2".into())),
        (
            "image added",
            Box::new(|c, _| {
                c.sets[1].images.push(Image {
                    name: "zz".into(),
                    reference: "busybox".into(),
                })
            }),
        ),
        ("image removed", Box::new(|c, _| c.sets[1].images.clear())),
        (
            "cpu request",
            Box::new(|c, _| c.sets[1].resources.cpu_request = "51m".into()),
        ),
        (
            "cpu limit",
            Box::new(|c, _| c.sets[1].resources.cpu_limit = "201m".into()),
        ),
        (
            "memory request",
            Box::new(|c, _| c.sets[1].resources.memory_request = "11Mi".into()),
        ),
        (
            "memory limit",
            Box::new(|c, _| c.sets[1].resources.memory_limit = "65Mi".into()),
        ),
        (
            "node selector",
            Box::new(|c, _| {
                c.sets[1].node_selector.insert("zone".into(), "a".into());
            }),
        ),
        (
            "toleration removed",
            Box::new(|c, _| {
                c.sets[1].tolerations.pop();
            }),
        ),
        (
            "toleration value",
            Box::new(|c, _| c.sets[1].tolerations[1].value = Some("gpu2".into())),
        ),
        ("affinity removed", Box::new(|c, _| c.sets[1].affinity = None)),
        (
            "affinity changed",
            Box::new(|c, _| {
                c.sets[1].affinity = Some(Affinity {
                    node_affinity: Some(NodeAffinity::default()),
                    ..Affinity::default()
                })
            }),
        ),
        (
            "pull secret",
            Box::new(|c, _| c.sets[1].image_pull_secrets.push("more".into())),
        ),
        ("priority class", Box::new(|c, _| c.sets[1].priority_class_name = None)),
        (
            "annotation",
            Box::new(|c, _| {
                c.sets[1].annotations.insert("x".into(), "y".into());
            }),
        ),
        (
            "annotation value",
            Box::new(|c, _| {
                c.sets[1].annotations.insert("example.com/team".into(), "other".into());
            }),
        ),
        ("openshift", Box::new(|_, o| o.openshift = true)),
    ];
    let mut seen = BTreeSet::from([base_hash.clone()]);
    for (what, mutate) in &mutations {
        let (mut c, mut o) = (base.clone(), plain());
        mutate(&mut c, &mut o);
        let hash = hash_of(&render::render(&c, &o)[set]);
        assert_ne!(hash, base_hash, "changing the {what} must change the spec hash");
        assert!(
            seen.insert(hash),
            "the {what} change gives the same hash as an earlier one"
        );
    }
}

#[test]
fn spec_hash_stays_when_nothing_rendered_changes() {
    let base = full();
    let hashes = |c: &Config| render::render(c, &plain()).iter().map(hash_of).collect::<Vec<_>>();
    let before = hashes(&base);
    assert_eq!(before, hashes(&base.clone()), "same config, same hashes");

    // Not part of the DaemonSet: the intervals, and digest versus never (both IfNotPresent), are the
    // controller's business.
    let mut c = base.clone();
    c.caching_interval_hours = 48;
    c.refresh_check_interval = std::time::Duration::from_secs(60);
    for set in c.sets.iter_mut().filter(|s| s.refresh != Refresh::Interval) {
        set.refresh = if set.refresh == Refresh::Never {
            Refresh::Digest
        } else {
            Refresh::Never
        };
    }
    assert_eq!(hashes(&c), before);
    // The upstream refresh pulls moving tags Always: a different pod template.
    let mut c = base.clone();
    for set in &mut c.sets {
        set.refresh = if set.refresh == Refresh::Interval {
            Refresh::Digest
        } else {
            Refresh::Interval
        };
    }
    assert_ne!(hashes(&c), before);

    // The owner reference depends on where the render runs (the controller's Deployment, or none for
    // `status` on a laptop): it is set on the object but kept out of the hash.
    let owner = RenderOptions {
        owner: Some(OwnerReference {
            kind: "Deployment".into(),
            name: "p".into(),
            ..OwnerReference::default()
        }),
        ..plain()
    };
    let owned = render::render(&base, &owner);
    assert_eq!(owned.iter().map(hash_of).collect::<Vec<_>>(), before);
    assert!(
        owned
            .iter()
            .all(|d| d.metadata.owner_references.as_ref().is_some_and(|o| o.len() == 1))
    );

    // A change to one set leaves the others' hashes alone.
    let mut c = base.clone();
    c.sets[0].resources.memory_limit = "99Mi".into();
    let after = hashes(&c);
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1..], before[1..]);

    // The same config written differently (key order, defaults spelled out) renders the same.
    let a = load_ok("[[sets]]\nname = \"s\"\nimages = { b = \"alpine\", a = \"busybox\" }\n");
    let b = load_ok(
        "namespace = \"kubernetes-image-puller\"\n[defaults]\nmemory_limit = \"20Mi\"\n[[sets]]\nimages = { a = \"busybox\", b = \"alpine\" }\nname = \"s\"\ncpu_request = \".05\"\n",
    );
    assert_eq!(hashes(&a), hashes(&b));
}

// ---------------------------------------------------------------------------------------------------------------
// The sleeper

#[test]
fn sleeper_init_container_and_volume() {
    let c = gpu_pools();
    for ds in render::render(&c, &plain()) {
        let p = pod(&ds);
        let init = p.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        let install = &init[0];
        assert_eq!(install.name, SLEEPER_INIT_CONTAINER);
        assert_eq!(install.image.as_deref(), Some(c.kip_image.as_str()));
        assert_eq!(
            install.command.as_deref(),
            Some(
                &[
                    render::COPY_IN_IMAGE.to_owned(),
                    render::SLEEPER_IN_IMAGE.to_owned(),
                    render::SLEEPER_PATH.to_owned()
                ][..]
            )
        );
        let mount = &install.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, render::SLEEPER_DIR);
        assert_ne!(mount.read_only, Some(true), "the init container writes the sleeper");
        assert!(render::SLEEPER_PATH.starts_with(&format!("{}/", render::SLEEPER_DIR)));

        let volumes = p.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 1);
        assert_eq!(volumes[0].name, mount.name);
        let empty_dir = volumes[0].empty_dir.as_ref().expect("an emptyDir");
        assert!(empty_dir.size_limit.is_some(), "bounded");
        assert_eq!(empty_dir.medium, None);
        for c in &p.containers {
            assert_eq!(c.volume_mounts.as_ref().unwrap()[0].name, volumes[0].name);
        }
    }
}

#[test]
fn pod_housekeeping() {
    for ds in render::render(&gpu_pools(), &plain()) {
        let p = pod(&ds);
        assert_eq!(
            p.automount_service_account_token,
            Some(false),
            "cache pods need no API access"
        );
        assert_eq!(p.enable_service_links, Some(false));
        assert!(
            p.termination_grace_period_seconds
                .is_some_and(|s| (0..=30).contains(&s))
        );
        let strategy = ds.spec.as_ref().unwrap().update_strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let ru = strategy.rolling_update.as_ref().unwrap();
        // Surge, never unavailable: a node keeps its cache pod while the new one starts.
        assert_eq!(
            ru.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
        );
        assert!(ru.max_surge.is_some());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pod Security "restricted"

fn assert_restricted_container(c: &Container, pod_non_root: bool) {
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{}: no securityContext", c.name));
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
    assert_ne!(sc.privileged, Some(true), "{}", c.name);
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]), "{}", c.name);
    assert!(
        caps.add
            .as_ref()
            .is_none_or(|a| a.is_empty() || a == &["NET_BIND_SERVICE"]),
        "{}",
        c.name
    );
    assert!(
        sc.run_as_non_root == Some(true) || (pod_non_root && sc.run_as_non_root.is_none()),
        "{}",
        c.name
    );
    assert_ne!(sc.run_as_user, Some(0), "{}", c.name);
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
    if let Some(seccomp) = &sc.seccomp_profile {
        assert!(
            ["RuntimeDefault", "Localhost"].contains(&seccomp.type_.as_str()),
            "{}",
            c.name
        );
    }
    assert!(
        c.ports
            .as_ref()
            .is_none_or(|ports| ports.iter().all(|p| p.host_port.is_none()))
    );
}

fn assert_restricted_pod(p: &PodSpec) {
    let sc = p.security_context.as_ref().expect("pod securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert_ne!(sc.run_as_user, Some(0));
    assert!(p.host_network.is_none_or(|h| !h) && p.host_pid.is_none_or(|h| !h) && p.host_ipc.is_none_or(|h| !h));
    for v in p.volumes.iter().flatten() {
        assert!(v.host_path.is_none(), "no hostPath volumes");
    }
    for c in p.containers.iter().chain(p.init_containers.iter().flatten()) {
        assert_restricted_container(c, true);
    }
}

#[test]
fn pods_meet_the_restricted_profile() {
    for ds in render::render(&full(), &plain()) {
        let p = pod(&ds);
        assert_restricted_pod(p);
        let sc = p.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(render::RUN_AS_USER));
        assert_eq!(sc.run_as_group, Some(render::RUN_AS_USER));
        assert_eq!(
            sc.fs_group,
            Some(render::RUN_AS_USER),
            "the emptyDir is writable by the init container"
        );
        assert_eq!(render::RUN_AS_USER, 65532);
    }
}

#[test]
fn openshift_leaves_ids_to_the_scc() {
    let options = RenderOptions {
        openshift: true,
        owner: None,
    };
    for ds in render::render(&full(), &options) {
        let p = pod(&ds);
        assert_restricted_pod(p);
        let sc = p.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group, sc.fs_group), (None, None, None));
        for c in p.containers.iter().chain(p.init_containers.iter().flatten()) {
            let csc = c.security_context.as_ref().unwrap();
            assert_eq!((csc.run_as_user, csc.run_as_group), (None, None), "{}", c.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pull policy

#[test]
fn pinned_images_are_not_pulled_again_tags_are() {
    // With the upstream refresh (interval) moving tags pull Always; the default (digest) is checked below.
    let text = format!(
        "[[sets]]\nname = \"s\"\nrefresh = \"interval\"\nimages = {{ pinned = \"quay.io/a/b@{DIGEST}\", tagged = \"quay.io/a/b:1.0\", latest = \"busybox\", both = \"quay.io/a/b:1.0@{DIGEST}\", port = \"localhost:5000/a:1\" }}\n"
    );
    let c = load_ok(&text);
    let ds = &render::render(&c, &plain())[0];
    let policy: BTreeMap<&str, &str> = pod(ds)
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.image_pull_policy.as_deref().unwrap()))
        .collect();
    assert_eq!(
        policy,
        BTreeMap::from([
            ("both", "IfNotPresent"),
            ("latest", "Always"),
            ("pinned", "IfNotPresent"),
            ("port", "Always"),
            ("tagged", "Always"),
        ])
    );
    // The default refresh (digest): every cache container starts from the node's disk, registry or not.
    let c = load_ok(&text.replace("refresh = \"interval\"\n", ""));
    let ds = &render::render(&c, &plain())[0];
    assert!(
        pod(ds)
            .containers
            .iter()
            .all(|c| c.image_pull_policy.as_deref() == Some("IfNotPresent")),
        "{:?}",
        pod(ds).containers
    );
}

#[test]
fn a_refresh_pod_pulls_only_the_stale_tags_by_tag_with_always_on_its_node() {
    let c = load_ok(
        "[[sets]]\nname = \"s\"\nimage_pull_secrets = [\"regcred\"]\nimages = { a = \"quay.io/a/b:1.0\", b = \"quay.io/a/c:2\" }\n",
    );
    let set = &c.sets[0];
    let images: Vec<_> = set.images.iter().filter(|i| i.name == "b").collect();
    let pod = render::refresh_pod(&c, set, "node-1", &images, None, &plain());
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node-1"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.containers.len(), 1);
    let b = &spec.containers[0];
    assert_eq!(
        (b.image.as_deref(), b.image_pull_policy.as_deref()),
        (Some("quay.io/a/c:2"), Some("Always"))
    );
    assert_eq!(b.args, Some(vec!["0s".to_owned()]), "the sleeper exits at once");
    assert_eq!(spec.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    let labels = pod.metadata.labels.as_ref().unwrap();
    // Not the cache pods' labels: the DaemonSet must never adopt it.
    assert_eq!(labels["app.kubernetes.io/name"], "kip-refresh");
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some(render::refresh_pod_name("s", "node-1").as_str())
    );
    assert!(pod.metadata.name.as_ref().unwrap().len() <= 63 + 19);
    // Pod Security "restricted", as the cache pods.
    let sc = b.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
}

// ---------------------------------------------------------------------------------------------------------------
// Determinism and YAML

#[test]
fn rendering_is_deterministic_and_yaml_round_trips() {
    for c in [gpu_pools(), full()] {
        for options in [
            plain(),
            RenderOptions {
                openshift: true,
                owner: None,
            },
        ] {
            let first = render::render(&c, &options);
            let second = render::render(&c.clone(), &options);
            assert_eq!(first, second);
            let yaml = render::to_yaml(&first).unwrap();
            assert_eq!(yaml, render::to_yaml(&second).unwrap(), "byte-identical YAML");
            let back: Vec<DaemonSet> = serde_saphyr::from_multiple(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(back, first, "YAML parses back into the same DaemonSets");
            assert_eq!(yaml.matches("kind: DaemonSet").count(), c.sets.len());
            assert_eq!(yaml.matches("apiVersion: apps/v1").count(), c.sets.len());
        }
    }
}

#[test]
fn yaml_keeps_quantities_as_strings() {
    let yaml = render::to_yaml(&render::render(&gpu_pools(), &plain())).unwrap();
    // ".05" must stay a string: unquoted it would be the number 0.05, which the API server rejects.
    assert!(yaml.contains("cpu: \".05\"") || yaml.contains("cpu: '.05'"), "{yaml}");
    assert!(
        yaml.contains("nvidia.com/gpu.present: \"true\"") || yaml.contains("nvidia.com/gpu.present: 'true'"),
        "{yaml}"
    );
}

/// `config/gpu-pools.toml` rendered, compared with `tests/fixtures/golden/gpu-pools.yaml`. Run with `UPDATE_GOLDEN=1` to
/// rewrite the file after an intended change, and review the diff.
#[test]
fn golden_gpu_pools_yaml() {
    let yaml = render::to_yaml(&render::render(&gpu_pools(), &plain())).unwrap();
    let path = support::repo_path("tests/fixtures/golden/gpu-pools.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &yaml).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if golden != yaml {
        let first_diff = golden
            .lines()
            .zip(yaml.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(golden.lines().count().min(yaml.lines().count()));
        panic!(
            "rendered YAML differs from {} from line {}:\n  golden: {:?}\n  now:    {:?}\nIf the change is intended, run `UPDATE_GOLDEN=1 cargo test --test render` and review the diff.",
            path.display(),
            first_diff + 1,
            golden.lines().nth(first_diff),
            yaml.lines().nth(first_diff)
        );
    }
}
