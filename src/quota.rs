//! What a namespace's ResourceQuota must allow: per set (limit or request) × images × nodes. Pure.
//!
//! The sleeper's init container asks for no more than one cache container, and a pod's effective request is
//! the larger of its init containers and the sum of its containers, so the rule is exact.
//! Arithmetic is checked: a product or sum that does not fit is an error, never a saturated figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::{Config, ImageSet, rules::quantity_nanos};

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("set {set:?}: resources.{field} = {value:?} is not a quantity: {message}")]
    Quantity {
        set: String,
        field: &'static str,
        value: String,
        message: String,
    },
    #[error("set {set}: {what} x {images} image(s) x {nodes} node(s) is too large to compute")]
    SetOverflow {
        set: String,
        what: &'static str,
        images: usize,
        nodes: u64,
    },
    #[error("the total {what} of all sets is too large to compute")]
    TotalOverflow { what: &'static str },
    #[error("set {set:?}: {what} is too large to compute (overflow)")]
    Overflow { set: String, what: String },
    #[error("{object}: {key} {value:?} is not a quantity: {message}")]
    ApiQuantity {
        object: String,
        key: String,
        value: String,
        message: String,
    },
}

/// Quantities in nano-units (1e-9 of a core or a byte), exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need {
    pub cpu_request: i128,
    pub cpu_limit: i128,
    pub memory_request: i128,
    pub memory_limit: i128,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SetNeed {
    pub set: String,
    pub images: usize,
    pub nodes: u64,
    pub need: Need,
}

/// Largest need the table prints exactly: [`decimal`] scales by up to 10^3 before dividing.
const MAX_PRINTABLE_NANOS: i128 = i128::MAX / 1000;

fn overflow(set: &str, what: &str) -> QuotaError {
    QuotaError::Overflow {
        set: set.to_owned(),
        what: what.to_owned(),
    }
}

fn fits(n: Option<i128>) -> Option<i128> {
    n.filter(|n| *n <= MAX_PRINTABLE_NANOS)
}

impl Need {
    fn checked_add(&self, other: &Need) -> Result<Need, QuotaError> {
        let add = |a: i128, b: i128, what| fits(a.checked_add(b)).ok_or(QuotaError::TotalOverflow { what });
        Ok(Need {
            cpu_request: add(self.cpu_request, other.cpu_request, "cpu request")?,
            cpu_limit: add(self.cpu_limit, other.cpu_limit, "cpu limit")?,
            memory_request: add(self.memory_request, other.memory_request, "memory request")?,
            memory_limit: add(self.memory_limit, other.memory_limit, "memory limit")?,
        })
    }

    fn checked_mul(&self, factor: i128, set: &str) -> Result<Need, QuotaError> {
        let mul = |a: i128, what: &str| a.checked_mul(factor).ok_or_else(|| overflow(set, what));
        Ok(Need {
            cpu_request: mul(self.cpu_request, "cpu request")?,
            cpu_limit: mul(self.cpu_limit, "cpu limit")?,
            memory_request: mul(self.memory_request, "memory request")?,
            memory_limit: mul(self.memory_limit, "memory limit")?,
        })
    }

    /// Times `images × nodes` of `set`; an overflow names the set, the quantity and the factors.
    fn times(&self, set: &ImageSet, nodes: u64) -> Result<Need, QuotaError> {
        let overflow = |what| QuotaError::SetOverflow {
            set: set.name.clone(),
            what,
            images: set.images.len(),
            nodes,
        };
        let factor = i128::try_from(set.images.len())
            .ok()
            .and_then(|images| images.checked_mul(i128::from(nodes)));
        let mul = |a: i128, what| fits(factor.and_then(|f| a.checked_mul(f))).ok_or_else(|| overflow(what));
        Ok(Need {
            cpu_request: mul(self.cpu_request, "cpu request")?,
            cpu_limit: mul(self.cpu_limit, "cpu limit")?,
            memory_request: mul(self.memory_request, "memory request")?,
            memory_limit: mul(self.memory_limit, "memory limit")?,
        })
    }
}

/// One container's requests and limits.
pub fn per_container(set: &ImageSet) -> Result<Need, QuotaError> {
    let q = |field: &'static str, value: &str| {
        quantity_nanos(value).map_err(|message| QuotaError::Quantity {
            set: set.name.clone(),
            field,
            value: value.to_owned(),
            message,
        })
    };
    let r = &set.resources;
    Ok(Need {
        cpu_request: q("cpu_request", &r.cpu_request)?,
        cpu_limit: q("cpu_limit", &r.cpu_limit)?,
        memory_request: q("memory_request", &r.memory_request)?,
        memory_limit: q("memory_limit", &r.memory_limit)?,
    })
}

/// Per-container quantities of a set times images times nodes.
pub fn set_need(set: &ImageSet, nodes: u64) -> Result<SetNeed, QuotaError> {
    Ok(SetNeed {
        set: set.name.clone(),
        images: set.images.len(),
        nodes,
        need: per_container(set)?.times(set, nodes)?,
    })
}

/// Every set's need, with `nodes_of` giving the number of nodes each set runs on, and the total.
pub fn needs(config: &Config, nodes_of: impl Fn(&ImageSet) -> u64) -> Result<(Vec<SetNeed>, Need), QuotaError> {
    let mut per_set = Vec::with_capacity(config.sets.len());
    let mut total = Need::default();
    for s in &config.sets {
        let need = set_need(s, nodes_of(s))?;
        total = total.checked_add(&need.need)?;
        per_set.push(need);
    }
    Ok((per_set, total))
}

const NANOS: i128 = 1_000_000_000;

/// `n / d` rounded up to `places` decimals, as a plain decimal string without trailing zeros.
fn decimal(n: i128, d: i128, places: u32) -> String {
    let scale = 10i128.pow(places);
    // Quantities stay far below i128::MAX / 1e3; should one not, the figure is shown without the fraction
    // rather than a wrong one.
    let Some(scaled_n) = n.checked_mul(scale) else {
        return format!("{}", n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0));
    };
    let scaled = scaled_n.div_euclid(d) + i128::from(scaled_n.rem_euclid(d) != 0);
    let (whole, frac) = (scaled / scale, scaled % scale);
    let frac = format!("{frac:0width$}", width = places as usize);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{frac}")
    }
}

/// CPU in cores, as a quota is written: "16", "2.5", "0.05" (rounded up to 1m).
pub fn cpu(nanos: i128) -> String {
    decimal(nanos, NANOS, 3)
}

/// Memory in Mi, the unit the sizing rule uses: "2000Mi" (rounded up to 0.01Mi).
pub fn memory(nanos: i128) -> String {
    format!("{}Mi", decimal(nanos, NANOS * 1_048_576, 2))
}

/// A plain-text table of the needs, for the `quota` command.
pub fn table(per_set: &[SetNeed], total: &Need) -> String {
    let mut out = String::new();
    let row = |out: &mut String, name: &str, images: &str, nodes: &str, n: &Need| {
        let _ = writeln!(
            out,
            "{name:<24} {images:>6} {nodes:>6} {:>12} {:>12} {:>14} {:>14}",
            cpu(n.cpu_request),
            cpu(n.cpu_limit),
            memory(n.memory_request),
            memory(n.memory_limit)
        );
    };
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>6} {:>12} {:>12} {:>14} {:>14}",
        "SET", "IMAGES", "NODES", "CPU REQUEST", "CPU LIMIT", "MEMORY REQUEST", "MEMORY LIMIT"
    );
    for s in per_set {
        row(&mut out, &s.set, &s.images.to_string(), &s.nodes.to_string(), &s.need);
    }
    row(&mut out, "TOTAL", "", "", total);
    out
}

/// A set whose cache pods something in the namespace will refuse: a ResourceQuota without room for it, or
/// a LimitRange bound its containers break.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Shortfall {
    pub set: String,
    /// The quota key ("limits.memory", "pods") or the LimitRange bound ("memory limit per container").
    pub resource: String,
    /// What the set needs, e.g. "200Mi".
    pub needed: String,
    /// How the need is made up, e.g. "5 images × 2 nodes × 20Mi".
    pub breakdown: String,
    /// What is free for it: "20Mi" (quota: hard − used by others − the sets before it in config order),
    /// "at most 32Mi" (LimitRange).
    pub available: String,
    /// "ResourceQuota/<name>" or "LimitRange/<name>".
    pub source: String,
    /// The same two figures in base units (bytes, cores, count), for the metrics.
    #[serde(skip)]
    pub needed_value: f64,
    #[serde(skip)]
    pub available_value: f64,
}

/// `ResourceQuota/tight` → `ResourceQuota "tight"`.
fn quoted(source: &str) -> String {
    match source.split_once('/') {
        Some((kind, name)) => format!("{kind} {name:?}"),
        None => source.to_owned(),
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A quota has an amount free; a LimitRange bound allows at most (or at least) a value.
        let (verb, available) = if self.source.starts_with("ResourceQuota/") {
            ("needs", format!("has {} free", self.available))
        } else {
            ("asks", format!("allows {}", self.available))
        };
        write!(
            f,
            "set {:?} {verb} {} {} ({}); {} {available}",
            self.set,
            self.resource,
            self.needed,
            self.breakdown,
            quoted(&self.source),
        )
    }
}

/// All sets together against one quota key, kept beside the per-set shortfalls.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaTotal {
    pub resource: String,
    pub needed: String,
    pub hard: String,
    /// `used` minus the pods of ours it already counts.
    pub used_by_others: String,
    pub free: String,
    pub source: String,
}

impl std::fmt::Display for QuotaTotal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the sets together need {} {}; {} allows {}, {} used by others, {} free",
            self.resource,
            self.needed,
            quoted(&self.source),
            self.hard,
            self.used_by_others,
            self.free
        )
    }
}

/// What the namespace's quotas and limits say about the sets.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QuotaCheck {
    /// Per set, in config order within each quota or LimitRange.
    pub shortfalls: Vec<Shortfall>,
    /// Totals of the quota keys some set does not fit in.
    pub totals: Vec<QuotaTotal>,
}

fn format_for(resource: &str, nanos: i128) -> String {
    if resource.ends_with("memory") {
        memory(nanos)
    } else if resource.ends_with("cpu") {
        cpu(nanos)
    } else {
        decimal(nanos, NANOS, 0)
    }
}

fn base_units(nanos: i128) -> f64 {
    nanos as f64 / NANOS as f64
}

/// The part of one container's need that a quota key counts; `pods` counts the pod, not the containers.
fn quota_value(container: &Need, key: &str) -> Option<i128> {
    match key {
        "limits.memory" => Some(container.memory_limit),
        "limits.cpu" => Some(container.cpu_limit),
        "requests.memory" | "memory" => Some(container.memory_request),
        "requests.cpu" | "cpu" => Some(container.cpu_request),
        _ => None,
    }
}

fn is_pod_count(key: &str) -> bool {
    key == "pods" || key == "count/pods"
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn api_quantity(source: &str, key: &str, q: &Quantity) -> Result<i128, QuotaError> {
    quantity_nanos(&q.0).map_err(|message| QuotaError::ApiQuantity {
        object: source.to_owned(),
        key: key.to_owned(),
        value: q.0.clone(),
        message,
    })
}

/// Each set's need against each ResourceQuota, attributed per set in config order: the sets before it take
/// their share of what is free first, the set that no longer fits is named with its need and what is left.
/// What is free is hard − used, where the pods of ours already running (`running_of[i]` nodes per set) are
/// taken out of `used`, so the pods a change replaces are not counted twice. `nodes_of[i]` is the number
/// of nodes set i runs (or will run) on.
pub fn quota_shortfalls(
    config: &Config,
    nodes_of: &[u64],
    running_of: &[u64],
    quotas: &[ResourceQuota],
) -> Result<QuotaCheck, QuotaError> {
    let mut out = QuotaCheck::default();
    let containers: Vec<Need> = config.sets.iter().map(per_container).collect::<Result<_, _>>()?;
    for q in quotas {
        let source = format!("ResourceQuota/{}", q.metadata.name.as_deref().unwrap_or_default());
        let empty = BTreeMap::new();
        let hard = q.spec.as_ref().and_then(|s| s.hard.as_ref()).unwrap_or(&empty);
        let used = q.status.as_ref().and_then(|s| s.used.as_ref()).unwrap_or(&empty);
        for (key, limit) in hard {
            // Per set: (per-pod value, nodes now, nodes wanted, per-container value); None when not counted.
            let mut per_set = Vec::with_capacity(config.sets.len());
            for (i, (set, c)) in config.sets.iter().zip(&containers).enumerate() {
                let per_container = if is_pod_count(key) {
                    Some(NANOS)
                } else {
                    quota_value(c, key)
                };
                let Some(per_container) = per_container else {
                    per_set.push(None);
                    continue;
                };
                let images = if is_pod_count(key) { 1 } else { set.images.len() as i128 };
                let per_pod = per_container
                    .checked_mul(images)
                    .ok_or_else(|| overflow(&set.name, key))?;
                let nodes = nodes_of.get(i).copied().unwrap_or(0);
                let running = running_of.get(i).copied().unwrap_or(0);
                per_set.push(Some((per_pod, per_container, nodes, running)));
            }
            if per_set.iter().all(Option::is_none) {
                continue;
            }
            let hard = api_quantity(&source, key, limit)?;
            let used = used
                .get(key)
                .map(|u| api_quantity(&source, key, u))
                .transpose()?
                .unwrap_or(0);
            let (mut needed_total, mut ours_now) = (0i128, 0i128);
            let mut needs = Vec::with_capacity(per_set.len());
            for (set, entry) in config.sets.iter().zip(&per_set) {
                let Some((per_pod, _, nodes, running)) = *entry else {
                    needs.push(None);
                    continue;
                };
                let need = per_pod
                    .checked_mul(i128::from(nodes))
                    .ok_or_else(|| overflow(&set.name, key))?;
                let now = per_pod
                    .checked_mul(i128::from(running))
                    .ok_or_else(|| overflow(&set.name, key))?;
                needed_total = needed_total.checked_add(need).ok_or_else(|| overflow(&set.name, key))?;
                ours_now = ours_now.checked_add(now).ok_or_else(|| overflow(&set.name, key))?;
                needs.push(Some(need));
            }
            let by_others = used.checked_sub(ours_now).ok_or_else(|| overflow("", key))?.max(0);
            let free = hard.checked_sub(by_others).ok_or_else(|| overflow("", key))?.max(0);
            if needed_total <= free {
                continue;
            }
            let mut left = free;
            for ((set, entry), need) in config.sets.iter().zip(&per_set).zip(&needs) {
                let (Some((_, per_container, nodes, _)), Some(need)) = (*entry, *need) else {
                    continue;
                };
                if need <= left {
                    left -= need;
                    continue;
                }
                // Its pods will be refused, so it takes nothing from the sets after it.
                let breakdown = if is_pod_count(key) {
                    format!("1 pod × {}", plural(nodes, "node"))
                } else {
                    format!(
                        "{} × {} × {}",
                        plural(set.images.len() as u64, "image"),
                        plural(nodes, "node"),
                        format_for(key, per_container)
                    )
                };
                out.shortfalls.push(Shortfall {
                    set: set.name.clone(),
                    resource: key.clone(),
                    needed: format_for(key, need),
                    breakdown,
                    available: format_for(key, left),
                    source: source.clone(),
                    needed_value: base_units(need),
                    available_value: base_units(left),
                });
            }
            out.totals.push(QuotaTotal {
                resource: key.clone(),
                needed: format_for(key, needed_total),
                hard: format_for(key, hard),
                used_by_others: format_for(key, by_others),
                free: format_for(key, free),
                source: source.clone(),
            });
        }
    }
    Ok(out)
}

/// LimitRange bounds (per container and per pod) that the sets' containers break: such pods are refused.
pub fn limit_range_violations(config: &Config, ranges: &[LimitRange]) -> Result<Vec<Shortfall>, QuotaError> {
    let mut out = Vec::new();
    for range in ranges {
        let source = format!("LimitRange/{}", range.metadata.name.as_deref().unwrap_or_default());
        for item in range.spec.as_ref().map(|s| s.limits.as_slice()).unwrap_or_default() {
            let per = item.type_.to_lowercase();
            let bound = |m: &Option<BTreeMap<String, Quantity>>, r: &str| {
                m.as_ref()
                    .and_then(|m| m.get(r))
                    .map(|q| api_quantity(&source, r, q))
                    .transpose()
            };
            for set in &config.sets {
                let one = per_container(set)?;
                let images = set.images.len() as u64;
                let pod = item.type_ == "Pod";
                let scope = match item.type_.as_str() {
                    "Container" => one,
                    "Pod" => one.checked_mul(images.into(), &set.name)?,
                    _ => continue,
                };
                for (res, limit, request, one_limit, one_request) in [
                    (
                        "cpu",
                        scope.cpu_limit,
                        scope.cpu_request,
                        one.cpu_limit,
                        one.cpu_request,
                    ),
                    (
                        "memory",
                        scope.memory_limit,
                        scope.memory_request,
                        one.memory_limit,
                        one.memory_request,
                    ),
                ] {
                    let explain = |per_one: i128| {
                        if pod {
                            format!("{} × {}", plural(images, "image"), format_for(res, per_one))
                        } else {
                            format!("each container {}", format_for(res, per_one))
                        }
                    };
                    // The bound broken, what the set has there, and how it is made up.
                    let broken = [
                        bound(&item.max, res)?
                            .filter(|max| limit > *max)
                            .map(|max| ("limit", limit, one_limit, "at most", max)),
                        bound(&item.min, res)?
                            .filter(|min| request < *min)
                            .map(|min| ("request", request, one_request, "at least", min)),
                    ];
                    for (kind, value, per_one, relation, edge) in broken.into_iter().flatten() {
                        out.push(Shortfall {
                            set: set.name.clone(),
                            resource: format!("{res} {kind} per {per}"),
                            needed: format_for(res, value),
                            breakdown: explain(per_one),
                            available: format!("{relation} {}", format_for(res, edge)),
                            source: source.clone(),
                            needed_value: base_units(value),
                            available_value: base_units(edge),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::quantity_nanos as q;
    use crate::config::{Image, Resources};

    fn set(name: &str, images: usize, memory_limit: &str) -> ImageSet {
        ImageSet {
            name: name.into(),
            images: (0..images)
                .map(|i| Image {
                    name: format!("i{i}"),
                    reference: format!("r/i{i}:1"),
                })
                .collect(),
            resources: Resources {
                memory_limit: memory_limit.into(),
                ..Resources::default()
            },
            ..ImageSet::default()
        }
    }

    fn config_of(sets: Vec<ImageSet>) -> Config {
        Config {
            namespace: "ns".into(),
            caching_interval_hours: 1,
            refresh_check_interval: crate::config::DEFAULT_REFRESH_CHECK_INTERVAL,
            warm_gate: None,
            kip_image: "k:1".into(),
            deployment_name: None,
            sets,
        }
    }

    fn quota(name: &str, hard: &[(&str, &str)], used: &[(&str, &str)]) -> ResourceQuota {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"hard": map(hard)},
            "status": {"used": map(used)},
        }))
        .unwrap()
    }

    #[test]
    fn quota_shortfall_names_the_set_that_does_not_fit_with_its_numbers() {
        // The scenario: general (2 images) runs on 2 nodes; wide (5 images x 20Mi) is added.
        let c = config_of(vec![set("general", 2, "20Mi"), set("wide", 5, "20Mi")]);
        let tight = quota(
            "tight",
            &[("limits.memory", "100Mi"), ("pods", "10")],
            &[("limits.memory", "80Mi"), ("pods", "2")],
        );
        let found = quota_shortfalls(&c, &[2, 2], &[2, 0], &[tight]).unwrap();
        assert_eq!(found.shortfalls.len(), 1, "{found:?}");
        let wide = &found.shortfalls[0];
        assert_eq!(wide.set, "wide");
        assert_eq!(
            wide.to_string(),
            "set \"wide\" needs limits.memory 200Mi (5 images × 2 nodes × 20Mi); ResourceQuota \"tight\" has 20Mi free"
        );
        assert_eq!(wide.needed_value, 200.0 * 1_048_576.0);
        assert_eq!(wide.available_value, 20.0 * 1_048_576.0);
        assert_eq!(found.totals.len(), 1);
        assert_eq!(
            found.totals[0].to_string(),
            "the sets together need limits.memory 280Mi; ResourceQuota \"tight\" allows 100Mi, 0Mi used by others, 100Mi free"
        );
        let json = serde_json::to_value(&found).unwrap();
        assert_eq!(json["shortfalls"][0]["set"], "wide");
    }

    #[test]
    fn quota_counts_others_usage_and_pods_and_skips_what_fits() {
        let c = config_of(vec![set("general", 5, "20Mi")]);
        // 5 images x 20 nodes x 20Mi = 2000Mi; the quota has 1500Mi and others use 100Mi.
        let q1 = quota(
            "q",
            &[("limits.memory", "1500Mi"), ("pods", "10"), ("requests.storage", "1Gi")],
            &[("limits.memory", "100Mi")],
        );
        let found = quota_shortfalls(&c, &[20], &[0], &[q1]).unwrap();
        assert_eq!(found.shortfalls.len(), 2, "{found:?}");
        let mem = found.shortfalls.iter().find(|f| f.resource == "limits.memory").unwrap();
        assert_eq!((mem.needed.as_str(), mem.available.as_str()), ("2000Mi", "1400Mi"));
        let pods = found.shortfalls.iter().find(|f| f.resource == "pods").unwrap();
        assert_eq!((pods.needed.as_str(), pods.available.as_str()), ("20", "10"));
        assert_eq!(pods.breakdown, "1 pod × 20 nodes");
        // Enough room: nothing reported; our own running pods are not counted twice.
        let q2 = quota("q", &[("limits.memory", "2100Mi")], &[("limits.memory", "2100Mi")]);
        assert_eq!(
            quota_shortfalls(&c, &[20], &[20], &[q2]).unwrap(),
            QuotaCheck::default()
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_saturated_figure() {
        let mut huge = set("huge", 3, "20Mi");
        huge.resources.memory_limit = "4Ei".into();
        let err = set_need(&huge, u64::MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "set huge: memory request x 3 image(s) x {} node(s) is too large to compute",
                u64::MAX
            )
        );
        let c = config_of(vec![huge]);
        let q = quota("q", &[("limits.memory", "1Gi")], &[]);
        assert!(matches!(
            quota_shortfalls(&c, &[u64::MAX], &[0], &[q]),
            Err(QuotaError::Overflow { .. })
        ));
    }

    #[test]
    fn bad_quantity_is_an_error_naming_the_field() {
        let mut bad = set("bad", 1, "20Mi");
        bad.resources.cpu_limit = "lots".into();
        let err = set_need(&bad, 1).unwrap_err().to_string();
        assert!(err.contains("cpu_limit") && err.contains("\"lots\""), "{err}");
    }

    #[test]
    fn limit_range_bounds_are_checked() {
        let c = config_of(vec![set("gpu", 3, "50Mi")]);
        let lr: LimitRange = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "lr"},
            "spec": {"limits": [
                {"type": "Container", "max": {"memory": "32Mi"}, "min": {"cpu": "100m"}},
                {"type": "Pod", "max": {"memory": "100Mi"}}
            ]}
        }))
        .unwrap();
        let found = limit_range_violations(&c, &[lr]).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        let container = found
            .iter()
            .find(|f| f.resource == "memory limit per container")
            .unwrap();
        assert_eq!(
            container.to_string(),
            "set \"gpu\" asks memory limit per container 50Mi (each container 50Mi); LimitRange \"lr\" allows at most 32Mi"
        );
        assert!(
            found
                .iter()
                .any(|f| f.resource == "cpu request per container" && f.needed == "0.05")
        );
        assert!(
            found.iter().any(|f| f.resource == "memory limit per pod"
                && f.needed == "150Mi"
                && f.breakdown == "3 images × 50Mi")
        );
    }

    #[test]
    fn five_images_on_twenty_nodes_at_20mi_need_2000mi() {
        let need = set_need(&set("general", 5, "20Mi"), 20).unwrap();
        assert_eq!(need.need.memory_limit, q("2000Mi").unwrap());
        assert_eq!(need.need.memory_request, q("1000Mi").unwrap());
        assert_eq!(need.need.cpu_limit, q("20").unwrap());
        assert_eq!(need.need.cpu_request, q("5").unwrap());
    }

    #[test]
    fn total_adds_sets() {
        let config = config_of(vec![set("a", 2, "20Mi"), set("b", 1, "50Mi")]);
        let (per_set, total) = needs(&config, |s| if s.name == "a" { 10 } else { 3 }).unwrap();
        assert_eq!(per_set[0].need.memory_limit, q("400Mi").unwrap());
        assert_eq!(total.memory_limit, q("550Mi").unwrap());
        let text = table(&per_set, &total);
        assert!(text.lines().count() == 4, "{text}");
        assert!(text.contains("TOTAL"), "{text}");
        assert!(text.lines().last().unwrap().contains("550Mi"), "{text}");
        assert_eq!(memory(q("1Gi").unwrap()), "1024Mi");
        assert_eq!(cpu(q("50m").unwrap()), "0.05");
        assert_eq!(cpu(q("16").unwrap()), "16");
    }
}
