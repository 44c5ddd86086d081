//! The config file as written: serde + schemars + validator types.
//!
//! These structs are the contract of the TOML file (field names are snake_case, Kubernetes objects keep the
//! API's camelCase names). Single-field syntax is checked by `validator` attributes; checks that need more
//! than one field (defaults merge, request <= limit, duplicate names) live in `resolve.rs`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Affinity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::Validate;

use super::env::VarForm;
use super::rules;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, Validate)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kubernetes-image-puller config")]
pub struct RawConfig {
    /// Namespace of the DaemonSets. Default: the NAMESPACE environment variable, then
    /// "kubernetes-image-puller".
    #[validate(custom(function = "rules::dns_label"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Hours between health checks (and refreshes of moving tags). Integer from 1 to 8760. Default: 1.
    #[validate(range(min = 1, max = 8760, message = "must be a whole number of hours from 1 to 8760"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caching_interval_hours: Option<i64>,

    /// How often moving tags (sets with `refresh = "digest"`) are resolved to their registry digest and compared
    /// with the nodes': a duration such as "15m", "1h" or "90s", from 10s to 24h. Default: "15m".
    #[validate(custom(function = "rules::check_interval"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_check_interval: Option<String>,

    /// Image that provides the static sleeper (`/usr/local/bin/kip-sleep`) copied into every cache pod.
    /// Default: the KIP_IMAGE environment variable, then this project's image.
    #[validate(custom(function = "rules::image_reference"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kip_image: Option<String>,

    /// Name of the puller's own Deployment: the DaemonSets' owner, so that uninstalling removes them.
    /// Default: the DEPLOYMENT_NAME environment variable; none when unset. At most 63 characters: it is also
    /// the value of the app.kubernetes.io/instance label.
    #[validate(custom(function = "rules::deployment_name"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,

    /// New nodes take work only once their cache is warm: the controller writes the node condition
    /// `kubernetes-image-puller/ImagesCached` on every node a set selects and, with `taint`, removes that
    /// startup taint from a node once it is warm (or after `timeout`). Off without this table.
    #[validate(nested)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_gate: Option<RawWarmGate>,

    /// Values every set inherits unless it sets its own.
    #[validate(nested)]
    #[serde(default)]
    pub defaults: RawDefaults,

    /// The image sets: one DaemonSet each.
    #[validate(nested)]
    #[serde(default)]
    pub sets: Vec<RawSet>,
}

// The per-set fields are listed once, below, and `per_set_fields!` (fields.rs) writes them out as
// `RawDefaults`, as `RawSet` (after its `name` and `images`), as the set-over-defaults merge and as the env
// fallback's reader.
// A macro rather than one struct shared by `#[serde(flatten)]`: flatten buffers the values, so type errors lose
// their line and column and `deny_unknown_fields` stops working, and the two structs document each field
// differently in the JSON Schema ("Memory request ..." under defaults, "See `defaults.memory_request`." in a
// set).
//
// Each entry: the defaults' doc comment, then `name: Type = merge`, where `merge` is `replace` (the set's value,
// else the default's) or `extend` (a map: the default's entries, the set's winning per key); `env VAR as form`
// when an upstream variable sets it (see [`VarForm`]); `sample`, a valid TOML value unlike the built-in
// default, with which a test follows the field from defaults, sets and env into the resolved set; `in_set`,
// the field's doc comment in a set; then the attributes of the field in both structs (validation rules,
// schema overrides).
// Beyond its entry (and its rule in rules.rs), a new field needs only its resolved form: a field of `ImageSet`
// and its line in `resolve::build`, where the built-in default applies.
per_set_fields! {
    /// Per-set values shared by all sets unless a set overrides them.
    #[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, Validate)]
    #[serde(deny_unknown_fields)]
    pub struct RawDefaults;

    /// One image set: a DaemonSet whose pods hold one sleeping container per image.
    #[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, Validate)]
    #[serde(deny_unknown_fields)]
    pub struct RawSet {
        /// DNS-1123 label; also the DaemonSet's name.
        #[validate(custom(function = "rules::dns_label"))]
        pub name: String,
        /// Container name (DNS-1123 label) to image reference.
        #[serde(default, deserialize_with = "map_in_bulk")]
        pub images: BTreeMap<String, String>,
    }

    fields {
        /// Memory request of each cache container (Kubernetes quantity). Default: 10Mi.
        memory_request: String = replace, env "CACHING_MEMORY_REQUEST" as VarForm::Text, sample r#""16Mi""#,
            in_set "See `defaults.memory_request`.", #[validate(custom(function = "rules::quantity"))];
        /// Memory limit of each cache container (Kubernetes quantity). Default: 20Mi.
        memory_limit: String = replace, env "CACHING_MEMORY_LIMIT" as VarForm::Text, sample r#""30Mi""#,
            in_set "See `defaults.memory_limit`.", #[validate(custom(function = "rules::quantity"))];
        /// CPU request of each cache container (Kubernetes quantity: ".05", "50m"). Default: .05.
        cpu_request: String = replace, env "CACHING_CPU_REQUEST" as VarForm::Text, sample r#""100m""#,
            in_set "See `defaults.cpu_request`.", #[validate(custom(function = "rules::quantity"))];
        /// CPU limit of each cache container (Kubernetes quantity). Default: .2.
        cpu_limit: String = replace, env "CACHING_CPU_LIMIT" as VarForm::Text, sample r#""500m""#,
            in_set "See `defaults.cpu_limit`.", #[validate(custom(function = "rules::quantity"))];
        /// Node labels a node must carry to run the set's pods.
        node_selector: BTreeMap<String, String> = replace,
            env "NODE_SELECTOR" as VarForm::Json("a JSON object of strings, e.g. {\"pool\": \"general\"}"),
            sample r#"{ pool = "general" }"#,
            in_set "Replaces `defaults.node_selector` for this set.", #[validate(custom(function = "rules::label_map"))];
        /// Kubernetes tolerations (API field names: key, operator, value, effect, tolerationSeconds).
        tolerations: Vec<Toleration> = replace,
            env "TOLERATIONS"
                as VarForm::Json("a JSON list of tolerations, e.g. [{\"key\": \"gpu\", \"operator\": \"Exists\"}]"),
            sample r#"[{ key = "gpu", operator = "Exists", effect = "NoSchedule" }]"#,
            in_set "Replaces `defaults.tolerations` for this set.", #[validate(nested)];
        /// Kubernetes Affinity object (API field names), e.g. `{ nodeAffinity = { ... } }`.
        affinity: Affinity = replace,
            env "AFFINITY" as VarForm::KubernetesJson("a JSON Affinity object, e.g. {\"nodeAffinity\": {...}}"),
            sample r#"{ nodeAffinity = { requiredDuringSchedulingIgnoredDuringExecution = { nodeSelectorTerms = [
                { matchExpressions = [{ key = "pool", operator = "In", values = ["general"] }] }] } } }"#,
            in_set "Replaces `defaults.affinity` for this set.",
            #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")];
        /// Names of Secrets in the namespace used to pull the images.
        image_pull_secrets: Vec<String> = replace, env "IMAGE_PULL_SECRETS" as VarForm::List,
            sample r#"["regcred", "mirror"]"#, in_set "Replaces `defaults.image_pull_secrets` for this set.",
            #[validate(custom(function = "rules::dns_subdomain_list"))];
        /// PriorityClass of the cache pods.
        priority_class_name: String = replace, sample r#""cache-low""#,
            in_set "Replaces `defaults.priority_class_name` for this set.",
            #[validate(custom(function = "rules::dns_subdomain"))];
        /// Extra annotations on the DaemonSet.
        annotations: BTreeMap<String, String> = extend,
            env "DAEMONSET_ANNOTATIONS" as VarForm::Json("a JSON object of strings"),
            sample r#"{ "example.com/team" = "infra" }"#,
            in_set "Merged over `defaults.annotations` (the set's value wins per key).",
            #[validate(custom(function = "rules::annotation_map"))];
        /// How moving tags (":latest") stay current. "digest": every refresh_check_interval the registry is asked
        /// for each tag's digest (one manifest HEAD per image) and only the nodes whose cache holds another
        /// digest are refreshed; cache containers never need the registry to restart. "interval": the
        /// upstream way, pull policy Always and a rolling restart every caching_interval_hours. "never":
        /// nothing is pulled again. Default: "digest" ("interval" for the upstream environment variables).
        /// Digest-pinned images are never pulled again.
        refresh: Refresh = replace, sample r#""never""#, in_set "Replaces `defaults.refresh` for this set.";
    }
}

/// The `[warm_gate]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct RawWarmGate {
    /// Key of a startup taint (effect NoSchedule) that nodes carry when they join, e.g.
    /// "kubernetes-image-puller/cold" (set by the node provisioner or the kubelet's `--register-with-taints`).
    /// The cache pods tolerate it; the controller removes it from a node once every set selecting the node
    /// has its cache pod ready there, or after `timeout`. It never adds it. Default: none (only the condition).
    #[validate(custom(function = "rules::label_key"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taint: Option<String>,

    /// How long a node may stay cold before its startup taint is removed anyway (with a Warning Event on the
    /// node), counted from its Ready transition (else its creation): a duration such as "15m", from 10s to
    /// 24h. Default: "15m".
    #[validate(custom(function = "rules::check_interval"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// How moving tags stay current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Refresh {
    /// The registry's digest of each moving tag is checked every refresh_check_interval; only nodes holding
    /// another digest pull again. Cache containers are IfNotPresent: a restart never needs the registry.
    #[default]
    Digest,
    /// Pull policy Always and a rolling restart every caching_interval_hours (the upstream behaviour).
    Interval,
    /// Never restart for freshness; only config changes roll the pods.
    Never,
}

/// A Kubernetes toleration, with the API's field names and rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[validate(schema(function = "rules::toleration"))]
pub struct Toleration {
    /// Taint key; empty with operator Exists matches every taint.
    #[validate(custom(function = "rules::label_key"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// "Equal" (default; "" means Equal too) or "Exists".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// Taint value for operator Equal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// "NoSchedule", "PreferNoSchedule" or "NoExecute"; "" (or none) matches all effects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// For NoExecute only: seconds the pod stays bound after the taint appears.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum TolerationOperator {
    Exists,
    Equal,
    /// "": the API takes it for Equal.
    #[serde(rename = "")]
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    /// "": the API takes it for every effect.
    #[serde(rename = "")]
    All,
}

/// A string enum of the Kubernetes API whose names are listed once, for deserializing and for `as_str`.
trait ApiName: Copy + PartialEq + 'static {
    const NAMES: &'static [(&'static str, Self)];
    /// Ends the error for an unknown name.
    const EXPECTED: &'static str;

    fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(name, _)| name)
    }
}

impl ApiName for TolerationOperator {
    const NAMES: &'static [(&'static str, Self)] =
        &[("Exists", Self::Exists), ("Equal", Self::Equal), ("", Self::Empty)];
    const EXPECTED: &'static str = "`Exists` or `Equal` (or \"\", which means Equal)";
}

impl ApiName for TaintEffect {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("NoSchedule", Self::NoSchedule),
        ("PreferNoSchedule", Self::PreferNoSchedule),
        ("NoExecute", Self::NoExecute),
        ("", Self::All),
    ];
    const EXPECTED: &'static str =
        "one of `NoSchedule`, `PreferNoSchedule`, `NoExecute` (or \"\", which means all effects)";
}

// By hand, for a message that explains "" (serde's would list it as ``).
fn deserialize_name<'de, T: ApiName, D: serde::Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    T::NAMES
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown variant `{}`, expected {}",
                rules::q(&s).to_string().trim_matches('"'),
                T::EXPECTED
            ))
        })
}

impl<'de> Deserialize<'de> for TolerationOperator {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_name(d)
    }
}

impl<'de> Deserialize<'de> for TaintEffect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_name(d)
    }
}

impl TolerationOperator {
    pub fn as_str(self) -> &'static str {
        ApiName::as_str(self)
    }
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        ApiName::as_str(self)
    }
}

/// The JSON Schema of the config file, as committed in `schemas/config.schema.json`.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(RawConfig).to_value()
}

/// A map of strings built in one go from its entries rather than by one insert each, as serde does: the
/// entries are sorted once (one pass when the file lists them in order) and the tree is built without a
/// search per key. A repeated key keeps its last value, as an insert would; the messages are serde's.
fn map_in_bulk<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
            while let Some(entry) = map.next_entry::<String, String>()? {
                entries.push(entry);
            }
            Ok(BTreeMap::from_iter(entries))
        }
    }
    d.deserialize_map(Entries)
}
