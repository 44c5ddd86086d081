//! Raw config → [`Config`]: runs the `validator` field rules, the cross-field checks, and merges defaults.
//! Every problem is collected (not just the first) with the path of the field it concerns.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Toleration as K8sToleration;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use super::affinity;
use super::model::{RawConfig, RawSet, TaintEffect, Toleration, TolerationOperator};
use super::rules::{self, q, quantity_nanos};
use super::{Config, DEFAULT_KIP_IMAGE, DEFAULT_NAMESPACE, Image, ImageSet, Resources, SLEEPER_INIT_CONTAINER};
use crate::render::MAX_OBJECT_BYTES;

/// One step of a path into the config document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub type FieldPath = Vec<Seg>;

/// A problem before it is given a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub path: FieldPath,
    pub message: String,
}

pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// True when one path leads into the other: a problem about a field that was left out, or about what
/// holds it, is a consequence of the problem that left it out.
pub fn overlaps(a: &[Seg], b: &[Seg]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Paths of fields already reported and left out; see [`overlaps`]. Ordered, so that a lookup costs a few
/// searches, not a scan: a file can hold thousands of problems.
#[derive(Debug, Default)]
pub struct Tainted(std::collections::BTreeSet<FieldPath>);

impl Tainted {
    pub fn new(paths: Vec<FieldPath>) -> Self {
        Self(paths.into_iter().collect())
    }

    /// Whether `path` overlaps a tainted path: one of them leads into the other.
    pub fn covers(&self, path: &[Seg]) -> bool {
        // A tainted path holding this one: one of its prefixes.
        let held = (0..=path.len()).any(|n| self.0.contains(&path[..n]));
        // A tainted path inside this one: sorted right after it.
        held || self
            .0
            .range::<[Seg], _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|t| t.starts_with(path))
    }
}

/// The most bytes of annotations (keys and values together) the API server accepts on an object:
/// `TotalAnnotationSizeLimitB` = 256 KiB in Kubernetes `ValidateAnnotationsSize`
/// (apimachinery pkg/api/validation/objectmeta.go).
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

fn problem(path: FieldPath, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        path,
        message: message.into(),
    }
}

/// `sets[1] (gpu).memory_limit`: the path as a user reads it, naming the set when it has a name
/// (`set_names`: each set's, in order).
pub fn describe(path: &[Seg], set_names: &[String]) -> String {
    let set_name = match path {
        [Seg::Key(k), Seg::Index(i), ..] if k == "sets" => set_names.get(*i).map(String::as_str),
        _ => None,
    };
    match set_name.filter(|n| !n.is_empty()) {
        // `sets[1]` then ` (gpu)`, then the rest as usual.
        Some(name) => {
            let head = dotted(&path[..2]);
            let rest = dotted(&path[2..]);
            let name = rules::short(name);
            if rest.is_empty() {
                format!("{head} ({name})")
            } else {
                format!("{head} ({name}).{rest}")
            }
        }
        None => dotted(path),
    }
}

/// The keys of `given` that `kept` lacks: what a Kubernetes type dropped when it was deserialized
/// (k8s-openapi ignores unknown fields, so a misspelt `nodeAfinity` would vanish without a word).
/// `kept` is the typed value serialized back. Paths are relative to the value.
pub fn dropped_fields(given: &serde_json::Value, kept: &serde_json::Value) -> Vec<FieldPath> {
    fn walk(given: &serde_json::Value, kept: &serde_json::Value, path: &mut FieldPath, out: &mut Vec<FieldPath>) {
        use serde_json::Value;
        match (given, kept) {
            (Value::Object(g), Value::Object(k)) => {
                for (name, value) in g {
                    path.push(Seg::Key(name.clone()));
                    match k.get(name) {
                        Some(kept_value) => walk(value, kept_value, path, out),
                        None => out.push(path.clone()),
                    }
                    path.pop();
                }
            }
            (Value::Array(g), Value::Array(k)) => {
                for (i, (value, kept_value)) in g.iter().zip(k).enumerate() {
                    path.push(Seg::Index(i));
                    walk(value, kept_value, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(given, kept, &mut Vec::new(), &mut out);
    out
}

/// `a.b[0].c`: a path inside a value, as the user wrote it.
pub fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&rules::short(k));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The problem reported for a field of a Kubernetes object that Kubernetes would ignore.
pub fn dropped_field_message(path: &[Seg]) -> String {
    let name = match path.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    format!(
        "unknown field `{name}`: Kubernetes would ignore it; use the API's camelCase field names, e.g. nodeAffinity, requiredDuringSchedulingIgnoredDuringExecution"
    )
}

/// Checks everything and builds the resolved config, or returns every problem found. Takes the raw config:
/// its strings (thousands of image names and references) move into the config instead of being copied.
pub fn resolve(raw: RawConfig) -> Result<Config, Vec<FieldProblem>> {
    let mut problems = check(&raw);
    // Built even when problems were found, so that the size of each DaemonSet is checked too.
    let config = build(raw);
    check_rendered_size(&config, &mut problems);
    // Validation problems come out of hash maps: sort for a stable, document-ordered report.
    problems.sort_by(|a, b| {
        path_order(&a.path)
            .cmp(&path_order(&b.path))
            .then(a.message.cmp(&b.message))
    });
    problems.dedup();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(config)
}

/// Every problem of the raw config but the size of the DaemonSets (which needs them built), unsorted.
fn check(raw: &RawConfig) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if let Err(errors) = raw.validate() {
        flatten_validation(&errors, &mut Vec::new(), &mut problems);
    }
    if raw.sets.is_empty() {
        problems.push(problem(
            vec![key("sets")],
            "no image sets: add at least one [[sets]] with a name and images",
        ));
    }
    let mut first_use: HashMap<&str, usize> = HashMap::new();
    for (i, set) in raw.sets.iter().enumerate() {
        if let Some(prev) = first_use.insert(&set.name, i) {
            first_use.insert(&set.name, prev);
            problems.push(problem(
                vec![key("sets"), Seg::Index(i), key("name")],
                format!(
                    "set name {} is already used by sets[{prev}]: each set needs its own name (it names the DaemonSet)",
                    q(&set.name)
                ),
            ));
        }
        check_images(i, set, &mut problems);
        check_request_within_limit(raw, i, &mut problems);
        check_annotation_size(raw, i, &mut problems);
        if let Some(a) = &set.affinity {
            affinity::check(a, vec![key("sets"), Seg::Index(i), key("affinity")], &mut problems);
        }
    }
    if let Some(a) = &raw.defaults.affinity {
        affinity::check(a, vec![key("defaults"), key("affinity")], &mut problems);
    }
    problems
}

/// The annotations of each DaemonSet (the defaults merged with the set's, and the puller's own spec hash)
/// must fit in [`MAX_ANNOTATION_BYTES`]. Reported at the annotations the user wrote.
fn check_annotation_size(raw: &RawConfig, i: usize, problems: &mut Vec<FieldProblem>) {
    let set = &raw.sets[i];
    let empty = BTreeMap::new();
    let own = set.annotations.as_ref().unwrap_or(&empty);
    let defaults = raw.defaults.annotations.as_ref().unwrap_or(&empty);
    let size = |(k, v): (&String, &String)| k.len() + v.len();
    let total: usize = own.iter().map(size).sum::<usize>()
        + defaults
            .iter()
            .filter(|(k, _)| !own.contains_key(*k))
            .map(size)
            .sum::<usize>()
        + SPEC_HASH_ANNOTATION_BYTES
        + scanner_notes_bytes(|k| own.contains_key(k) || defaults.contains_key(k));
    if total <= MAX_ANNOTATION_BYTES {
        return;
    }
    let path = if set.annotations.is_some() {
        vec![key("sets"), Seg::Index(i), key("annotations")]
    } else {
        vec![key("defaults"), key("annotations")]
    };
    problems.push(problem(
        path,
        format!(
            "the annotations take {total} bytes (keys and values, with the defaults' and the puller's own): the API server allows at most {MAX_ANNOTATION_BYTES} bytes (256 KiB) of annotations on an object"
        ),
    ));
}

/// Keys and values of the scanner notes render adds (OpenShift's too, whatever the platform), but for those a
/// user annotation replaces.
fn scanner_notes_bytes(replaced: impl Fn(&str) -> bool) -> usize {
    crate::render::CHECKOV_SKIPS
        .iter()
        .copied()
        .chain([crate::render::CHECKOV_SKIP_OPENSHIFT])
        .filter(|(k, _)| !replaced(k))
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

/// Key and value of the spec-hash annotation render adds (32 hex digits).
const SPEC_HASH_ANNOTATION_BYTES: usize = crate::labels::SPEC_HASH.len() + 32;

/// Each DaemonSet as rendered must fit in [`MAX_OBJECT_BYTES`]; reported at the set's images, which make up
/// nearly all of it.
fn check_rendered_size(config: &Config, problems: &mut Vec<FieldProblem>) {
    for (i, set) in config.sets.iter().enumerate() {
        if let Some(size) = crate::render::size_if_over(config, set, MAX_OBJECT_BYTES) {
            problems.push(problem(
                vec![key("sets"), Seg::Index(i), key("images")],
                format!(
                    "the DaemonSet of this set would be {size} bytes ({} images): over the limit of {MAX_OBJECT_BYTES} bytes (1 MiB) for one object; split the images over several sets",
                    set.images.len()
                ),
            ));
        }
    }
}

fn path_order(path: &[Seg]) -> Vec<(usize, String)> {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => (usize::MAX, k.clone()),
            Seg::Index(i) => (*i, String::new()),
        })
        .collect()
}

fn flatten_validation(errors: &ValidationErrors, path: &mut FieldPath, out: &mut Vec<FieldProblem>) {
    for (field, kind) in errors.errors() {
        let pushed = field != "__all__";
        if pushed {
            path.push(Seg::Key(field.to_string()));
        }
        match kind {
            ValidationErrorsKind::Field(list) => {
                for e in list {
                    let message = e
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("invalid value ({})", e.code));
                    out.push(problem(path.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten_validation(inner, path, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    path.push(Seg::Index(*i));
                    flatten_validation(inner, path, out);
                    path.pop();
                }
            }
        }
        if pushed {
            path.pop();
        }
    }
}

fn check_images(i: usize, set: &RawSet, problems: &mut Vec<FieldProblem>) {
    let at = |k: Option<&str>| {
        let mut p = vec![key("sets"), Seg::Index(i), key("images")];
        if let Some(k) = k {
            p.push(key(k));
        }
        p
    };
    if set.images.is_empty() {
        problems.push(problem(
            at(None),
            format!(
                "set {} has no images: add images = {{ name = \"registry/image:tag\" }}",
                q(&set.name)
            ),
        ));
    }
    for (name, reference) in &set.images {
        if name == SLEEPER_INIT_CONTAINER {
            problems.push(problem(
                at(Some(name)),
                format!(
                    "container name {} is reserved for the sleeper's init container",
                    q(name)
                ),
            ));
        } else if let Err(e) = rules::dns_label(name) {
            let why = e.message.map(|m| m.to_string()).unwrap_or_default();
            problems.push(problem(at(Some(name)), format!("container name: {why}")));
        }
        if let Err(why) = rules::check_image_reference(reference) {
            problems.push(problem(at(Some(name)), why));
        }
    }
}

/// A request above its limit is refused by the API server; say so here, at the field the user wrote.
fn check_request_within_limit(raw: &RawConfig, i: usize, problems: &mut Vec<FieldProblem>) {
    let set = &raw.sets[i];
    let d = &raw.defaults;
    let fallback = Resources::default();
    let pairs = [
        (
            "cpu",
            &set.cpu_request,
            &d.cpu_request,
            &fallback.cpu_request,
            &set.cpu_limit,
            &d.cpu_limit,
            &fallback.cpu_limit,
        ),
        (
            "memory",
            &set.memory_request,
            &d.memory_request,
            &fallback.memory_request,
            &set.memory_limit,
            &d.memory_limit,
            &fallback.memory_limit,
        ),
    ];
    for (what, set_req, def_req, fb_req, set_lim, def_lim, fb_lim) in pairs {
        let req = set_req.as_ref().or(def_req.as_ref()).unwrap_or(fb_req);
        let lim = set_lim.as_ref().or(def_lim.as_ref()).unwrap_or(fb_lim);
        let (Ok(rq), Ok(lq)) = (quantity_nanos(req), quantity_nanos(lim)) else {
            continue; // already reported by the field rules
        };
        let limit_field = format!("{what}_limit");
        let request_field = format!("{what}_request");
        // Point at the field the user wrote: the set's own values first, then the defaults.
        let written = [
            (set_lim.is_some(), vec![key("sets"), Seg::Index(i), key(&limit_field)]),
            (set_req.is_some(), vec![key("sets"), Seg::Index(i), key(&request_field)]),
            (def_lim.is_some(), vec![key("defaults"), key(&limit_field)]),
            (def_req.is_some(), vec![key("defaults"), key(&request_field)]),
        ];
        let path = written
            .into_iter()
            .find_map(|(is_written, path)| is_written.then_some(path))
            .unwrap_or_else(|| vec![key("sets"), Seg::Index(i)]);
        if lq == 0 {
            problems.push(problem(
                path,
                format!(
                    "{limit_field} of set {} is 0: a cache container needs a limit above 0",
                    q(&set.name)
                ),
            ));
        } else if rq > lq {
            problems.push(problem(
                path,
                format!(
                    "{what} request {} is above the limit {} in set {}: the request must not exceed the limit",
                    q(req),
                    q(lim),
                    q(&set.name)
                ),
            ));
        }
    }
}

fn build(raw: RawConfig) -> Config {
    let sets = raw
        .sets
        .into_iter()
        .map(|s| {
            // The set's value, else the default's (see `per_set_fields!`), else the built-in one.
            let v = s.over(&raw.defaults);
            let builtin = Resources::default();
            ImageSet {
                name: s.name,
                images: s
                    .images
                    .into_iter()
                    .map(|(name, reference)| Image { name, reference })
                    .collect(),
                resources: Resources {
                    cpu_request: v.cpu_request.unwrap_or(builtin.cpu_request),
                    cpu_limit: v.cpu_limit.unwrap_or(builtin.cpu_limit),
                    memory_request: v.memory_request.unwrap_or(builtin.memory_request),
                    memory_limit: v.memory_limit.unwrap_or(builtin.memory_limit),
                },
                node_selector: v.node_selector.unwrap_or_default(),
                tolerations: v
                    .tolerations
                    .map(|ts| ts.iter().map(to_k8s_toleration).collect())
                    .unwrap_or_default(),
                affinity: v.affinity,
                image_pull_secrets: v.image_pull_secrets.unwrap_or_default(),
                priority_class_name: v.priority_class_name,
                annotations: v.annotations.unwrap_or_default(),
                refresh: v.refresh.unwrap_or_default(),
            }
        })
        .collect();
    Config {
        namespace: raw.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        // Range-checked (1..=8760) by the field rules before we get here.
        caching_interval_hours: raw.caching_interval_hours.map_or(1, |h| u32::try_from(h).unwrap_or(1)),
        // Checked by the field rules before we get here.
        refresh_check_interval: raw
            .refresh_check_interval
            .as_deref()
            .and_then(|s| super::rules::check_interval_of(s).ok())
            .unwrap_or(super::DEFAULT_REFRESH_CHECK_INTERVAL),
        kip_image: raw.kip_image.unwrap_or_else(|| DEFAULT_KIP_IMAGE.into()),
        deployment_name: raw.deployment_name,
        sets,
        // Checked by the field rules before we get here.
        warm_gate: raw.warm_gate.map(|w| super::WarmGate {
            taint: w.taint.filter(|t| !t.is_empty()),
            timeout: w
                .timeout
                .as_deref()
                .and_then(|s| super::rules::check_interval_of(s).ok())
                .unwrap_or(super::DEFAULT_WARM_TIMEOUT),
        }),
    }
}

fn to_k8s_toleration(t: &Toleration) -> K8sToleration {
    K8sToleration {
        key: t.key.clone(),
        // "" is left out: the API stores it as absent (omitempty), so the live object would never match it.
        operator: non_empty(t.operator.map(TolerationOperator::as_str)),
        value: t.value.clone(),
        effect: non_empty(t.effect.map(TaintEffect::as_str)),
        toleration_seconds: t.toleration_seconds,
    }
}

fn non_empty(name: Option<&str>) -> Option<String> {
    name.filter(|n| !n.is_empty()).map(str::to_owned)
}
