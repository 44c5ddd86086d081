//! The upstream tool's environment variables, read as one image set.
//!
//! Same names and documented defaults as upstream; where upstream skips or mangles bad input (a malformed
//! IMAGES entry, a repeated name, a bad quantity) this reports a problem naming the variable instead.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::model::{PER_SET_FIELDS, RawConfig, RawDefaults, RawSet};
use super::resolve::{FieldPath, Seg, dotted, dropped_field_message, dropped_fields};
use super::rules::q;
use super::{DEFAULT_DAEMONSET_NAME, Problem};

/// Every variable the fallback reads, in the order the upstream README lists them (then the newer ones).
pub const UPSTREAM_VARS: &[&str] = &[
    "CACHING_INTERVAL_HOURS",
    "CACHING_MEMORY_REQUEST",
    "CACHING_MEMORY_LIMIT",
    "CACHING_CPU_REQUEST",
    "CACHING_CPU_LIMIT",
    "DAEMONSET_NAME",
    "DEPLOYMENT_NAME",
    "NAMESPACE",
    "IMAGES",
    "NODE_SELECTOR",
    "TOLERATIONS",
    "AFFINITY",
    "IMAGE_PULL_SECRETS",
    "DAEMONSET_ANNOTATIONS",
    "KIP_IMAGE",
];

/// Parses `name=image;name=image;...`: whitespace around parts and empty entries (a trailing `;`) are fine;
/// an entry without exactly one `=`, an empty side, or a repeated name is an error (upstream dropped them).
pub fn parse_images(value: &str) -> Result<BTreeMap<String, String>, Vec<String>> {
    let (images, errors) = parse_images_partial(value);
    if errors.is_empty() { Ok(images) } else { Err(errors) }
}

/// As [`parse_images`], but keeps the entries that parsed beside the errors, so that one malformed entry
/// does not hide the checks of the others.
fn parse_images_partial(value: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut images = BTreeMap::new();
    let mut errors = Vec::new();
    for (n, entry) in value
        .split(';')
        .map(str::trim)
        .enumerate()
        .filter(|(_, e)| !e.is_empty())
    {
        let n = n + 1;
        let mut parts = entry.splitn(3, '=').map(str::trim);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(image), None) if !name.is_empty() && !image.is_empty() => {
                if let Some(previous) = images.insert(name.to_owned(), image.to_owned()) {
                    errors.push(format!(
                        "entry {n}: name {} is given twice ({} and {}); each name must be unique",
                        q(name),
                        q(&previous),
                        q(image)
                    ));
                }
            }
            (_, None, _) => errors.push(format!("entry {n} {} has no '=': write name=image", q(entry))),
            (_, Some(_), None) => errors.push(format!(
                "entry {n} {} has an empty name or image: write name=image",
                q(entry)
            )),
            _ => errors.push(format!(
                "entry {n} {} has more than one '=': write name=image",
                q(entry)
            )),
        }
    }
    (images, errors)
}

/// A source of variable values and where each came from (an env var, or a file of a mounted ConfigMap).
pub trait VarSource {
    /// The value, unless unset or empty (an empty value counts as unset, as upstream).
    fn get(&self, name: &str) -> Option<String>;
    /// How to name the variable in an error: `IMAGES` or `/etc/kip/IMAGES`.
    fn label(&self, name: &str) -> String;
}

/// The variable that holds a field of the one set the env vars define.
pub fn var_for(path: &FieldPath) -> &'static str {
    let key = |i: usize| match path.get(i) {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "",
    };
    match key(0) {
        "namespace" => "NAMESPACE",
        "caching_interval_hours" => "CACHING_INTERVAL_HOURS",
        "kip_image" => "KIP_IMAGE",
        "deployment_name" => "DEPLOYMENT_NAME",
        "sets" | "defaults" => match if key(0) == "sets" { key(2) } else { key(1) } {
            "name" => "DAEMONSET_NAME",
            field => PER_SET_FIELDS
                .iter()
                .find(|f| f.name == field)
                .and_then(|f| f.env.as_ref())
                .map(|(var, _)| *var)
                .unwrap_or("IMAGES"),
        },
        _ => "IMAGES",
    }
}

/// Builds the raw one-set config from the variables. Problems found while parsing values are returned
/// beside it; the offending fields are left unset so that the other checks still run.
pub fn raw_from_vars(vars: &dyn VarSource) -> (RawConfig, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut report = |var: &str, message: String| {
        problems.push(Problem {
            location: vars.label(var),
            field: String::new(),
            message,
        });
    };

    let images = match vars.get("IMAGES") {
        None => {
            report(
                "IMAGES",
                "is not set: give the images to cache as name=image;name=image".into(),
            );
            BTreeMap::new()
        }
        Some(v) => {
            let (images, errors) = parse_images_partial(&v);
            for e in errors {
                report("IMAGES", e);
            }
            images
        }
    };
    let caching_interval_hours = vars
        .get("CACHING_INTERVAL_HOURS")
        .and_then(|v| match v.trim().parse::<i64>() {
            Ok(h) => Some(h),
            Err(_) => {
                report(
                    "CACHING_INTERVAL_HOURS",
                    format!("{} is not a whole number of hours (1 to 8760)", q(&v)),
                );
                None
            }
        });
    let values = RawDefaults::from_vars(&mut VarReader {
        vars,
        report: &mut report,
    });
    let set = RawSet {
        name: vars
            .get("DAEMONSET_NAME")
            .unwrap_or_else(|| DEFAULT_DAEMONSET_NAME.into()),
        images,
        // The upstream behaviour: pull policy Always and a rolling restart every CACHING_INTERVAL_HOURS.
        refresh: Some(super::Refresh::Interval),
        ..RawSet::from(values)
    };
    let raw = RawConfig {
        namespace: vars.get("NAMESPACE"),
        caching_interval_hours,
        refresh_check_interval: None,
        kip_image: vars.get("KIP_IMAGE"),
        deployment_name: vars.get("DEPLOYMENT_NAME"),
        warm_gate: None,
        defaults: RawDefaults::default(),
        sets: vec![set],
    };
    (raw, problems)
}

/// How an upstream variable writes a per-set value (see `per_set_fields!` in `model.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarForm {
    /// The value as it is.
    Text,
    /// `a;b;c`: whitespace around items and empty items are dropped.
    List,
    /// JSON, named in errors by the text given: what it is, then `, e.g.` and an example. The example is shown
    /// when the value is not JSON, and left out when it is JSON of the wrong type (serde says what it found).
    Json(&'static str),
    /// JSON of a Kubernetes type, which drops unknown fields without a word: each dropped field is a problem.
    KubernetesJson(&'static str),
}

impl VarForm {
    /// How a value of this form is named when it does not parse, and when it is of the wrong type.
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            Self::Json(what) | Self::KubernetesJson(what) => {
                (what, what.split_once(", e.g.").map_or(*what, |(shape, _)| shape))
            }
            // Text and lists are built as strings: only a field that is not a string could refuse them.
            Self::Text => ("text", "a string"),
            Self::List => ("a list", "a list of strings separated by ';'"),
        }
    }
}

/// Reads per-set values from the variables, reporting each problem against the variable that holds it.
pub struct VarReader<'v, 'r> {
    pub vars: &'v dyn VarSource,
    pub report: &'r mut dyn FnMut(&str, String),
}

impl VarReader<'_, '_> {
    /// The variable as a JSON value (text as a string, a list as an array of strings); None when unset or
    /// when its JSON does not parse (reported).
    pub fn parse(&mut self, var: &str, form: &VarForm) -> Option<serde_json::Value> {
        let v = self.vars.get(var)?;
        match form {
            VarForm::Text => Some(serde_json::Value::String(v)),
            VarForm::List => Some(
                v.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| serde_json::Value::String(s.to_owned()))
                    .collect(),
            ),
            VarForm::Json(_) | VarForm::KubernetesJson(_) => serde_json::from_str(&v)
                .map_err(|e| (self.report)(var, format!("is not {}: {e}", form.names().0)))
                .ok(),
        }
    }

    /// The parsed value as the field's type; None (reported) when it is of the wrong shape or, for a
    /// Kubernetes type, when it holds fields Kubernetes would drop.
    pub fn typed<T: DeserializeOwned + Serialize>(
        &mut self,
        var: &str,
        form: &VarForm,
        value: Option<serde_json::Value>,
    ) -> Option<T> {
        let value = value?;
        // Only a Kubernetes type needs the value as given after typing, to compare.
        let given = matches!(form, VarForm::KubernetesJson(_)).then(|| value.clone());
        let typed: T = serde_json::from_value(value)
            .map_err(|e| (self.report)(var, format!("is not {}: {e}", form.names().1)))
            .ok()?;
        let Some(given) = given else { return Some(typed) };
        let kept = serde_json::to_value(&typed).unwrap_or_default();
        let dropped = dropped_fields(&given, &kept);
        for path in &dropped {
            (self.report)(var, format!("{}: {}", dotted(path), dropped_field_message(path)));
        }
        dropped.is_empty().then_some(typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_tolerate_whitespace_and_trailing_separator() {
        let images = parse_images(" java = quay.io/a/java:1 ; theia=quay.io/a/theia:next;").unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images["java"], "quay.io/a/java:1");
        assert_eq!(images["theia"], "quay.io/a/theia:next");
    }

    #[test]
    fn images_errors_name_the_entry() {
        let errors = parse_images("a=x;broken;b=y=z;a=w;=q").unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("entry 2 \"broken\" has no '='"), "{errors:?}");
        assert!(errors[1].contains("more than one '='"), "{errors:?}");
        assert!(errors[2].contains("given twice"), "{errors:?}");
        assert!(errors[3].contains("empty name"), "{errors:?}");
    }

    #[test]
    fn var_names_for_fields() {
        let p = |segs: &[&str]| -> FieldPath {
            segs.iter()
                .map(|s| s.parse::<usize>().map_or_else(|_| Seg::Key((*s).into()), Seg::Index))
                .collect()
        };
        assert_eq!(var_for(&p(&["sets", "0", "memory_limit"])), "CACHING_MEMORY_LIMIT");
        assert_eq!(var_for(&p(&["sets", "0", "name"])), "DAEMONSET_NAME");
        assert_eq!(var_for(&p(&["sets", "0", "images", "java"])), "IMAGES");
        assert_eq!(var_for(&p(&["caching_interval_hours"])), "CACHING_INTERVAL_HOURS");
        assert_eq!(var_for(&p(&["sets", "0", "tolerations", "0"])), "TOLERATIONS");
    }
}
