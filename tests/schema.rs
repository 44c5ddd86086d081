//! `schemas/config.schema.json` is generated; it must match the code, and the shipped configs must follow it.

mod support;

use kubernetes_image_puller::config;
use serde_json::Value;
use support::{read_repo_file, repo_path};

const SCHEMA_FILE: &str = "schemas/config.schema.json";

fn committed_schema() -> Value {
    serde_json::from_str(&read_repo_file(SCHEMA_FILE)).expect("the committed schema is JSON")
}

#[test]
fn committed_schema_is_up_to_date() {
    let expected = format!("{}\n", serde_json::to_string_pretty(&config::json_schema()).unwrap());
    let committed = std::fs::read_to_string(repo_path(SCHEMA_FILE)).unwrap_or_default();
    assert!(
        committed == expected,
        "{SCHEMA_FILE} is stale: the config types changed. Regenerate it with\n\n    cargo run -- schema > {SCHEMA_FILE}\n\nand commit the result."
    );
}

#[test]
fn schema_describes_the_config_file() {
    let schema = committed_schema();
    assert_eq!(schema["title"], "kubernetes-image-puller config");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level keys are refused"
    );
    let mut top: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
        [
            "caching_interval_hours",
            "defaults",
            "deployment_name",
            "kip_image",
            "namespace",
            "refresh_check_interval",
            "sets",
            "warm_gate"
        ]
    );
    let set = &schema["$defs"]["RawSet"];
    assert_eq!(set["required"], serde_json::json!(["name"]));
    for field in [
        "images",
        "memory_limit",
        "node_selector",
        "tolerations",
        "affinity",
        "refresh",
        "annotations",
    ] {
        assert!(set["properties"].get(field).is_some(), "sets[].{field}");
        assert!(
            set["properties"][field]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "sets[].{field} is documented"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A small validator for the subset of JSON Schema that schemars writes here: $ref, anyOf, type, properties,
// additionalProperties, required, items, enum / oneOf of consts.

fn resolve<'s>(root: &'s Value, mut s: &'s Value) -> &'s Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        s = &root["$defs"][r.trim_start_matches("#/$defs/")];
    }
    s
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn validate(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = resolve(root, schema);
    if schema == &Value::Bool(true) {
        return;
    }
    if let Some(branches) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        let ok = branches.iter().any(|b| {
            let mut e = Vec::new();
            validate(root, b, v, path, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{path}: matches none of the allowed forms"));
        }
        return;
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errors.push(format!("{path}: must be {c}"));
        }
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(v)
    {
        errors.push(format!("{path}: {v} is not one of {values:?}"));
    }
    if let Some(ty) = schema.get("type") {
        let ok = match ty {
            Value::String(t) => type_matches(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_matches(t, v)),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: {v} is not of type {ty}"));
            return;
        }
    }
    if let Value::Object(map) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !map.contains_key(name.as_str().unwrap()) {
                errors.push(format!("{path}: missing {name}"));
            }
        }
        for (k, item) in map {
            let sub_path = format!("{path}.{k}");
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => validate(root, s, item, &sub_path, errors),
                (None, Some(Value::Bool(false))) => errors.push(format!("{sub_path}: unknown key")),
                (None, Some(s)) => validate(root, s, item, &sub_path, errors),
                (None, None) => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(root, item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn schema_errors(toml_text: &str) -> Vec<String> {
    let schema = committed_schema();
    let value: Value = toml::from_str(toml_text).expect("TOML");
    let mut errors = Vec::new();
    validate(&schema, &schema, &value, "$", &mut errors);
    errors
}

#[test]
fn shipped_configs_follow_the_schema() {
    for file in [
        "config/default.toml",
        "config/gpu-pools.toml",
        "tests/fixtures/full.toml",
    ] {
        let text = read_repo_file(file);
        assert_eq!(schema_errors(&text), Vec::<String>::new(), "{file}");
        // And their top-level keys are the schema's.
        let value: toml::Table = toml::from_str(&text).unwrap();
        let schema = committed_schema();
        for key in value.keys() {
            assert!(
                schema["properties"].get(key).is_some(),
                "{file}: top-level key {key} is not in the schema"
            );
        }
    }
}

#[test]
fn the_validator_above_catches_mistakes() {
    // So that the test above means something.
    let errors =
        schema_errors("namespce = \"x\"\n[[sets]]\nname = \"a\"\nimages = { a = 1 }\nrefresh = \"sometimes\"\n");
    assert!(errors.iter().any(|e| e == "$.namespce: unknown key"), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.starts_with("$.sets[0].images.a:")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.starts_with("$.sets[0].refresh:")), "{errors:?}");
    let errors = schema_errors(
        "[[sets]]\nimages = {}\ntolerations = [{ key = \"k\", operator = \"Maybe\", colour = \"red\" }]\n",
    );
    assert!(errors.iter().any(|e| e == "$.sets[0]: missing \"name\""), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("$.sets[0].tolerations[0].operator")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e == "$.sets[0].tolerations[0].colour: unknown key"),
        "{errors:?}"
    );
}
