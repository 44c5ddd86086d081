//! What a namespace's ResourceQuota must allow: per set (limit or request) × images × nodes. Pure.
//!
//! The sleeper's init container asks for no more than one cache container, and a pod's effective request is
//! the larger of its init containers and the sum of its containers, so the rule is exact.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::{Config, ImageSet, rules::quantity_nanos};

/// Quantities in nano-units (1e-9 of a core or a byte), exact; sums saturate instead of overflowing.
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

impl Need {
    fn add(&mut self, other: &Need) {
        self.cpu_request = self.cpu_request.saturating_add(other.cpu_request);
        self.cpu_limit = self.cpu_limit.saturating_add(other.cpu_limit);
        self.memory_request = self.memory_request.saturating_add(other.memory_request);
        self.memory_limit = self.memory_limit.saturating_add(other.memory_limit);
    }
}

/// Per-container quantities of a set times images times nodes. Quantities were checked at load time.
pub fn set_need(set: &ImageSet, nodes: u64) -> SetNeed {
    let factor = (set.images.len() as i128).saturating_mul(i128::from(nodes));
    let times = |q: &str| quantity_nanos(q).unwrap_or_default().saturating_mul(factor);
    SetNeed {
        set: set.name.clone(),
        images: set.images.len(),
        nodes,
        need: Need {
            cpu_request: times(&set.resources.cpu_request),
            cpu_limit: times(&set.resources.cpu_limit),
            memory_request: times(&set.resources.memory_request),
            memory_limit: times(&set.resources.memory_limit),
        },
    }
}

/// Every set's need, with `nodes_of` giving the number of nodes each set runs on, and the total.
pub fn needs(config: &Config, nodes_of: impl Fn(&ImageSet) -> u64) -> (Vec<SetNeed>, Need) {
    let per_set: Vec<SetNeed> = config.sets.iter().map(|s| set_need(s, nodes_of(s))).collect();
    let mut total = Need::default();
    for s in &per_set {
        total.add(&s.need);
    }
    (per_set, total)
}

/// Largest need the table prints exactly: [`decimal`] scales by up to 10^3 before dividing.
const MAX_PRINTABLE_NANOS: i128 = i128::MAX / 1000;

/// A need too large to compute exactly (e.g. `quota --nodes 18446744073709551615`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuotaError {
    #[error("set {set}: {what} x {images} image(s) x {nodes} node(s) is too large to compute")]
    SetOverflow {
        set: String,
        what: &'static str,
        images: usize,
        nodes: u64,
    },
    #[error("the total {what} of all sets is too large to compute")]
    TotalOverflow { what: &'static str },
}

/// [`set_need`] with checked arithmetic: an error naming the set and the quantity instead of a saturated,
/// wrong number.
pub fn checked_set_need(set: &ImageSet, nodes: u64) -> Result<SetNeed, QuotaError> {
    let overflow = |what: &'static str| QuotaError::SetOverflow {
        set: set.name.clone(),
        what,
        images: set.images.len(),
        nodes,
    };
    let factor = i128::try_from(set.images.len())
        .ok()
        .and_then(|images| images.checked_mul(i128::from(nodes)));
    let times = |what: &'static str, q: &str| {
        factor
            .and_then(|f| quantity_nanos(q).unwrap_or_default().checked_mul(f))
            .filter(|n| *n <= MAX_PRINTABLE_NANOS)
            .ok_or_else(|| overflow(what))
    };
    Ok(SetNeed {
        set: set.name.clone(),
        images: set.images.len(),
        nodes,
        need: Need {
            cpu_request: times("cpu request", &set.resources.cpu_request)?,
            cpu_limit: times("cpu limit", &set.resources.cpu_limit)?,
            memory_request: times("memory request", &set.resources.memory_request)?,
            memory_limit: times("memory limit", &set.resources.memory_limit)?,
        },
    })
}

/// [`needs`] with checked arithmetic, for the `quota` command.
pub fn checked_needs(config: &Config, nodes_of: impl Fn(&ImageSet) -> u64) -> Result<(Vec<SetNeed>, Need), QuotaError> {
    let per_set = config
        .sets
        .iter()
        .map(|s| checked_set_need(s, nodes_of(s)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut total = Need::default();
    for s in &per_set {
        let sum = |what: &'static str, a: i128, b: i128| {
            a.checked_add(b)
                .filter(|n| *n <= MAX_PRINTABLE_NANOS)
                .ok_or(QuotaError::TotalOverflow { what })
        };
        total = Need {
            cpu_request: sum("cpu request", total.cpu_request, s.need.cpu_request)?,
            cpu_limit: sum("cpu limit", total.cpu_limit, s.need.cpu_limit)?,
            memory_request: sum("memory request", total.memory_request, s.need.memory_request)?,
            memory_limit: sum("memory limit", total.memory_limit, s.need.memory_limit)?,
        };
    }
    Ok((per_set, total))
}

const NANOS: i128 = 1_000_000_000;

/// `n / d` rounded up to `places` decimals, as a plain decimal string without trailing zeros.
fn decimal(n: i128, d: i128, places: u32) -> String {
    let scale = 10i128.pow(places);
    let scaled = n.saturating_mul(scale).div_euclid(d) + i128::from(n.saturating_mul(scale).rem_euclid(d) != 0);
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

/// Something in the namespace that will refuse some of the cache pods: a ResourceQuota without room, or a
/// LimitRange bound the containers break.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shortfall {
    /// The set concerned; None when the sets together exceed a quota.
    pub set: Option<String>,
    pub resource: String,
    pub needed: String,
    pub available: String,
    /// "ResourceQuota/<name>" or "LimitRange/<name>".
    pub source: String,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = self
            .set
            .as_deref()
            .map_or_else(|| "the sets together".to_owned(), |s| format!("set {s}"));
        write!(
            f,
            "{who} need {} {} but {} allows {}",
            self.resource, self.needed, self.source, self.available
        )
    }
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

/// The part of a pod's need that a quota key counts (`pods` counts 1 per pod).
fn quota_value(pod: &Need, key: &str) -> Option<i128> {
    match key {
        "limits.memory" => Some(pod.memory_limit),
        "limits.cpu" => Some(pod.cpu_limit),
        "requests.memory" | "memory" => Some(pod.memory_request),
        "requests.cpu" | "cpu" => Some(pod.cpu_request),
        "pods" => Some(NANOS),
        _ => None,
    }
}

/// The sets' total need against each ResourceQuota. The pods already running (`running_of[i]` nodes per
/// set) are part of the quota's `used` and are taken back out, so a resize is judged fairly.
pub fn quota_shortfalls(
    config: &Config,
    nodes_of: &[u64],
    running_of: &[u64],
    quotas: &[k8s_openapi::api::core::v1::ResourceQuota],
) -> Vec<Shortfall> {
    let mut out = Vec::new();
    for q in quotas {
        let hard = q.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
        let used = q.status.as_ref().and_then(|s| s.used.clone()).unwrap_or_default();
        for (key, limit) in &hard {
            let (mut needed, mut ours_now, mut counted) = (0i128, 0i128, false);
            for (i, set) in config.sets.iter().enumerate() {
                let Some(per_pod) = quota_value(&set_need(set, 1).need, key) else {
                    continue;
                };
                counted = true;
                let n = i128::from(nodes_of.get(i).copied().unwrap_or(0));
                let r = i128::from(running_of.get(i).copied().unwrap_or(0));
                needed = needed.saturating_add(per_pod.saturating_mul(n));
                ours_now = ours_now.saturating_add(per_pod.saturating_mul(r));
            }
            let Ok(hard) = quantity_nanos(&limit.0) else { continue };
            if !counted {
                continue;
            }
            let used = used.get(key).and_then(|u| quantity_nanos(&u.0).ok()).unwrap_or(0);
            let available = (hard - (used - ours_now).max(0)).max(0);
            if needed > available {
                out.push(Shortfall {
                    set: None,
                    resource: key.clone(),
                    needed: format_for(key, needed),
                    available: format_for(key, available),
                    source: format!("ResourceQuota/{}", q.metadata.name.clone().unwrap_or_default()),
                });
            }
        }
    }
    out
}

/// LimitRange bounds (per container and per pod) that the sets' containers break: such pods are refused.
pub fn limit_range_violations(config: &Config, ranges: &[k8s_openapi::api::core::v1::LimitRange]) -> Vec<Shortfall> {
    let mut out = Vec::new();
    for range in ranges {
        let source = format!("LimitRange/{}", range.metadata.name.clone().unwrap_or_default());
        for item in range.spec.as_ref().map(|s| s.limits.as_slice()).unwrap_or_default() {
            let per = item.type_.to_lowercase();
            for set in &config.sets {
                let one = set_need(
                    &ImageSet {
                        images: set.images[..1.min(set.images.len())].to_vec(),
                        ..set.clone()
                    },
                    1,
                )
                .need;
                let pod = set_need(set, 1).need;
                let scope = match item.type_.as_str() {
                    "Container" => one,
                    "Pod" => pod,
                    _ => continue,
                };
                let bound = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
                             r: &str| {
                    m.as_ref()
                        .and_then(|m| m.get(r))
                        .and_then(|q| quantity_nanos(&q.0).ok())
                };
                for (res, limit, request) in [
                    ("cpu", scope.cpu_limit, scope.cpu_request),
                    ("memory", scope.memory_limit, scope.memory_request),
                ] {
                    if let Some(max) = bound(&item.max, res).filter(|max| limit > *max) {
                        out.push(Shortfall {
                            set: Some(set.name.clone()),
                            resource: format!("{res} limit per {per}"),
                            needed: format_for(res, limit),
                            available: format!("at most {}", format_for(res, max)),
                            source: source.clone(),
                        });
                    }
                    if let Some(min) = bound(&item.min, res).filter(|min| request < *min) {
                        out.push(Shortfall {
                            set: Some(set.name.clone()),
                            resource: format!("{res} request per {per}"),
                            needed: format_for(res, request),
                            available: format!("at least {}", format_for(res, min)),
                            source: source.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::quantity_nanos as q;
    use crate::config::{Image, Refresh, Resources};
    use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};

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
            node_selector: Default::default(),
            tolerations: vec![],
            affinity: None,
            image_pull_secrets: vec![],
            priority_class_name: None,
            annotations: Default::default(),
            refresh: Refresh::Interval,
        }
    }

    fn config_of(sets: Vec<ImageSet>) -> Config {
        Config {
            namespace: "ns".into(),
            caching_interval_hours: 1,
            kip_image: "k:1".into(),
            deployment_name: None,
            sets,
        }
    }

    fn quota(hard: &[(&str, &str)], used: &[(&str, &str)]) -> ResourceQuota {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "q"},
            "spec": {"hard": map(hard)},
            "status": {"used": map(used)},
        }))
        .unwrap()
    }

    #[test]
    fn quota_without_room_is_reported_with_numbers() {
        let c = config_of(vec![set("general", 5, "20Mi")]);
        // 5 images x 20 nodes x 20Mi = 2000Mi; the quota has 1500Mi and others use 100Mi.
        let q1 = quota(
            &[("limits.memory", "1500Mi"), ("pods", "10")],
            &[("limits.memory", "100Mi")],
        );
        let found = quota_shortfalls(&c, &[20], &[0], &[q1]);
        assert_eq!(found.len(), 2, "{found:?}");
        let mem = found.iter().find(|f| f.resource == "limits.memory").unwrap();
        assert_eq!((mem.needed.as_str(), mem.available.as_str()), ("2000Mi", "1400Mi"));
        assert!(mem.to_string().contains("ResourceQuota/q"), "{mem}");
        assert!(
            found
                .iter()
                .any(|f| f.resource == "pods" && f.needed == "20" && f.available == "10")
        );
        // Enough room: nothing reported; our own running pods are not counted twice.
        let q2 = quota(&[("limits.memory", "2100Mi")], &[("limits.memory", "2100Mi")]);
        assert!(quota_shortfalls(&c, &[20], &[20], &[q2]).is_empty());
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
        let found = limit_range_violations(&c, &[lr]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found
                .iter()
                .any(|f| f.resource == "memory limit per container" && f.needed == "50Mi")
        );
        assert!(
            found
                .iter()
                .any(|f| f.resource == "cpu request per container" && f.needed == "0.05")
        );
        assert!(
            found
                .iter()
                .any(|f| f.resource == "memory limit per pod" && f.needed == "150Mi")
        );
    }

    #[test]
    fn five_images_on_twenty_nodes_at_20mi_need_2000mi() {
        let need = set_need(&set("general", 5, "20Mi"), 20);
        assert_eq!(need.need.memory_limit, q("2000Mi").unwrap());
        assert_eq!(need.need.memory_request, q("1000Mi").unwrap());
        assert_eq!(need.need.cpu_limit, q("20").unwrap());
        assert_eq!(need.need.cpu_request, q("5").unwrap());
    }

    #[test]
    fn total_adds_sets() {
        let config = Config {
            namespace: "ns".into(),
            caching_interval_hours: 1,
            kip_image: "k:1".into(),
            deployment_name: None,
            sets: vec![set("a", 2, "20Mi"), set("b", 1, "50Mi")],
        };
        let (per_set, total) = needs(&config, |s| if s.name == "a" { 10 } else { 3 });
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
