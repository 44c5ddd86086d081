//! What a namespace's ResourceQuota must allow: per set (limit or request) × images × nodes. Pure.
//!
//! The sleeper's init container asks for no more than one cache container, and a pod's effective request is
//! the larger of its init containers and the sum of its containers, so the rule is exact.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::quantity_nanos as q;
    use crate::config::{Image, Refresh, Resources};

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
