//! Nothing panics on any input, every failure explains itself, and well-formed IMAGES round-trip.

mod support;

use std::collections::BTreeMap;

use kubernetes_image_puller::config::{self, ConfigError, UPSTREAM_VARS, parse_images, rules};
use kubernetes_image_puller::render::{self, RenderOptions};
use proptest::prelude::*;
use support::{Vars, read_repo_file};

/// Every error lists at least one problem, each with a message and a location.
fn assert_explained(e: &ConfigError) -> Result<(), TestCaseError> {
    match e {
        ConfigError::Invalid { problems, origin } => {
            prop_assert!(!origin.is_empty());
            prop_assert!(!problems.is_empty(), "no problems listed: {}", e);
            for p in problems {
                prop_assert!(!p.message.trim().is_empty(), "empty message in {}", e);
                prop_assert!(!p.location.is_empty(), "no location in {}", e);
            }
        }
        ConfigError::Read { .. } | ConfigError::Input { .. } => prop_assert!(false, "unexpected read error: {}", e),
    }
    Ok(())
}

/// Loads TOML text; a valid config must also render.
fn check_toml(text: &str) -> Result<(), TestCaseError> {
    match config::load_toml_str(text, "prop.toml", &Vars::none()) {
        Ok(c) => {
            prop_assert!(!c.sets.is_empty());
            let dss = render::render(&c, &RenderOptions::default());
            prop_assert_eq!(dss.len(), c.sets.len());
            prop_assert!(render::to_yaml(&dss).is_ok());
        }
        Err(e) => {
            assert_explained(&e)?;
            for p in e.problems() {
                prop_assert!(
                    p.location.starts_with("prop.toml"),
                    "location {:?} should name the file",
                    p.location
                );
            }
        }
    }
    Ok(())
}

/// TOML-ish text: keys, brackets, quotes, numbers and the config's own words, in any order.
fn tomlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("[[sets]]\n".to_owned()),
        Just("[defaults]\n".to_owned()),
        Just("name = ".to_owned()),
        Just("images = ".to_owned()),
        Just("tolerations = ".to_owned()),
        Just("affinity = ".to_owned()),
        Just("node_selector = ".to_owned()),
        Just("memory_limit = ".to_owned()),
        Just("caching_interval_hours = ".to_owned()),
        Just("{ ".to_owned()),
        Just(" }".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just(", ".to_owned()),
        Just("=".to_owned()),
        Just("\n".to_owned()),
        Just("#".to_owned()),
        "[a-zA-Z0-9_.:/@-]{1,12}",
        "\"[a-z0-9.:/@-]{0,12}\"",
        "-?[0-9]{1,20}(\\.[0-9]{1,3})?",
        "[\\PC]{1,4}",
    ];
    proptest::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

/// A shipped config with a few random edits (deletions, insertions, replacements, line shuffles).
fn mutated_config() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just(read_repo_file("config/default.toml")),
        Just(read_repo_file("config/gpu-pools.toml")),
        Just(read_repo_file("tests/fixtures/full.toml")),
        Just(read_repo_file("tests/fixtures/many-errors.toml")),
    ];
    let edit = (
        0..5u8,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        "[\\PC]{0,6}",
    );
    (base, proptest::collection::vec(edit, 1..6)).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (kind, at, other, insert) in edits {
            if chars.is_empty() {
                chars.extend(insert.chars());
                continue;
            }
            let i = at.index(chars.len());
            match kind {
                0 => {
                    let end = (i + 1 + other.index(8)).min(chars.len());
                    chars.drain(i..end);
                }
                1 => {
                    chars.splice(i..i, insert.chars());
                }
                2 => chars[i] = insert.chars().next().unwrap_or('"'),
                3 => {
                    // Duplicate the line holding i.
                    let text: String = chars.iter().collect();
                    let lines: Vec<&str> = text.lines().collect();
                    let n = other.index(lines.len().max(1));
                    let mut out: Vec<&str> = lines.clone();
                    if let Some(line) = lines.get(n) {
                        out.insert(n, line);
                    }
                    chars = out.join("\n").chars().collect();
                }
                _ => {
                    // Swap two lines.
                    let text: String = chars.iter().collect();
                    let mut lines: Vec<&str> = text.lines().collect();
                    if !lines.is_empty() {
                        let (a, b) = (at.index(lines.len()), other.index(lines.len()));
                        lines.swap(a, b);
                    }
                    chars = lines.join("\n").chars().collect();
                }
            }
        }
        chars.into_iter().collect()
    })
}

/// Values a variable might hold: JSON-ish, lists, quantities, junk.
fn var_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[a-z0-9=;: ./@-]{0,40}",
        "\\{(\"[a-zA-Z0-9./_-]{0,10}\": ?(\"[a-zA-Z0-9._-]{0,8}\"|[0-9]{1,3}|true|null|\\[\\]|\\{\\}),? ?){0,4}\\}?",
        "\\[(\\{(\"(key|operator|value|effect|tolerationSeconds|x)\": ?(\"[A-Za-z]{0,10}\"|-?[0-9]{1,5}),? ?){0,4}\\},? ?){0,3}\\]?",
        "[+-]{0,2}[0-9]{0,25}(\\.[0-9]{0,12})?([eE][+-]?[0-9]{0,6}|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|i|x)?",
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn load_toml_never_panics_on_any_string(text in ".{0,300}") {
        check_toml(&text)?;
    }

    #[test]
    fn load_toml_never_panics_on_tomlish_text(text in tomlish()) {
        check_toml(&text)?;
    }

    #[test]
    fn load_toml_never_panics_on_mutated_configs(text in mutated_config()) {
        check_toml(&text)?;
    }

    #[test]
    fn parse_images_never_panics_and_explains(value in ".{0,200}") {
        if let Err(errors) = parse_images(&value) {
            prop_assert!(!errors.is_empty());
            prop_assert!(errors.iter().all(|e| e.starts_with("entry ")), "{:?}", errors);
        }
    }

    #[test]
    fn well_formed_images_round_trip(
        images in proptest::collection::btree_map("[a-z][a-z0-9-]{0,15}", "[a-z0-9][a-z0-9./:@_-]{0,30}", 0..12),
        pad in "[ \t]{0,2}",
        trailing in proptest::bool::ANY,
    ) {
        let mut text = images.iter().map(|(k, v)| format!("{pad}{k}{pad}={pad}{v}{pad}")).collect::<Vec<_>>().join(";");
        if trailing {
            text.push(';');
        }
        prop_assert_eq!(parse_images(&text), Ok(images));
    }

    #[test]
    fn load_from_vars_never_panics_and_names_variables(
        images in var_value(),
        node_selector in var_value(),
        tolerations in var_value(),
        affinity in var_value(),
        annotations in var_value(),
        memory_request in var_value(),
        memory_limit in var_value(),
        cpu_request in var_value(),
        cpu_limit in var_value(),
        interval in var_value(),
        secrets in var_value(),
        name in var_value(),
    ) {
        let vars = Vars::new(&[
            ("IMAGES", &images),
            ("NODE_SELECTOR", &node_selector),
            ("TOLERATIONS", &tolerations),
            ("AFFINITY", &affinity),
            ("DAEMONSET_ANNOTATIONS", &annotations),
            ("CACHING_MEMORY_REQUEST", &memory_request),
            ("CACHING_MEMORY_LIMIT", &memory_limit),
            ("CACHING_CPU_REQUEST", &cpu_request),
            ("CACHING_CPU_LIMIT", &cpu_limit),
            ("CACHING_INTERVAL_HOURS", &interval),
            ("IMAGE_PULL_SECRETS", &secrets),
            ("DAEMONSET_NAME", &name),
        ]);
        match config::load_from_vars(&vars, "environment") {
            Ok(c) => {
                prop_assert_eq!(c.sets.len(), 1);
                let dss = render::render(&c, &RenderOptions::default());
                prop_assert!(render::to_yaml(&dss).is_ok());
            }
            Err(e) => {
                assert_explained(&e)?;
                for p in e.problems() {
                    prop_assert!(UPSTREAM_VARS.contains(&p.location.as_str()), "{:?} is not a variable", p.location);
                }
            }
        }
    }

    #[test]
    fn quantities_never_panic(s in prop_oneof![".{0,40}", "[+-]{0,2}[0-9]{0,40}(\\.[0-9]{0,40})?([eE][+-]?[0-9]{0,25}|[KMGTPE]i|[numkMGTPE])?"]) {
        if let Ok(n) = rules::quantity_nanos(&s) {
            prop_assert!(n >= 0);
            prop_assert!(rules::quantity(&s).is_ok());
        } else {
            prop_assert!(rules::quantity(&s).is_err());
        }
        let _ = rules::parse_quantity(&s);
    }

    #[test]
    fn quantities_are_exact_and_ordered(a in 0u64..1 << 40, b in 0u64..1 << 40, milli in 0u64..1000) {
        let q = |s: String| rules::quantity_nanos(&s).unwrap();
        prop_assert_eq!(q(format!("{a}Mi")), i128::from(a) * 1_048_576 * 1_000_000_000);
        prop_assert_eq!(q(format!("{a}Mi")), q(format!("{}", u128::from(a) * 1_048_576)));
        prop_assert_eq!(q(format!("{a}.{milli:03}")), q(format!("{}m", u128::from(a) * 1000 + u128::from(milli))));
        prop_assert_eq!(q(format!("{a}")).cmp(&q(format!("{b}"))), a.cmp(&b));
        prop_assert_eq!(q(format!("{a}k")), q(format!("{a}e3")));
    }

    #[test]
    fn any_request_and_limit_pair_loads_or_explains(
        request in "[0-9]{1,12}(\\.[0-9]{1,9})?([eE][+-]?[0-9]{1,2}|[KMGTPE]i|[numkMGTPE])?",
        limit in "[0-9]{1,12}(\\.[0-9]{1,9})?([eE][+-]?[0-9]{1,2}|[KMGTPE]i|[numkMGTPE])?",
    ) {
        // Comparing far-apart units (1n against 1e28) once overflowed inside the quantity library.
        let text = format!("{}cpu_request = \"{request}\"\ncpu_limit = \"{limit}\"\n", support::MINIMAL_SET);
        check_toml(&text)?;
        let (rq, lq) = (rules::quantity_nanos(&request), rules::quantity_nanos(&limit));
        let loaded = config::load_toml_str(&text, "prop.toml", &Vars::none());
        if let (Ok(rq), Ok(lq)) = (rq, lq) {
            prop_assert_eq!(loaded.is_ok(), rq <= lq && lq > 0, "{} / {}: {:?}", request, limit, loaded.err().map(|e| e.to_string()));
        } else {
            prop_assert!(loaded.is_err());
        }
    }

    #[test]
    fn image_reference_fast_path_agrees_with_the_full_check(s in prop_oneof![
        "[a-zA-Z0-9._:/@-]{1,40}",
        "([a-zA-Z0-9.-]{1,12}(:[0-9a-z]{0,5})?/)?[a-z0-9._-]{1,12}(/[a-zA-Z0-9._-]{1,10}){0,2}(:[A-Za-z0-9_.-]{0,12})?(@sha(256|512):[0-9a-fA-F]{62,66})?",
        "[a-z]{1,4}(/[a-z]{1,4})?:[a-zA-Z0-9_.-]{120,130}",
        "[a-z]{1,3}(/[a-z0-9]{60,70}){3,4}",
    ]) {
        // The full check, as it was before the regex-free fast path: ASCII, lowercase repository path, then
        // oci-spec's parser.
        let full = !s.is_empty()
            && !s.chars().any(char::is_whitespace)
            && s.is_ascii()
            && !s.split_once('/').is_some_and(|(first, _)| !first.contains(['.', ':']) && first.bytes().any(|c| c.is_ascii_uppercase()))
            && s.parse::<oci_spec::distribution::Reference>().is_ok();
        prop_assert_eq!(rules::check_image_reference(&s).is_ok(), full, "{:?}", s);
    }

    #[test]
    fn image_references_never_panic(s in ".{0,80}") {
        if let Err(message) = rules::check_image_reference(&s) {
            prop_assert!(!message.is_empty());
        }
    }
}

/// One fault a set may carry, each worth exactly one problem: an unknown key, a type error, an invalid value
/// (field rule, image, affinity, toleration variant). 0 is none.
const SET_FAULTS: [&str; 7] = [
    "",
    "memory_limt = \"1Mi\"\n",
    "memory_limit = 5\n",
    "memory_limit = \"lots\"\n",
    "images = { b = \"Not An Image\" }\n",
    "affinity = { nodeAffinity = { requiredDuringSchedulingIgnoredDuringExecution = { nodeSelectorTerms = [{ matchExpressions = [{ key = \"k\", operator = \"Sometimes\" }] }] } } }\n",
    "tolerations = [{ key = \"k\", operator = \"Maybe\" }]\n",
];
const TOP_FAULTS: [&str; 4] = [
    "",
    "namespac = \"x\"\n",
    "caching_interval_hours = \"x\"\n",
    "caching_interval_hours = 0\n",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_fault_is_reported_once_whatever_else_is_wrong(
        top in 0..TOP_FAULTS.len(),
        faults in proptest::collection::vec(0..SET_FAULTS.len(), 1..6),
    ) {
        let mut text = TOP_FAULTS[top].to_owned();
        for (i, f) in faults.iter().enumerate() {
            text.push_str(&format!("[[sets]]\nname = \"s{i}\"\n{}", SET_FAULTS[*f]));
            if *f != 4 {
                text.push_str("images = { a = \"busybox\" }\n");
            }
        }
        let expected = usize::from(top != 0) + faults.iter().filter(|f| **f != 0).count();
        match config::load_toml_str(&text, "prop.toml", &Vars::none()) {
            Ok(_) => prop_assert_eq!(expected, 0, "{}", text),
            Err(e) => {
                let p = e.problems();
                prop_assert_eq!(p.len(), expected, "{}\n{}", text, e);
                for (i, f) in faults.iter().enumerate() {
                    let about = p.iter().filter(|p| p.field.starts_with(&format!("sets[{i}]"))).count();
                    prop_assert_eq!(about, usize::from(*f != 0), "sets[{}] in\n{}\n{}", i, text, e);
                }
            }
        }
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    for text in [
        format!("a = {}", "[".repeat(2000)),
        format!("a = {}", "{ b = ".repeat(2000)),
        format!(
            "{MINIMAL}affinity = {}1{}\n",
            "{ a = ".repeat(100),
            " }".repeat(100),
            MINIMAL = support::MINIMAL_SET
        ),
    ] {
        // Run on a thread with a modest stack, like a test thread; a stack overflow would abort the process.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                config::load_toml_str(&text, "deep.toml", &Vars::none())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .unwrap();
        let result = handle.join().expect("no panic");
        assert!(result.is_err());
    }
}

#[test]
fn round_trip_keeps_every_image() {
    // A deterministic companion to the property above: the upstream README's list.
    let text = "java11-maven=quay.io/eclipse/che-java11-maven:next;che-theia=quay.io/eclipse/che-theia:next;java-plugin-runner=eclipse/che-remote-plugin-runner-java8:latest;";
    let images = parse_images(text).unwrap();
    let again: String = images.iter().map(|(k, v)| format!("{k}={v};")).collect();
    assert_eq!(parse_images(&again).unwrap(), images);
    assert_eq!(images.len(), 3);
    let _: BTreeMap<String, String> = images;
}
