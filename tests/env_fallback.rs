//! The upstream tool's environment variables as a single image set: documented defaults, parsing, and a
//! problem naming its variable for every bad value.

mod support;

use std::collections::BTreeMap;

use kubernetes_image_puller::config::{self, Config, ConfigError, Problem, Resources, UPSTREAM_VARS, parse_images};
use support::Vars;

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    config::load_from_vars(&Vars::new(pairs), "environment")
}

fn ok(pairs: &[(&str, &str)]) -> Config {
    load(pairs).unwrap_or_else(|e| panic!("expected a valid config:\n{e}"))
}

fn problems(pairs: &[(&str, &str)]) -> Vec<Problem> {
    let e = load(pairs).expect_err("expected problems");
    assert!(e.to_string().starts_with("environment: "), "{e}");
    let p = e.problems().to_vec();
    assert!(!p.is_empty());
    p
}

/// The only problem, which must be reported under `var`.
#[track_caller]
fn only_problem(pairs: &[(&str, &str)], var: &str, message_part: &str) {
    let p = problems(pairs);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].location, var, "{}", p[0]);
    assert!(
        p[0].message.contains(message_part),
        "{} should contain {message_part:?}",
        p[0]
    );
}

const IMAGES: (&str, &str) = (
    "IMAGES",
    "java=quay.io/eclipse/che-java11-maven:next;theia=quay.io/eclipse/che-theia:next",
);

#[test]
fn documented_defaults() {
    let c = ok(&[IMAGES]);
    assert_eq!(c.caching_interval_hours, 1);
    assert_eq!(c.namespace, "kubernetes-image-puller");
    assert_eq!(c.deployment_name, None);
    assert_eq!(c.kip_image, config::DEFAULT_KIP_IMAGE);
    assert_eq!(c.sets.len(), 1);
    let set = &c.sets[0];
    assert_eq!(set.name, "kubernetes-image-puller");
    assert_eq!(
        set.resources,
        Resources {
            cpu_request: ".05".into(),
            cpu_limit: ".2".into(),
            memory_request: "10Mi".into(),
            memory_limit: "20Mi".into(),
        }
    );
    assert!(set.node_selector.is_empty());
    assert!(set.tolerations.is_empty());
    assert_eq!(set.affinity, None);
    assert!(set.image_pull_secrets.is_empty());
    assert!(set.annotations.is_empty());
    assert_eq!(set.priority_class_name, None);
    let images: Vec<(&str, &str)> = set
        .images
        .iter()
        .map(|i| (i.name.as_str(), i.reference.as_str()))
        .collect();
    assert_eq!(
        images,
        [
            ("java", "quay.io/eclipse/che-java11-maven:next"),
            ("theia", "quay.io/eclipse/che-theia:next")
        ]
    );
}

#[test]
fn every_variable_is_read() {
    let c = ok(&[
        ("IMAGES", "a=busybox:1"),
        ("CACHING_INTERVAL_HOURS", "12"),
        ("CACHING_MEMORY_REQUEST", "5Mi"),
        ("CACHING_MEMORY_LIMIT", "15Mi"),
        ("CACHING_CPU_REQUEST", "10m"),
        ("CACHING_CPU_LIMIT", "1"),
        ("DAEMONSET_NAME", "my-cache"),
        ("DEPLOYMENT_NAME", "my-puller"),
        ("NAMESPACE", "tools"),
        ("NODE_SELECTOR", r#"{"pool": "general", "kubernetes.io/os": "linux"}"#),
        (
            "TOLERATIONS",
            r#"[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]"#,
        ),
        (
            "AFFINITY",
            r#"{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}"#,
        ),
        ("IMAGE_PULL_SECRETS", "a;b"),
        ("DAEMONSET_ANNOTATIONS", r#"{"example.com/team": "platform"}"#),
        ("KIP_IMAGE", "registry.example.com/kip:2"),
    ]);
    assert_eq!(c.caching_interval_hours, 12);
    assert_eq!(c.namespace, "tools");
    assert_eq!(c.deployment_name.as_deref(), Some("my-puller"));
    assert_eq!(c.kip_image, "registry.example.com/kip:2");
    let s = &c.sets[0];
    assert_eq!(s.name, "my-cache", "DAEMONSET_NAME names the set");
    assert_eq!(
        s.resources,
        Resources {
            cpu_request: "10m".into(),
            cpu_limit: "1".into(),
            memory_request: "5Mi".into(),
            memory_limit: "15Mi".into(),
        }
    );
    assert_eq!(
        s.node_selector,
        BTreeMap::from([
            ("pool".into(), "general".into()),
            ("kubernetes.io/os".into(), "linux".into())
        ])
    );
    assert_eq!(s.tolerations.len(), 1);
    assert_eq!(s.tolerations[0].key.as_deref(), Some("gpu"));
    assert_eq!(s.tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(s.tolerations[0].effect.as_deref(), Some("NoSchedule"));
    let na = s
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .expect("node affinity");
    let req = na.required_during_scheduling_ignored_during_execution.as_ref().unwrap();
    assert_eq!(
        req.node_selector_terms[0].match_expressions.as_ref().unwrap()[0]
            .values
            .as_deref(),
        Some(&["a".to_owned()][..])
    );
    assert_eq!(s.image_pull_secrets, ["a", "b"]);
    assert_eq!(
        s.annotations,
        BTreeMap::from([("example.com/team".into(), "platform".into())])
    );
}

#[test]
fn upstream_vars_lists_what_is_read() {
    for var in [
        "IMAGES",
        "CACHING_INTERVAL_HOURS",
        "CACHING_MEMORY_REQUEST",
        "CACHING_MEMORY_LIMIT",
        "CACHING_CPU_REQUEST",
        "CACHING_CPU_LIMIT",
        "DAEMONSET_NAME",
        "DEPLOYMENT_NAME",
        "NAMESPACE",
        "NODE_SELECTOR",
        "TOLERATIONS",
        "AFFINITY",
        "IMAGE_PULL_SECRETS",
        "DAEMONSET_ANNOTATIONS",
        "KIP_IMAGE",
    ] {
        assert!(UPSTREAM_VARS.contains(&var), "{var}");
    }
    assert_eq!(UPSTREAM_VARS.len(), 15);
}

#[test]
fn images_tolerate_whitespace_and_separators() {
    let c = ok(&[("IMAGES", "  a = busybox:1 ;\n b=alpine:3;;  ;")]);
    let images: Vec<(&str, &str)> = c.sets[0]
        .images
        .iter()
        .map(|i| (i.name.as_str(), i.reference.as_str()))
        .collect();
    assert_eq!(images, [("a", "busybox:1"), ("b", "alpine:3")]);
}

#[test]
fn malformed_images_entries_are_errors_not_skipped() {
    // Upstream logged and skipped these; here each one is a problem naming IMAGES and the entry.
    let p = problems(&[("IMAGES", "a=busybox;justname;b=x=y;=noname;noimage=")]);
    let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
    assert!(p.iter().all(|p| p.location == "IMAGES"), "{p:#?}");
    assert_eq!(p.len(), 4, "{messages:#?}");
    assert!(messages[0].contains("entry 2 \"justname\" has no '='"), "{messages:#?}");
    assert!(
        messages[1].contains("entry 3 \"b=x=y\" has more than one '='"),
        "{messages:#?}"
    );
    assert!(
        messages[2].contains("entry 4 \"=noname\" has an empty name or image"),
        "{messages:#?}"
    );
    assert!(
        messages[3].contains("entry 5 \"noimage=\" has an empty name or image"),
        "{messages:#?}"
    );
}

#[test]
fn repeated_image_names_are_an_error() {
    // A real config used one name for two digests; upstream silently kept one of them.
    let (d1, d2) = (
        format!("busybox@sha256:{}", "1".repeat(64)),
        format!("busybox@sha256:{}", "2".repeat(64)),
    );
    only_problem(
        &[("IMAGES", &format!("a={d1};b=alpine;a={d2}"))],
        "IMAGES",
        &format!("entry 3: name \"a\" is given twice (\"{d1}\" and \"{d2}\")"),
    );
}

#[test]
fn bad_image_names_and_references_name_images() {
    let p = problems(&[("IMAGES", "Java=quay.io/x:1;ok=UPPER/Case:1;kip-sleep-install=busybox")]);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p.iter().all(|p| p.location == "IMAGES"), "{p:#?}");
    assert!(
        p.iter()
            .any(|p| p.message.contains("container name: \"Java\" is not a valid name")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|p| p.message.contains("\"UPPER/Case:1\" is not an image reference")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|p| p.message.contains("is reserved for the sleeper's init container")),
        "{p:#?}"
    );
}

#[test]
fn images_unset_or_empty_is_an_error_naming_images() {
    only_problem(
        &[],
        "IMAGES",
        "is not set: give the images to cache as name=image;name=image",
    );
    only_problem(&[("IMAGES", "")], "IMAGES", "is not set");
    only_problem(&[("IMAGES", "   ")], "IMAGES", "is not set");
    // Only separators: parses to nothing, so the set has no images.
    only_problem(&[("IMAGES", ";;")], "IMAGES", "has no images");
}

#[test]
fn empty_values_count_as_unset() {
    let c = ok(&[
        IMAGES,
        ("CACHING_INTERVAL_HOURS", ""),
        ("CACHING_MEMORY_LIMIT", ""),
        ("NODE_SELECTOR", ""),
        ("DAEMONSET_NAME", " "),
        ("NAMESPACE", ""),
        ("TOLERATIONS", ""),
        ("AFFINITY", ""),
        ("IMAGE_PULL_SECRETS", ""),
    ]);
    assert_eq!(c.caching_interval_hours, 1);
    assert_eq!(c.namespace, "kubernetes-image-puller");
    assert_eq!(c.sets[0].name, "kubernetes-image-puller");
    assert_eq!(c.sets[0].resources.memory_limit, "20Mi");
    assert!(c.sets[0].node_selector.is_empty());
}

#[test]
fn caching_interval_hours() {
    assert_eq!(
        ok(&[IMAGES, ("CACHING_INTERVAL_HOURS", " 24 ")]).caching_interval_hours,
        24
    );
    assert_eq!(
        ok(&[IMAGES, ("CACHING_INTERVAL_HOURS", "8760")]).caching_interval_hours,
        8760
    );
    for bad in ["0", "-1", "8761"] {
        only_problem(
            &[IMAGES, ("CACHING_INTERVAL_HOURS", bad)],
            "CACHING_INTERVAL_HOURS",
            "from 1 to 8760",
        );
    }
    // Upstream silently turned these into 1.
    for bad in ["1.5", "abc", "1h", "99999999999999999999"] {
        only_problem(
            &[IMAGES, ("CACHING_INTERVAL_HOURS", bad)],
            "CACHING_INTERVAL_HOURS",
            &format!("{bad:?} is not a whole number of hours (1 to 8760)"),
        );
    }
}

#[test]
fn quantities() {
    for var in [
        "CACHING_MEMORY_REQUEST",
        "CACHING_MEMORY_LIMIT",
        "CACHING_CPU_REQUEST",
        "CACHING_CPU_LIMIT",
    ] {
        only_problem(&[IMAGES, (var, "lots")], var, "\"lots\" is not a quantity");
    }
    only_problem(
        &[IMAGES, ("CACHING_MEMORY_LIMIT", "5Mi")],
        "CACHING_MEMORY_LIMIT",
        "memory request \"10Mi\" is above the limit \"5Mi\"",
    );
    // Only the request given: the problem is reported there.
    only_problem(
        &[IMAGES, ("CACHING_CPU_REQUEST", "2")],
        "CACHING_CPU_REQUEST",
        "cpu request \"2\" is above the limit \".2\"",
    );
    only_problem(
        &[IMAGES, ("CACHING_CPU_REQUEST", "0"), ("CACHING_CPU_LIMIT", "0")],
        "CACHING_CPU_LIMIT",
        "is 0",
    );
}

#[test]
fn node_selector() {
    only_problem(
        &[IMAGES, ("NODE_SELECTOR", "{pool: general}")],
        "NODE_SELECTOR",
        "is not a JSON object of strings",
    );
    only_problem(
        &[IMAGES, ("NODE_SELECTOR", r#"{"gpu": true}"#)],
        "NODE_SELECTOR",
        "invalid type: boolean `true`, expected a string",
    );
    only_problem(
        &[IMAGES, ("NODE_SELECTOR", r#"{"n": 1}"#)],
        "NODE_SELECTOR",
        "expected a string",
    );
    only_problem(
        &[IMAGES, ("NODE_SELECTOR", r#"["pool"]"#)],
        "NODE_SELECTOR",
        "is not a JSON object of strings",
    );
    only_problem(
        &[IMAGES, ("NODE_SELECTOR", r#"{"bad key": "x"}"#)],
        "NODE_SELECTOR",
        "key \"bad key\" is not a valid label key",
    );
    only_problem(
        &[IMAGES, ("NODE_SELECTOR", r#"{"pool": "-x"}"#)],
        "NODE_SELECTOR",
        "value \"-x\" of \"pool\"",
    );
    assert!(ok(&[IMAGES, ("NODE_SELECTOR", "{}")]).sets[0].node_selector.is_empty());
}

#[test]
fn tolerations() {
    only_problem(
        &[IMAGES, ("TOLERATIONS", "[{")],
        "TOLERATIONS",
        "is not a JSON list of tolerations",
    );
    only_problem(
        &[IMAGES, ("TOLERATIONS", r#"{"key": "a"}"#)],
        "TOLERATIONS",
        "is not a JSON list of tolerations",
    );
    only_problem(
        &[IMAGES, ("TOLERATIONS", r#"[{"key": "a", "operator": "Maybe"}]"#)],
        "TOLERATIONS",
        "unknown variant `Maybe`",
    );
    only_problem(
        &[IMAGES, ("TOLERATIONS", r#"[{"key": "a", "efect": "NoSchedule"}]"#)],
        "TOLERATIONS",
        "unknown field `efect`",
    );
    only_problem(
        &[IMAGES, ("TOLERATIONS", r#"[{"operator": "Equal"}]"#)],
        "TOLERATIONS",
        "no key must have operator \"Exists\"",
    );
    only_problem(
        &[
            IMAGES,
            ("TOLERATIONS", r#"[{"key": "a", "operator": "Exists", "value": "v"}]"#),
        ],
        "TOLERATIONS",
        "must not have a value",
    );
    only_problem(
        &[IMAGES, ("TOLERATIONS", r#"[{"key": "a", "tolerationSeconds": 5}]"#)],
        "TOLERATIONS",
        "only allowed with effect \"NoExecute\"",
    );
    assert!(ok(&[IMAGES, ("TOLERATIONS", "[]")]).sets[0].tolerations.is_empty());
}

#[test]
fn affinity() {
    only_problem(
        &[IMAGES, ("AFFINITY", "{")],
        "AFFINITY",
        "is not a JSON Affinity object",
    );
    only_problem(
        &[IMAGES, ("AFFINITY", "[]")],
        "AFFINITY",
        "is not a JSON Affinity object",
    );
    // Kubernetes' types ignore unknown fields: a typo would silently drop the affinity.
    only_problem(
        &[IMAGES, ("AFFINITY", r#"{"nodeAfinity": {}}"#)],
        "AFFINITY",
        "nodeAfinity: unknown field `nodeAfinity`",
    );
    only_problem(
        &[
            IMAGES,
            (
                "AFFINITY",
                r#"{"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "x", "labelSelectr": {}}}]}}"#,
            ),
        ],
        "AFFINITY",
        "podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.labelSelectr: unknown field",
    );
    assert!(ok(&[IMAGES, ("AFFINITY", "{}")]).sets[0].affinity.is_some());
}

#[test]
fn image_pull_secrets() {
    let c = ok(&[IMAGES, ("IMAGE_PULL_SECRETS", " a ; b;; c ")]);
    assert_eq!(c.sets[0].image_pull_secrets, ["a", "b", "c"]);
    only_problem(
        &[IMAGES, ("IMAGE_PULL_SECRETS", "good;Bad_One")],
        "IMAGE_PULL_SECRETS",
        "\"Bad_One\" not valid Secret names",
    );
}

#[test]
fn daemonset_annotations() {
    let c = ok(&[
        IMAGES,
        ("DAEMONSET_ANNOTATIONS", r#"{"a": "1", "example.com/b": "two words"}"#),
    ]);
    assert_eq!(
        c.sets[0].annotations.get("example.com/b").map(String::as_str),
        Some("two words")
    );
    only_problem(
        &[IMAGES, ("DAEMONSET_ANNOTATIONS", r#"{"a": 1}"#)],
        "DAEMONSET_ANNOTATIONS",
        "is not a JSON object of strings",
    );
    only_problem(
        &[IMAGES, ("DAEMONSET_ANNOTATIONS", "nope")],
        "DAEMONSET_ANNOTATIONS",
        "is not a JSON object of strings",
    );
    only_problem(
        &[IMAGES, ("DAEMONSET_ANNOTATIONS", r#"{"bad key": "x"}"#)],
        "DAEMONSET_ANNOTATIONS",
        "\"bad key\" not valid annotation keys",
    );
}

#[test]
fn names_and_images_of_the_puller() {
    only_problem(
        &[IMAGES, ("DAEMONSET_NAME", "My_Set")],
        "DAEMONSET_NAME",
        "\"My_Set\" is not a valid name",
    );
    only_problem(
        &[IMAGES, ("NAMESPACE", "a.b")],
        "NAMESPACE",
        "\"a.b\" is not a valid name",
    );
    only_problem(
        &[IMAGES, ("DEPLOYMENT_NAME", "Bad")],
        "DEPLOYMENT_NAME",
        "\"Bad\" is not a valid object name",
    );
    only_problem(
        &[IMAGES, ("KIP_IMAGE", "no spaces allowed")],
        "KIP_IMAGE",
        "is not an image reference",
    );
    // A dotted Deployment name is a valid object name.
    assert_eq!(
        ok(&[IMAGES, ("DEPLOYMENT_NAME", "a.b")]).deployment_name.as_deref(),
        Some("a.b")
    );
}

#[test]
fn every_problem_names_its_variable() {
    let pairs = [
        ("IMAGES", "a=busybox;b"),
        ("CACHING_INTERVAL_HOURS", "0"),
        ("CACHING_MEMORY_REQUEST", "x"),
        ("CACHING_MEMORY_LIMIT", "y"),
        ("CACHING_CPU_REQUEST", "z"),
        ("CACHING_CPU_LIMIT", "w"),
        ("DAEMONSET_NAME", "Bad"),
        ("DEPLOYMENT_NAME", "Bad"),
        ("NAMESPACE", "Bad"),
        ("NODE_SELECTOR", "{"),
        ("TOLERATIONS", "{"),
        ("AFFINITY", "{"),
        ("IMAGE_PULL_SECRETS", "Bad"),
        ("DAEMONSET_ANNOTATIONS", "{"),
        ("KIP_IMAGE", "Bad Image"),
    ];
    let p = problems(&pairs);
    let mut named: Vec<&str> = p.iter().map(|p| p.location.as_str()).collect();
    named.sort_unstable();
    named.dedup();
    let mut expected: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
    expected.sort_unstable();
    assert_eq!(named, expected, "{p:#?}");
    assert_eq!(p.len(), pairs.len(), "one problem per variable: {p:#?}");
    // Display: "VAR: message".
    assert!(
        p.iter()
            .all(|p| p.to_string().starts_with(&format!("{}: ", p.location)))
    );
}

#[test]
fn parse_images_directly() {
    assert_eq!(parse_images(""), Ok(BTreeMap::new()));
    assert_eq!(
        parse_images("x=a;y = b ;"),
        Ok(BTreeMap::from([("x".into(), "a".into()), ("y".into(), "b".into())]))
    );
    assert_eq!(parse_images("x").unwrap_err().len(), 1);
}
