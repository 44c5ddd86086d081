//! The config file: shipped configs, defaults merge, every class of error with its location, directory mode.

mod support;

use std::collections::BTreeMap;

use kubernetes_image_puller::config::{
    self, CONFIG_FILE_KEY, ConfigError, DEFAULT_KIP_IMAGE, DEFAULT_NAMESPACE, Refresh, Resources,
    SLEEPER_INIT_CONTAINER,
};
use support::{MINIMAL_SET, Vars, assert_problem, load_ok, one_problem, problems, problems_with, read_repo_file};

// ---------------------------------------------------------------------------------------------------------------
// Shipped configs

#[test]
fn default_toml_loads_with_the_readme_images_and_defaults() {
    let c = config::load_toml_str(
        &read_repo_file("config/default.toml"),
        "config/default.toml",
        &Vars::none(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.namespace, DEFAULT_NAMESPACE);
    assert_eq!(c.caching_interval_hours, 1);
    assert_eq!(c.kip_image, DEFAULT_KIP_IMAGE);
    assert_eq!(c.deployment_name, None);
    assert_eq!(c.sets.len(), 1);
    let set = &c.sets[0];
    assert_eq!(set.name, "kubernetes-image-puller");
    let images: Vec<(&str, &str)> = set
        .images
        .iter()
        .map(|i| (i.name.as_str(), i.reference.as_str()))
        .collect();
    // Sorted by container name.
    assert_eq!(
        images,
        [
            ("che-theia", "quay.io/eclipse/che-theia:next"),
            ("java-plugin-runner", "eclipse/che-remote-plugin-runner-java8:latest"),
            ("java11-maven", "quay.io/eclipse/che-java11-maven:next"),
        ]
    );
    assert_eq!(set.resources, Resources::default());
    assert!(set.node_selector.is_empty());
    assert!(set.tolerations.is_empty());
    assert_eq!(set.refresh, Refresh::Digest);
}

#[test]
fn gpu_pools_toml_loads_two_sets() {
    let c = config::load(Some(&support::repo_path("config/gpu-pools.toml")), &Vars::none())
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = c.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["general", "gpu"]);
    let (general, gpu) = (&c.sets[0], &c.sets[1]);
    assert_eq!(
        general.node_selector,
        BTreeMap::from([("pool".into(), "general".into())])
    );
    assert!(general.tolerations.is_empty());
    assert_eq!(general.resources.memory_limit, "20Mi");
    assert_eq!(general.priority_class_name, None);
    assert_eq!(
        gpu.node_selector,
        BTreeMap::from([("nvidia.com/gpu.present".into(), "true".into())])
    );
    assert_eq!(gpu.resources.memory_limit, "50Mi");
    assert_eq!(gpu.resources.memory_request, "10Mi");
    assert_eq!(
        gpu.priority_class_name, None,
        "cache pods should not preempt workloads by default"
    );
    assert_eq!(gpu.tolerations.len(), 1);
    let t = &gpu.tolerations[0];
    assert_eq!(t.key.as_deref(), Some("nvidia.com/gpu"));
    assert_eq!(t.operator.as_deref(), Some("Exists"));
    assert_eq!(t.effect.as_deref(), Some("NoSchedule"));
    assert_eq!(t.value, None);
    assert!(gpu.image_pull_secrets.is_empty());
    assert_eq!(
        gpu.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["cuda", "pytorch"]
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Defaults

#[test]
fn builtin_defaults_apply_when_nothing_is_set() {
    let c = load_ok(MINIMAL_SET);
    assert_eq!(c.namespace, "kubernetes-image-puller");
    assert_eq!(c.caching_interval_hours, 1);
    assert_eq!(c.kip_image, DEFAULT_KIP_IMAGE);
    let r = &c.sets[0].resources;
    assert_eq!(
        (
            r.cpu_request.as_str(),
            r.cpu_limit.as_str(),
            r.memory_request.as_str(),
            r.memory_limit.as_str()
        ),
        (".05", ".2", "10Mi", "20Mi")
    );
    assert_eq!(c.sets[0].refresh, Refresh::Digest);
    assert_eq!(c.sets[0].affinity, None);
    assert!(c.sets[0].annotations.is_empty());
}

const MERGE: &str = r#"
namespace = "cache"
caching_interval_hours = 6
kip_image = "registry.example.com/kip:1.0"
deployment_name = "puller"

[defaults]
memory_request = "16Mi"
memory_limit = "32Mi"
cpu_request = "10m"
cpu_limit = "100m"
node_selector = { pool = "general" }
tolerations = [{ key = "dedicated", operator = "Equal", value = "cache", effect = "NoSchedule" }]
affinity = { nodeAffinity = { requiredDuringSchedulingIgnoredDuringExecution = { nodeSelectorTerms = [{ matchExpressions = [{ key = "kubernetes.io/os", operator = "In", values = ["linux"] }] }] } } }
image_pull_secrets = ["regcred"]
priority_class_name = "low"
annotations = { "team" = "platform", "example.com/owner" = "ops" }
refresh = "never"

[[sets]]
name = "inherits"
images = { a = "busybox:1.36" }

[[sets]]
name = "overrides"
images = { b = "alpine:3" }
memory_limit = "64Mi"
cpu_request = "20m"
node_selector = { "nvidia.com/gpu.present" = "true" }
tolerations = []
image_pull_secrets = ["other", "third"]
priority_class_name = "high"
annotations = { "team" = "ml", "extra" = "yes" }
refresh = "interval"
"#;

#[test]
fn sets_inherit_defaults() {
    let c = load_ok(MERGE);
    assert_eq!(c.namespace, "cache");
    assert_eq!(c.caching_interval_hours, 6);
    assert_eq!(c.kip_image, "registry.example.com/kip:1.0");
    assert_eq!(c.deployment_name.as_deref(), Some("puller"));
    let s = &c.sets[0];
    assert_eq!(
        s.resources,
        Resources {
            cpu_request: "10m".into(),
            cpu_limit: "100m".into(),
            memory_request: "16Mi".into(),
            memory_limit: "32Mi".into(),
        }
    );
    assert_eq!(s.node_selector, BTreeMap::from([("pool".into(), "general".into())]));
    assert_eq!(s.tolerations.len(), 1);
    assert_eq!(s.tolerations[0].value.as_deref(), Some("cache"));
    assert_eq!(s.tolerations[0].operator.as_deref(), Some("Equal"));
    let affinity = s.affinity.as_ref().expect("affinity inherited");
    let terms = &affinity
        .node_affinity
        .as_ref()
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .expect("required node affinity")
        .node_selector_terms;
    assert_eq!(terms[0].match_expressions.as_ref().unwrap()[0].key, "kubernetes.io/os");
    assert_eq!(s.image_pull_secrets, ["regcred"]);
    assert_eq!(s.priority_class_name.as_deref(), Some("low"));
    assert_eq!(
        s.annotations,
        BTreeMap::from([
            ("team".into(), "platform".into()),
            ("example.com/owner".into(), "ops".into())
        ])
    );
    assert_eq!(s.refresh, Refresh::Never);
}

#[test]
fn set_values_override_defaults_and_annotations_merge_per_key() {
    let c = load_ok(MERGE);
    let s = &c.sets[1];
    // Set values win; the rest comes from the defaults.
    assert_eq!(
        s.resources,
        Resources {
            cpu_request: "20m".into(),
            cpu_limit: "100m".into(),
            memory_request: "16Mi".into(),
            memory_limit: "64Mi".into(),
        }
    );
    // Maps and lists are replaced as a whole, not merged...
    assert_eq!(
        s.node_selector,
        BTreeMap::from([("nvidia.com/gpu.present".into(), "true".into())])
    );
    assert!(
        s.tolerations.is_empty(),
        "an empty list in the set replaces the defaults"
    );
    assert_eq!(s.image_pull_secrets, ["other", "third"]);
    assert_eq!(s.priority_class_name.as_deref(), Some("high"));
    assert_eq!(s.refresh, Refresh::Interval);
    assert!(s.affinity.is_some());
    // ...except annotations, merged per key with the set winning.
    assert_eq!(
        s.annotations,
        BTreeMap::from([
            ("team".into(), "ml".into()),
            ("example.com/owner".into(), "ops".into()),
            ("extra".into(), "yes".into()),
        ])
    );
}

#[test]
fn request_within_limit_is_checked_after_the_merge() {
    // The defaults' request (16Mi) is above the set's own limit (8Mi): reported at the set's limit.
    let text = "[defaults]\nmemory_request = \"16Mi\"\n\n[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\nmemory_limit = \"8Mi\"\n";
    let p = one_problem(text);
    assert_problem(
        &p,
        "test.toml:7:1",
        "sets[0] (s).memory_limit",
        "memory request \"16Mi\" is above the limit \"8Mi\"",
    );
    // Equal values in different units are not "above".
    load_ok(
        "[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\nmemory_request = \"1048576\"\nmemory_limit = \"1Mi\"\ncpu_request = \"1\"\ncpu_limit = \"1000m\"\n",
    );
    load_ok(
        "[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\nmemory_request = \"1Mi\"\nmemory_limit = \"1048576\"\n",
    );
}

#[test]
fn env_fills_namespace_kip_image_and_deployment_name_the_file_leaves_out() {
    let vars = Vars::new(&[
        ("NAMESPACE", "from-env"),
        ("KIP_IMAGE", "quay.io/x/kip:2"),
        ("DEPLOYMENT_NAME", "my-puller"),
        // Only the three above are read in file mode.
        ("IMAGES", "zzz=ignored:1"),
        ("CACHING_INTERVAL_HOURS", "12"),
    ]);
    let c = config::load_toml_str(MINIMAL_SET, "test.toml", &vars).unwrap();
    assert_eq!(c.namespace, "from-env");
    assert_eq!(c.kip_image, "quay.io/x/kip:2");
    assert_eq!(c.deployment_name.as_deref(), Some("my-puller"));
    assert_eq!(c.caching_interval_hours, 1);
    assert_eq!(c.sets[0].images.len(), 1);
    assert_eq!(c.sets[0].images[0].name, "a");

    // The file wins over the environment.
    let text = format!("namespace = \"from-file\"\n{MINIMAL_SET}");
    let c = config::load_toml_str(&text, "test.toml", &vars).unwrap();
    assert_eq!(c.namespace, "from-file");
}

#[test]
fn a_bad_value_from_env_is_reported_under_the_variable() {
    let vars = Vars::new(&[("NAMESPACE", "Not_Valid"), ("KIP_IMAGE", "bad image")]);
    let p = problems_with(MINIMAL_SET, &vars);
    assert_eq!(p.len(), 2, "{p:#?}");
    let ns = p.iter().find(|p| p.location == "NAMESPACE").expect("NAMESPACE problem");
    assert!(ns.message.contains("\"Not_Valid\" is not a valid name"), "{ns}");
    let kip = p.iter().find(|p| p.location == "KIP_IMAGE").expect("KIP_IMAGE problem");
    assert!(kip.message.contains("not an image reference"), "{kip}");
}

#[test]
fn images_are_sorted_and_digests_are_pinned() {
    let digest = format!("quay.io/a/b@sha256:{}", "0123456789abcdef".repeat(4));
    let text =
        format!("[[sets]]\nname = \"s\"\nimages = {{ zeta = \"busybox:1\", alpha = \"{digest}\", mid = \"nginx\" }}\n");
    let c = load_ok(&text);
    let images = &c.sets[0].images;
    assert_eq!(
        images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "mid", "zeta"]
    );
    assert!(images[0].is_pinned());
    assert!(!images[1].is_pinned());
    assert!(!images[2].is_pinned());
}

// ---------------------------------------------------------------------------------------------------------------
// Errors: one per class, each with location (file:line:col), field and message

#[test]
fn syntax_error_has_the_right_line_and_column() {
    let text = "caching_interval_hours = 1\n\n[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\nmemory_limit = = \"1Mi\"\n";
    // The parser recovers and goes on, so one mistake may give several problems; the first is exact.
    let p = problems(text);
    // The second '=' on line 6.
    assert_problem(&p[0], "test.toml:6:16", "", "extra `=`");
    assert!(p.iter().all(|p| p.location.starts_with("test.toml:6:")), "{p:#?}");

    let p = problems("[[sets]\nname = \"s\"\n");
    assert!(p[0].location.starts_with("test.toml:1:"), "{p:#?}");

    // Unterminated string on line 2.
    let p = problems("[[sets]]\nname = \"s\n");
    assert!(p[0].location.starts_with("test.toml:2:"), "{p:#?}");
    // Columns count characters, not bytes.
    let p = problems("namespace = \"é\" x\n");
    assert_eq!(p[0].location, "test.toml:1:17", "{p:#?}");
}

#[test]
fn duplicate_keys_are_a_syntax_error() {
    let p = one_problem("namespace = \"a\"\nnamespace = \"b\"\n[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\n");
    assert!(p.location.starts_with("test.toml:2:"), "{p}");
    assert!(p.message.contains("duplicate"), "{p}");
}

#[test]
fn unknown_field_suggests_the_closest_name() {
    let text = "[[sets]]\nname = \"s\"\nimages = { a = \"busybox\" }\nmemory_limt = \"5Mi\"\n";
    let p = one_problem(text);
    assert_problem(
        &p,
        "test.toml:4:1",
        "sets[0].memory_limt",
        "unknown field `memory_limt`; did you mean `memory_limit`?",
    );
    assert!(
        p.message.contains("allowed here: affinity, annotations, cpu_limit"),
        "{p}"
    );

    let p = one_problem(&format!("namepsace = \"x\"\n{MINIMAL_SET}"));
    assert_problem(&p, "test.toml:1:1", "namepsace", "did you mean `namespace`?");

    let p = one_problem(&format!("[defaults]\ncpu_limits = \"1\"\n{MINIMAL_SET}"));
    assert_problem(&p, "test.toml:2:1", "defaults.cpu_limits", "did you mean `cpu_limit`?");

    // Inside a toleration, and nothing close: no suggestion.
    let p = one_problem(&format!("{MINIMAL_SET}tolerations = [{{ key = \"k\", zzz = 1 }}]\n"));
    assert_problem(
        &p,
        "test.toml:4:29",
        "sets[0].tolerations[0].zzz",
        "unknown field `zzz`; allowed here:",
    );
    assert!(!p.message.contains("did you mean"), "{p}");
}

#[test]
fn bad_quantity() {
    let p = one_problem(&format!("{MINIMAL_SET}memory_limit = \"20MB\"\n"));
    assert_problem(
        &p,
        "test.toml:4:1",
        "sets[0] (s).memory_limit",
        "\"20MB\" is not a quantity",
    );
    let p = one_problem(&format!("[defaults]\ncpu_request = \"-1\"\n{MINIMAL_SET}"));
    assert_problem(&p, "test.toml:2:1", "defaults.cpu_request", "\"-1\" is negative");
    let p = one_problem(&format!("{MINIMAL_SET}cpu_limit = \"1e40\"\n"));
    assert_problem(&p, "test.toml:4:1", "sets[0] (s).cpu_limit", "too large");
    let p = one_problem(&format!("{MINIMAL_SET}memory_request = 10\n"));
    assert_problem(
        &p,
        "test.toml:4:18",
        "sets[0].memory_request",
        "invalid type: integer `10`, expected a string",
    );
}

#[test]
fn request_above_limit_points_at_the_written_field() {
    let p = one_problem(&format!("{MINIMAL_SET}cpu_request = \"500m\"\ncpu_limit = \".2\"\n"));
    assert_problem(
        &p,
        "test.toml:5:1",
        "sets[0] (s).cpu_limit",
        "cpu request \"500m\" is above the limit \".2\" in set \"s\": the request must not exceed the limit",
    );
    // Only the request written: point at it.
    let p = one_problem(&format!("{MINIMAL_SET}memory_request = \"1Gi\"\n"));
    assert_problem(
        &p,
        "test.toml:4:1",
        "sets[0] (s).memory_request",
        "memory request \"1Gi\" is above the limit \"20Mi\"",
    );
    // In the defaults.
    let p = one_problem(&format!("[defaults]\nmemory_limit = \"5Mi\"\n{MINIMAL_SET}"));
    assert_problem(
        &p,
        "test.toml:2:1",
        "defaults.memory_limit",
        "memory request \"10Mi\" is above the limit \"5Mi\"",
    );
    // A zero limit.
    let p = one_problem(&format!("{MINIMAL_SET}cpu_request = \"0\"\ncpu_limit = \"0\"\n"));
    assert_problem(
        &p,
        "test.toml:5:1",
        "sets[0] (s).cpu_limit",
        "cpu_limit of set \"s\" is 0",
    );
}

#[test]
fn invalid_set_name() {
    for (name, field) in [
        ("GPU", "sets[0] (GPU).name"),
        ("gpu_pool", "sets[0] (gpu_pool).name"),
        ("-gpu", "sets[0] (-gpu).name"),
        ("gpu.pool", "sets[0] (gpu.pool).name"),
        ("", "sets[0].name"),
    ] {
        let p = one_problem(&format!(
            "[[sets]]\nname = \"{name}\"\nimages = {{ a = \"busybox\" }}\n"
        ));
        assert_problem(
            &p,
            "test.toml:2:1",
            field,
            &format!("{name:?} is not a valid name: use 1 to 63 lowercase letters"),
        );
    }
    let long = "x".repeat(64);
    let p = one_problem(&format!(
        "[[sets]]\nname = \"{long}\"\nimages = {{ a = \"busybox\" }}\n"
    ));
    assert!(p.message.contains("1 to 63"), "{p}");
    load_ok(&format!(
        "[[sets]]\nname = \"{}\"\nimages = {{ a = \"busybox\" }}\n",
        "x".repeat(63)
    ));
    // A set without a name at all.
    let p = one_problem("[[sets]]\nimages = { a = \"busybox\" }\n");
    assert_problem(&p, "test.toml:1:1", "sets[0]", "missing field `name`");
}

#[test]
fn invalid_and_reserved_container_names() {
    let text = "[[sets]]\nname = \"s\"\n[sets.images]\nok = \"busybox\"\nBad_Name = \"busybox\"\nkip-sleep-install = \"busybox\"\n";
    let p = problems(text);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_problem(
        &p[0],
        "test.toml:5:1",
        "sets[0] (s).images.Bad_Name",
        "container name: \"Bad_Name\" is not a valid name",
    );
    assert_problem(
        &p[1],
        "test.toml:6:1",
        &format!("sets[0] (s).images.{SLEEPER_INIT_CONTAINER}"),
        "is reserved for the sleeper's init container",
    );
}

#[test]
fn duplicate_set_names() {
    let text = format!("{MINIMAL_SET}\n[[sets]]\nname = \"t\"\nimages = {{ a = \"busybox\" }}\n\n{MINIMAL_SET}");
    let p = one_problem(&text);
    assert_problem(
        &p,
        "test.toml:10:1",
        "sets[2] (s).name",
        "set name \"s\" is already used by sets[0]",
    );
}

#[test]
fn set_with_no_images() {
    let p = one_problem("[[sets]]\nname = \"empty\"\nimages = {}\n");
    assert_problem(
        &p,
        "test.toml:3:1",
        "sets[0] (empty).images",
        "set \"empty\" has no images",
    );
    // Images left out altogether: pointed at the set's header.
    let p = one_problem("namespace = \"x\"\n\n[[sets]]\nname = \"empty\"\n");
    assert_problem(&p, "test.toml:3:1", "sets[0] (empty).images", "has no images");
}

#[test]
fn invalid_image_references() {
    for bad in [
        "",
        "has space:1",
        "UPPER:case",
        "Upper/lower:tag",
        "quay.io/x:",
        "x@sha256:short",
        "busybox:tägé",
        "a//b",
    ] {
        let text = format!("[[sets]]\nname = \"s\"\nimages = {{ a = \"{bad}\" }}\n");
        let p = one_problem(&text);
        assert_problem(
            &p,
            "test.toml:3:12",
            "sets[0] (s).images.a",
            "is not an image reference",
        );
        assert!(p.message.contains(&format!("{bad:?}")), "{p}");
    }
    let p = one_problem(&format!("kip_image = \"Nope Nope\"\n{MINIMAL_SET}"));
    assert_problem(&p, "test.toml:1:1", "kip_image", "is not an image reference");
}

#[test]
fn invalid_node_selector_keys_and_values() {
    let p = one_problem(&format!("{MINIMAL_SET}node_selector = {{ \"bad key\" = \"v\" }}\n"));
    assert_problem(
        &p,
        "test.toml:4:1",
        "sets[0] (s).node_selector",
        "key \"bad key\" is not a valid label key",
    );
    let p = one_problem(&format!("{MINIMAL_SET}node_selector = {{ pool = \"-general\" }}\n"));
    assert_problem(
        &p,
        "test.toml:4:1",
        "sets[0] (s).node_selector",
        "value \"-general\" of \"pool\" is not a valid label value",
    );
    let p = one_problem(&format!(
        "[defaults]\nnode_selector = {{ \"a/b/c\" = \"x\" }}\n{MINIMAL_SET}"
    ));
    assert_problem(&p, "test.toml:2:1", "defaults.node_selector", "key \"a/b/c\"");
    // Both wrong in one map: one problem listing both.
    let p = one_problem(&format!("{MINIMAL_SET}node_selector = {{ \"-k\" = \"v v\" }}\n"));
    assert!(
        p.message.contains("key \"-k\"") && p.message.contains("value \"v v\""),
        "{p}"
    );
    // Empty values are allowed (a label can be empty).
    load_ok(&format!(
        "{MINIMAL_SET}node_selector = {{ \"node-role.kubernetes.io/worker\" = \"\" }}\n"
    ));
}

#[test]
fn toleration_rules() {
    let cases = [
        (
            "{ operator = \"Equal\" }",
            "a toleration with no key must have operator \"Exists\"",
        ),
        (
            "{ value = \"x\" }",
            "a toleration with no key must have operator \"Exists\"",
        ),
        (
            "{ key = \"k\", operator = \"Exists\", value = \"v\" }",
            "with operator \"Exists\" must not have a value",
        ),
        (
            "{ key = \"k\", value = \"has space\" }",
            "value \"has space\" is not a valid taint value",
        ),
        (
            "{ key = \"k\", tolerationSeconds = 30 }",
            "tolerationSeconds is only allowed with effect \"NoExecute\"",
        ),
        (
            "{ key = \"k\", effect = \"NoSchedule\", tolerationSeconds = 30 }",
            "only allowed with effect \"NoExecute\"",
        ),
    ];
    for (toleration, message) in cases {
        let p = one_problem(&format!("{MINIMAL_SET}tolerations = [{toleration}]\n"));
        // At the toleration.
        assert_problem(&p, "test.toml:4:16", "sets[0] (s).tolerations[0]", message);
    }
    // A bad key is pointed at the key itself.
    let p = one_problem(&format!(
        "{MINIMAL_SET}tolerations = [{{ key = \"Bad Key\", operator = \"Exists\" }}]\n"
    ));
    assert_problem(
        &p,
        "test.toml:4:18",
        "sets[0] (s).tolerations[0].key",
        "\"Bad Key\" is not a valid taint key",
    );
    // Accepted forms.
    let c = load_ok(&format!(
        "{MINIMAL_SET}tolerations = [{{ operator = \"Exists\" }}, {{ key = \"k\", value = \"v\" }}, {{ key = \"k\", operator = \"Exists\", effect = \"NoExecute\", tolerationSeconds = 60 }}]\n"
    ));
    let t = &c.sets[0].tolerations;
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].key, None);
    assert_eq!(t[0].operator.as_deref(), Some("Exists"));
    assert_eq!(
        t[1].operator, None,
        "operator left out stays out (the API's default is Equal)"
    );
    assert_eq!(t[2].toleration_seconds, Some(60));
    assert_eq!(t[2].effect.as_deref(), Some("NoExecute"));
}

#[test]
fn toleration_unknown_variants_name_the_field() {
    let p = one_problem(&format!(
        "{MINIMAL_SET}tolerations = [{{ key = \"k\", operator = \"Foo\" }}]\n"
    ));
    // Pointed at the value.
    assert_problem(
        &p,
        "test.toml:4:40",
        "sets[0].tolerations[0].operator",
        "unknown variant `Foo`, expected `Exists` or `Equal`",
    );
    let p = one_problem(&format!(
        "{MINIMAL_SET}tolerations = [{{ key = \"k\", effect = \"NoWay\" }}]\n"
    ));
    assert_problem(
        &p,
        "test.toml:4:38",
        "sets[0].tolerations[0].effect",
        "unknown variant `NoWay`",
    );
    assert!(
        p.message.contains("NoSchedule") && p.message.contains("NoExecute"),
        "{p}"
    );
}

#[test]
fn caching_interval_must_be_1_to_8760_whole_hours() {
    for bad in ["0", "-3", "8761", "9223372036854775807"] {
        let p = one_problem(&format!("caching_interval_hours = {bad}\n{MINIMAL_SET}"));
        assert_problem(
            &p,
            "test.toml:1:1",
            "caching_interval_hours",
            "must be a whole number of hours from 1 to 8760",
        );
    }
    let p = one_problem(&format!("caching_interval_hours = 1.5\n{MINIMAL_SET}"));
    assert_problem(
        &p,
        "test.toml:1:26",
        "caching_interval_hours",
        "invalid type: floating point `1.5`",
    );
    let p = one_problem(&format!("caching_interval_hours = \"2\"\n{MINIMAL_SET}"));
    assert_problem(
        &p,
        "test.toml:1:26",
        "caching_interval_hours",
        "invalid type: string \"2\"",
    );
    // Too big for TOML itself: a syntax error at the number.
    let p = one_problem(&format!("caching_interval_hours = 99999999999999999999\n{MINIMAL_SET}"));
    assert!(p.location.starts_with("test.toml:1:"), "{p}");
    for ok in [1, 24, 8760] {
        assert_eq!(
            load_ok(&format!("caching_interval_hours = {ok}\n{MINIMAL_SET}")).caching_interval_hours,
            ok
        );
    }
}

#[test]
fn no_sets_at_all() {
    for text in ["", "# nothing\n", "namespace = \"x\"\n", "sets = []\n"] {
        let p = one_problem(text);
        assert_eq!(p.field, "sets", "{text:?}: {p}");
        assert!(p.message.contains("no image sets: add at least one [[sets]]"), "{p}");
        assert!(p.location.starts_with("test.toml"), "{p}");
    }
    assert_eq!(one_problem("").location, "test.toml");
    assert_eq!(one_problem("sets = []\n").location, "test.toml:1:1");
}

#[test]
fn misspelt_affinity_fields_are_reported_not_dropped() {
    let p = one_problem(&format!("{MINIMAL_SET}affinity = {{ nodeAfinity = {{}} }}\n"));
    assert_problem(
        &p,
        "test.toml:4:14",
        "sets[0].affinity.nodeAfinity",
        "unknown field `nodeAfinity`: Kubernetes would ignore it",
    );
    let text = format!(
        "{MINIMAL_SET}[sets.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution]\nnodeSelectorTerms = [{{ matchExpresions = [] }}]\n"
    );
    let p = one_problem(&text);
    assert_problem(
        &p,
        "test.toml:5:24",
        "sets[0].affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpresions",
        "unknown field `matchExpresions`",
    );
    let p = one_problem(&format!(
        "[defaults.affinity]\npodAntiAffinity = {{ typo = 1 }}\n{MINIMAL_SET}"
    ));
    assert_problem(
        &p,
        "test.toml:2:21",
        "defaults.affinity.podAntiAffinity.typo",
        "unknown field `typo`",
    );
}

#[test]
fn several_errors_are_reported_together_in_file_order() {
    let text = read_repo_file("tests/fixtures/many-errors.toml");
    let e = config::load_toml_str(&text, "many-errors.toml", &Vars::none()).unwrap_err();
    let p = e.problems();
    let summary: Vec<(&str, &str)> = p.iter().map(|p| (p.location.as_str(), p.field.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("many-errors.toml:3:1", "caching_interval_hours"),
            ("many-errors.toml:6:1", "defaults.cpu_limit"),
            ("many-errors.toml:9:1", "sets[0] (Bad_Name).name"),
            ("many-errors.toml:10:12", "sets[0] (Bad_Name).images.a"),
            ("many-errors.toml:13:1", "sets[1] (ok).memory_request"),
            ("many-errors.toml:14:1", "sets[1] (ok).node_selector"),
            ("many-errors.toml:15:16", "sets[1] (ok).tolerations[0]"),
            ("many-errors.toml:18:1", "sets[2] (ok).name"),
            ("many-errors.toml:19:1", "sets[2] (ok).images"),
        ],
        "{e}"
    );
    // Lines never go backwards.
    let lines: Vec<usize> = p
        .iter()
        .map(|p| p.location.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    // The message counts them and lists each one.
    let text = e.to_string();
    assert!(
        text.starts_with("many-errors.toml: 9 problems:\n  - many-errors.toml:3:1: caching_interval_hours: "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 10, "{text}");
}

#[test]
fn unknown_fields_are_all_reported_together() {
    let text = "namespac = \"x\"\n[defaults]\nmemory = \"1Mi\"\n[[sets]]\nname = \"s\"\nimage = { a = \"b\" }\n";
    let p = problems(text);
    let got: Vec<(&str, &str)> = p.iter().map(|p| (p.location.as_str(), p.field.as_str())).collect();
    assert_eq!(
        got,
        [
            ("test.toml:1:1", "namespac"),
            ("test.toml:3:1", "defaults.memory"),
            ("test.toml:6:1", "sets[0].image")
        ]
    );
    assert!(p[2].message.contains("did you mean `images`?"), "{}", p[2]);
}

#[test]
fn error_display_is_one_line_per_problem() {
    let e = config::load_toml_str("sets = []\n", "f.toml", &Vars::none()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "f.toml: 1 problem:\n  - f.toml:1:1: sets: no image sets: add at least one [[sets]] with a name and images"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Quantities and references: the rules behind the messages above

#[test]
fn quantities_are_exact_nano_units() {
    use kubernetes_image_puller::config::rules::quantity_nanos as q;
    let cases: &[(&str, i128)] = &[
        ("0", 0),
        (".05", 50_000_000),
        ("50m", 50_000_000),
        ("0.05", 50_000_000),
        ("1", 1_000_000_000),
        ("1.", 1_000_000_000),
        ("+1", 1_000_000_000),
        ("-0", 0),
        ("1k", 1_000_000_000_000),
        ("1e3", 1_000_000_000_000),
        ("1E3", 1_000_000_000_000),
        ("1e-3", 1_000_000),
        ("1Ki", 1024 * 1_000_000_000),
        ("10Mi", 10 * 1_048_576 * 1_000_000_000),
        ("0.5Gi", 512 * 1_048_576 * 1_000_000_000),
        ("1n", 1),
        ("0.1n", 1), // rounded up, as the API server does
        ("1u", 1_000),
        ("1E", 1_000_000_000_000_000_000 * 1_000_000_000),
        ("00010", 10_000_000_000),
    ];
    for (s, nanos) in cases {
        assert_eq!(q(s), Ok(*nanos), "{s}");
    }
    assert_eq!(q("1Mi"), q("1048576"));
    assert_eq!(q("1Gi"), q("1073741824"));
    assert_eq!(q(".2"), q("200m"));
    assert!(q("1M") < q("1Mi"));
    for bad in [
        "", " 1", "1 ", "abc", "--1", "+-1", "Mi", "m", "+", ".", "1e", "1e3m", "1Qi", "1mi", "0x10", "1_000", "1,5",
        "inf", "NaN", "١",
    ] {
        let e = q(bad).expect_err(bad);
        assert!(e.contains("is not a quantity"), "{bad}: {e}");
    }
    assert!(q("-1").unwrap_err().contains("negative"));
    assert!(q("8Ei").unwrap_err().contains("too large"));
    assert!(q("9223372036854775807").is_ok());
    assert!(q("9223372036854775808").unwrap_err().contains("too large"));
    assert!(q("1e99999999999999999999").unwrap_err().contains("too large"));
    assert_eq!(q("0e99999999999999999999"), Ok(0));
    assert_eq!(q("1e-99999999999999999999"), Ok(1));
    assert!(q(&"9".repeat(40)).is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// load(): files, directories, errors reading

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kip.toml");
    std::fs::write(&path, MINIMAL_SET).unwrap();
    let c = config::load(Some(&path), &Vars::none()).unwrap();
    assert_eq!(c.sets[0].name, "s");

    std::fs::write(&path, "[[sets]]\nname = \"S\"\nimages = { a = \"busybox\" }\n").unwrap();
    let e = config::load(Some(&path), &Vars::none()).unwrap_err();
    let where_ = format!("{}:2:1", path.display());
    assert_eq!(support::invalid_problems(&e)[0].location, where_);
    assert!(
        e.to_string().starts_with(&format!("{}: 1 problem", path.display())),
        "{e}"
    );
}

#[test]
fn load_reports_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let e = config::load(Some(&path), &Vars::none()).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("cannot read config {}", path.display())),
        "{e}"
    );
    assert!(e.problems().is_empty());
}

#[test]
fn load_without_a_path_reads_the_variables() {
    let c = config::load(None, &Vars::new(&[("IMAGES", "a=busybox")])).unwrap();
    assert_eq!(c.sets[0].name, "kubernetes-image-puller");
    let e = config::load(None, &Vars::none()).unwrap_err();
    assert!(e.to_string().starts_with("environment: 1 problem"), "{e}");
}

#[test]
fn directory_with_config_toml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE_KEY), MINIMAL_SET).unwrap();
    // Upstream keys beside config.toml are ignored: the TOML file is the config.
    std::fs::write(dir.path().join("IMAGES"), "x=alpine").unwrap();
    let c = config::load(Some(dir.path()), &Vars::none()).unwrap();
    assert_eq!(c.sets[0].name, "s");
    assert_eq!(c.sets[0].images[0].name, "a");

    std::fs::write(dir.path().join(CONFIG_FILE_KEY), "sets = 1\n").unwrap();
    let e = config::load(Some(dir.path()), &Vars::none()).unwrap_err();
    let p = &e.problems()[0];
    assert_eq!(
        p.location,
        format!("{}:1:8", dir.path().join(CONFIG_FILE_KEY).display()),
        "{p}"
    );
    assert_eq!(p.field, "sets");
}

#[test]
fn directory_with_upstream_keys_reads_them_like_variables() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &str| std::fs::write(dir.path().join(name), value).unwrap();
    write(
        "IMAGES",
        "java=quay.io/eclipse/che-java11-maven:next;theia=quay.io/eclipse/che-theia:next;\n",
    );
    write("NODE_SELECTOR", "{\"pool\": \"general\"}\n");
    write("CACHING_INTERVAL_HOURS", "5\n");
    write("DAEMONSET_NAME", "from-file");
    write("CACHING_MEMORY_LIMIT", "  "); // empty: counts as unset, so the env value below is used
    let env = Vars::new(&[
        ("IMAGES", "other=busybox"),
        ("DAEMONSET_NAME", "from-env"),
        ("CACHING_MEMORY_LIMIT", "30Mi"),
        ("NAMESPACE", "env-ns"),
    ]);
    let c = config::load(Some(dir.path()), &env).unwrap();
    assert_eq!(c.caching_interval_hours, 5);
    assert_eq!(c.namespace, "env-ns", "variables the directory lacks come from the env");
    let set = &c.sets[0];
    assert_eq!(set.name, "from-file", "a file value overrides the env value");
    assert_eq!(
        set.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["java", "theia"]
    );
    assert_eq!(set.node_selector, BTreeMap::from([("pool".into(), "general".into())]));
    assert_eq!(set.resources.memory_limit, "30Mi");
}

#[test]
fn directory_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &str| std::fs::write(dir.path().join(name), value).unwrap();
    write("IMAGES", "a=busybox;broken");
    write("NODE_SELECTOR", "{not json");
    let env = Vars::new(&[("CACHING_INTERVAL_HOURS", "0")]);
    let e = config::load(Some(dir.path()), &env).unwrap_err();
    let origin = dir.path().display().to_string();
    assert!(e.to_string().starts_with(&format!("{origin}: 3 problems")), "{e}");
    let p = e.problems();
    let file = |n: &str| dir.path().join(n).display().to_string();
    assert!(
        p.iter()
            .any(|p| p.location == file("IMAGES") && p.message.contains("entry 2 \"broken\" has no '='")),
        "{e}"
    );
    assert!(
        p.iter()
            .any(|p| p.location == file("NODE_SELECTOR") && p.message.contains("is not a JSON object")),
        "{e}"
    );
    // Not in the directory: named as the variable.
    assert!(
        p.iter()
            .any(|p| p.location == "CACHING_INTERVAL_HOURS" && p.message.contains("1 to 8760")),
        "{e}"
    );
}

#[test]
fn empty_directory_asks_for_images() {
    let dir = tempfile::tempdir().unwrap();
    let e = config::load(Some(dir.path()), &Vars::none()).unwrap_err();
    let p = support::invalid_problems(&e);
    assert_eq!(p.len(), 1, "{e}");
    assert_eq!(p[0].location, "IMAGES");
    assert!(p[0].message.contains("is not set"), "{e}");
}

#[test]
fn fixtures_that_must_load() {
    let full = config::load(Some(&support::repo_path("tests/fixtures/full.toml")), &Vars::none())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(full.sets.len(), 3);
    assert_eq!(full.deployment_name.as_deref(), Some("kubernetes-image-puller"));
    assert!(full.sets.iter().any(|s| s.images.iter().any(|i| i.is_pinned())));
}

#[test]
fn warm_gate_is_off_without_its_table_and_defaults_its_timeout() {
    assert_eq!(load_ok(MINIMAL_SET).warm_gate, None);
    let c = load_ok(&format!("[warm_gate]\n{MINIMAL_SET}"));
    let gate = c.warm_gate.expect("on with the table");
    assert_eq!(gate.taint, None, "the condition only");
    assert_eq!(gate.timeout, kubernetes_image_puller::config::DEFAULT_WARM_TIMEOUT);
    let c = load_ok(&format!(
        "[warm_gate]\ntaint = \"kubernetes-image-puller/cold\"\ntimeout = \"90s\"\n{MINIMAL_SET}"
    ));
    let gate = c.warm_gate.unwrap();
    assert_eq!(gate.taint.as_deref(), Some("kubernetes-image-puller/cold"));
    assert_eq!(gate.timeout, std::time::Duration::from_secs(90));
}

#[test]
fn warm_gate_values_are_checked_where_written() {
    let p = one_problem(&format!("[warm_gate]\ntimeout = \"5s\"\n{MINIMAL_SET}"));
    assert_problem(
        &p,
        "test.toml:2:1",
        "warm_gate.timeout",
        "out of range: from 10s to 24h",
    );
    let p = one_problem(&format!("[warm_gate]\ntaint = \"no spaces\"\n{MINIMAL_SET}"));
    assert_problem(&p, "test.toml:2:1", "warm_gate.taint", "not a valid");
    let p = one_problem(&format!("[warm_gate]\ntaimeout = \"1m\"\n{MINIMAL_SET}"));
    assert_problem(&p, "test.toml:2:1", "warm_gate.taimeout", "did you mean `timeout`?");
}
