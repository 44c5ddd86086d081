//! Pure warm gate: per node, which sets select it, what is still missing there, the node condition to write,
//! whether the startup taint goes, the time each set took to warm it; and the rate bound of node writes.
//!
//! The controller part (`controller/warm.rs`) reads the nodes and the sets' cache pods page by page into the
//! compact [`NodeRecord`] and [`CachePod`] forms, asks [`evaluate`] about each node, and writes what the
//! verdicts say within a [`WriteBudget`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Taint;

use crate::config::{ImageSet, WarmGate};
use crate::health::PodView;

/// The node condition type written on every node a set selects.
pub const CONDITION_TYPE: &str = "kubernetes-image-puller/ImagesCached";
/// Reason of the condition when every set selecting the node has its cache pod ready there.
pub const REASON_WARM: &str = "ImagesCached";
/// Reason of the condition while some set's images are missing on the node (its cache pods are there).
pub const REASON_COLD: &str = "ImagesMissing";
/// Reason of the condition while some set selecting the node has no cache pod there past [`NO_POD_GRACE`]
/// (refused by a quota or admission, say).
pub const REASON_NO_POD: &str = "CachePodMissing";
/// How long after a node turned Ready (or a set's DaemonSet appeared) a missing cache pod is not written
/// yet: the DaemonSet controller and the scheduler place one within seconds (about a minute for the last of
/// 500 nodes joining at once, on the harness), and a first "no cache pod yet" would spend a status write.
pub const NO_POD_GRACE: Duration = Duration::from_secs(120);
/// The longest condition message; the rest is counted ("and 3 more sets").
pub const MESSAGE_MAX: usize = 512;

/// Our condition as a node carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub status: bool,
    pub since: Option<Timestamp>,
    /// Its reason: a False condition is written again when the reason changes (no pod, then pulling).
    pub reason: String,
}

/// What a warm step keeps of a node: about a hundred bytes, whatever the node's labels and images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeRecord {
    pub name: String,
    /// Indices (config order) of the sets that select the node.
    pub sets: Vec<usize>,
    pub created: Option<Timestamp>,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Its Ready condition's lastTransitionTime.
    pub ready_since: Option<Timestamp>,
    /// Our condition on the node, if any.
    pub written: Option<Written>,
    /// The node's taints, kept only while it carries the gate's taint (the removal's test op needs them).
    pub gate_taints: Option<Vec<Taint>>,
}

/// Whether `set` selects a node with these labels and taints. The gate's own startup taint does not count:
/// the cache pods tolerate it (render adds the toleration).
pub fn selects(
    set: &ImageSet,
    name: &str,
    labels: &BTreeMap<String, String>,
    taints: &[Taint],
    gate_taint: Option<&str>,
) -> bool {
    let others: Vec<Taint> = taints
        .iter()
        .filter(|t| Some(t.key.as_str()) != gate_taint)
        .cloned()
        .collect();
    crate::scheduling::node_matches(set, name, labels, &others)
}

/// What a node shows of itself, borrowed from the page it was read in.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    pub created: Option<Timestamp>,
    /// Its Ready condition: True or not, and its last transition.
    pub ready: Option<(bool, Option<Timestamp>)>,
}

/// The compact record of a node, or None when no set selects it (it gets no condition).
pub fn record(node: NodeFacts<'_>, written: Option<Written>, sets: &[ImageSet], gate: &WarmGate) -> Option<NodeRecord> {
    let gate_taint = gate.taint.as_deref();
    let selecting: Vec<usize> = sets
        .iter()
        .enumerate()
        .filter(|(_, s)| selects(s, node.name, node.labels, node.taints, gate_taint))
        .map(|(i, _)| i)
        .collect();
    if selecting.is_empty() {
        return None;
    }
    let carries = gate_taint.is_some_and(|key| node.taints.iter().any(|t| t.key == key));
    Some(NodeRecord {
        name: node.name.to_owned(),
        sets: selecting,
        created: node.created,
        ready: node.ready.is_some_and(|(r, _)| r),
        ready_since: node.ready.and_then(|(_, t)| t),
        written,
        gate_taints: carries.then(|| node.taints.to_vec()),
    })
}

/// A set's cache pod on a node, as a warm step keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachePod {
    pub ready: bool,
    /// Its Ready condition's lastTransitionTime.
    pub ready_since: Option<Timestamp>,
    /// When it was scheduled (its PodScheduled transition): how long its images have been coming.
    pub since: Option<Timestamp>,
    /// Cache containers not ready, with the kubelet's waiting reason ("" while they start).
    pub missing: Vec<(String, String)>,
}

/// The waiting reason given to an image the set has and a running pod lacks (an older template: the
/// DaemonSet's rolling update replaces the pod).
pub const ROLLING_OUT: &str = "RollingOut";

/// The node and the compact form of a cache pod of a set with these `images` (None: not bound to a node, or
/// finished). A pod without a container for one of the images is not ready for the gate: it is of an older
/// template (an image was added) and the image is not on the node yet.
pub fn cache_pod_of(pod: &PodView, images: &[crate::config::Image]) -> Option<(String, CachePod)> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let condition = |kind: &str| status.conditions.iter().flatten().find(|c| c.type_ == kind);
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    let lacking: Vec<(String, String)> = if statuses.is_empty() {
        Vec::new()
    } else {
        images
            .iter()
            .filter(|i| !statuses.iter().any(|c| c.name == i.name))
            .map(|i| (i.name.clone(), ROLLING_OUT.to_owned()))
            .collect()
    };
    let ready = condition("Ready").is_some_and(|c| c.status == "True") && lacking.is_empty();
    let missing = if ready {
        Vec::new()
    } else {
        status
            .container_statuses
            .iter()
            .flatten()
            .filter(|c| !c.ready)
            .map(|c| {
                let reason = c
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.clone());
                (c.name.clone(), reason.unwrap_or_default())
            })
            .chain(lacking)
            .collect()
    };
    Some((
        node,
        CachePod {
            ready,
            ready_since: condition("Ready")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            since: condition("PodScheduled")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            missing,
        },
    ))
}

/// Where a set stands on a node.
#[derive(Debug, Clone, PartialEq)]
pub enum SetOnNode {
    Ready {
        since: Option<Timestamp>,
    },
    /// No cache pod on the node yet.
    NoPod,
    /// Its pod is there, these cache containers not ready yet (name, waiting reason), since then.
    Missing {
        images: Vec<(String, String)>,
        since: Option<Timestamp>,
    },
}

/// The condition to write on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub last_transition: Timestamp,
}

/// What happens to the node's startup taint.
#[derive(Debug, Clone, PartialEq)]
pub enum TaintAction {
    /// No gate taint configured, or the node does not carry it.
    Absent,
    /// Still cold: kept until the timeout at `until`.
    Keep { until: Timestamp },
    /// Removed: `current` is the node's taint list (the patch's test), `remaining` what it becomes.
    /// `timed_out`: the node is still cold (a Warning Event and a metric).
    Remove {
        timed_out: bool,
        current: Vec<Taint>,
        remaining: Vec<Taint>,
    },
}

/// The verdict about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub node: String,
    pub warm: bool,
    /// Per selecting set (config order): its name and where it stands.
    pub sets: Vec<(String, SetOnNode)>,
    /// The condition to write, only when its status differs from the node's (or the node has none).
    pub write: Option<Condition>,
    pub taint: TaintAction,
    /// When the node became cold for the gate: its Ready transition, else its creation.
    pub cold_since: Option<Timestamp>,
    /// Per set, seconds from the node's Ready transition to the set's cache pod Ready: observed once, with
    /// the write that turns the condition True after it was False (or, for a node without the condition,
    /// Ready within the timeout: a node that joined, not one met at the controller's start).
    pub warmed: Vec<(String, f64)>,
}

/// Decides about one node from its record, its cache pods (set index, pod) and the gate. `sets_since`: when
/// each set's DaemonSet was created, in config order (missing entries: long ago).
pub fn evaluate(
    node: &NodeRecord,
    set_names: &[&str],
    sets_since: &[Option<Timestamp>],
    pods: &[(usize, CachePod)],
    gate: &WarmGate,
    now: Timestamp,
) -> Verdict {
    let sets: Vec<(String, SetOnNode)> = node
        .sets
        .iter()
        .map(|&i| {
            let name = set_names.get(i).copied().unwrap_or_default().to_owned();
            let mine: Vec<&CachePod> = pods.iter().filter(|(s, _)| *s == i).map(|(_, p)| p).collect();
            // During a rolling update (surge) a node may hold two pods of the set: one ready suffices.
            let state = if let Some(ready) = mine.iter().find(|p| p.ready) {
                SetOnNode::Ready {
                    since: ready.ready_since,
                }
            } else if let Some(p) = mine.first() {
                SetOnNode::Missing {
                    images: p.missing.clone(),
                    since: p.since,
                }
            } else {
                SetOnNode::NoPod
            };
            (name, state)
        })
        .collect();
    let warm = sets.iter().all(|(_, s)| matches!(s, SetOnNode::Ready { .. }));
    let cold_since = node.ready_since.filter(|_| node.ready).or(node.created);
    let no_pod = |i: usize| matches!(sets[i].1, SetOnNode::NoPod);
    let reason = if warm {
        REASON_WARM
    } else if (0..sets.len()).any(no_pod) {
        REASON_NO_POD
    } else {
        REASON_COLD
    };
    // A set without a pod on a node that just joined, or a set that just appeared: its pod is on the way.
    let pod_on_the_way = (0..sets.len()).any(|k| {
        let since = sets_since.get(node.sets[k]).copied().flatten();
        let from = match (cold_since, since) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        no_pod(k) && from.is_some_and(|t| now < add(t, NO_POD_GRACE))
    });
    let write = match &node.written {
        Some(w) if w.status == warm && (warm || w.reason == reason) => None,
        _ if !warm && pod_on_the_way => None,
        Some(w) => Some(Condition {
            status: warm,
            reason,
            message: message(&sets, now),
            // The same status with another reason keeps its transition time.
            last_transition: if w.status == warm { w.since.unwrap_or(now) } else { now },
        }),
        None => Some(Condition {
            status: warm,
            reason,
            message: message(&sets, now),
            last_transition: now,
        }),
    };
    let taint = match (&node.gate_taints, gate.taint.as_deref()) {
        (Some(current), Some(key)) => {
            let until = cold_since.map_or(now, |t| add(t, gate.timeout));
            if warm || now >= until {
                TaintAction::Remove {
                    timed_out: !warm,
                    current: current.clone(),
                    remaining: current.iter().filter(|t| t.key != key).cloned().collect(),
                }
            } else {
                TaintAction::Keep { until }
            }
        }
        _ => TaintAction::Absent,
    };
    let joined = match &node.written {
        Some(w) => !w.status,
        None => node.ready_since.is_some_and(|t| now < add(t, gate.timeout)),
    };
    let warmed = if warm && write.is_some() && joined {
        sets.iter()
            .filter_map(|(name, s)| match (s, node.ready_since) {
                (SetOnNode::Ready { since: Some(at) }, Some(from)) => {
                    let seconds = at.duration_since(from).as_secs_f64().max(0.0);
                    Some((name.clone(), seconds))
                }
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    Verdict {
        node: node.name.clone(),
        warm,
        sets,
        write,
        taint,
        cold_since,
        warmed,
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// `gpu: cuda (pulling 41 s); general: ok`: each selecting set, what it still misses and for how long. At
/// most [`MESSAGE_MAX`] bytes.
pub fn message(sets: &[(String, SetOnNode)], now: Timestamp) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(sets.len());
    for (name, state) in sets {
        parts.push(match state {
            SetOnNode::Ready { .. } => format!("{name}: ok"),
            SetOnNode::NoPod => format!("{name}: no cache pod yet"),
            SetOnNode::Missing { images, since } => {
                let age = since.map(|t| format!(" {} s", now.duration_since(t).as_secs().max(0)));
                let age = age.unwrap_or_default();
                if images.is_empty() {
                    format!("{name}: starting{age}")
                } else {
                    let listed: Vec<String> = images
                        .iter()
                        .map(|(image, reason)| format!("{image} ({}{age})", doing(reason)))
                        .collect();
                    format!("{name}: {}", listed.join(", "))
                }
            }
        });
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        let sep = if out.is_empty() { "" } else { "; " };
        if out.len() + sep.len() + part.len() > MESSAGE_MAX - 24 {
            let _ = write!(out, "{sep}and {} more sets", parts.len() - i);
            break;
        }
        out.push_str(sep);
        out.push_str(part);
    }
    out
}

/// A waiting reason as the message reads it: the normal ones are "pulling", failures keep their name.
fn doing(reason: &str) -> &str {
    match reason {
        "" | "ContainerCreating" | "PodInitializing" => "pulling",
        ROLLING_OUT => "rolling out",
        other => other,
    }
}

/// Cold nodes listed by `status` (the rest are counted): compact on large clusters.
pub const COLD_LISTED: usize = 50;

/// The warm gate as `status` shows it: warm nodes counted, cold ones listed with since when and what is
/// missing.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WarmSummary {
    pub warm: usize,
    pub cold: Vec<ColdNode>,
    /// Cold nodes beyond those listed.
    pub more_cold: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColdNode {
    pub node: String,
    /// The node's Ready transition (else its creation), RFC 3339.
    pub since: Option<String>,
    /// What is missing, as the condition message words it now.
    pub missing: String,
}

/// Counts the warm nodes and lists the first [`COLD_LISTED`] cold ones.
pub fn summarize(verdicts: &[Verdict], now: Timestamp) -> WarmSummary {
    let mut out = WarmSummary::default();
    for v in verdicts {
        if v.warm {
            out.warm += 1;
        } else if out.cold.len() < COLD_LISTED {
            out.cold.push(ColdNode {
                node: v.node.clone(),
                since: v.cold_since.map(|t| t.to_string()),
                missing: message(&v.sets, now),
            });
        } else {
            out.more_cold += 1;
        }
    }
    out
}

/// `warm gate: 480 node(s) warm, 20 cold`, then one line per listed cold node.
impl std::fmt::Display for WarmSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cold = self.cold.len() + self.more_cold;
        write!(f, "warm gate: {} node(s) warm, {cold} cold", self.warm)?;
        for c in &self.cold {
            let since = c.since.as_deref().map(|s| format!(" since {s}")).unwrap_or_default();
            write!(f, "\ncold: {}{since}: {}", c.node, c.missing)?;
        }
        if self.more_cold > 0 {
            write!(f, "\ncold: and {} more node(s)", self.more_cold)?;
        }
        Ok(())
    }
}

/// A token bucket bounding node writes (condition and taint patches): `per_second` on average, at most
/// `burst` at once, so hundreds of nodes joining make a steady trickle, not a storm.
#[derive(Debug, Clone)]
pub struct WriteBudget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

/// Node writes per second and burst of the controller's budget.
pub const WRITES_PER_SECOND: u32 = 20;
pub const WRITE_BURST: u32 = 40;

impl Default for WriteBudget {
    fn default() -> Self {
        Self::new(WRITES_PER_SECOND, WRITE_BURST)
    }
}

impl WriteBudget {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second.max(1)),
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let earned = now.saturating_duration_since(last).as_secs_f64() * self.per_second;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.last = Some(now);
    }

    /// Takes one write if the budget allows it now.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next write is allowed.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        let short = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(short / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn set(name: &str, selector: &[(&str, &str)]) -> ImageSet {
        ImageSet {
            name: name.into(),
            node_selector: selector.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            ..ImageSet::default()
        }
    }

    fn gate(taint: Option<&str>) -> WarmGate {
        WarmGate {
            taint: taint.map(Into::into),
            timeout: Duration::from_secs(900),
        }
    }

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }
    }

    fn node(sets: Vec<usize>, written: Option<bool>, taints: Option<Vec<Taint>>) -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            sets,
            created: Some(t("2026-12-02T10:00:00Z")),
            ready: true,
            ready_since: Some(t("2026-12-02T10:01:00Z")),
            written: written.map(|status| Written {
                status,
                since: None,
                reason: if status { REASON_WARM } else { REASON_COLD }.into(),
            }),
            gate_taints: taints,
        }
    }

    fn ready(at: &str) -> CachePod {
        CachePod {
            ready: true,
            ready_since: Some(t(at)),
            ..CachePod::default()
        }
    }

    fn pulling(images: &[(&str, &str)]) -> CachePod {
        CachePod {
            since: Some(t("2026-12-02T10:01:05Z")),
            missing: images.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect(),
            ..CachePod::default()
        }
    }

    const NOW: &str = "2026-12-02T10:01:46Z";

    #[test]
    fn which_sets_select_a_node_ignores_the_gate_taint_only() {
        let sets = [set("gpu", &[("gpu", "true")]), set("general", &[])];
        let labels = BTreeMap::from([("gpu".to_owned(), "true".to_owned())]);
        let g = gate(Some("kip/cold"));
        fn facts<'a>(labels: &'a BTreeMap<String, String>, taints: &'a [Taint]) -> NodeFacts<'a> {
            NodeFacts {
                name: "n1",
                labels,
                taints,
                created: None,
                ready: None,
            }
        }
        let r = record(facts(&labels, &[taint("kip/cold")]), None, &sets, &g).unwrap();
        assert_eq!(r.sets, [0, 1], "the cold taint is tolerated by the cache pods");
        assert_eq!(r.gate_taints, Some(vec![taint("kip/cold")]));
        let none = BTreeMap::new();
        let r = record(facts(&none, &[]), None, &sets, &g).unwrap();
        assert_eq!(r.sets, [1]);
        assert_eq!(r.gate_taints, None, "no gate taint on the node: nothing to keep");
        assert!(
            record(facts(&labels, &[taint("dedicated")]), None, &sets, &g).is_none(),
            "another taint no set tolerates: no set selects the node, no condition"
        );
    }

    #[test]
    fn cold_node_gets_false_with_what_is_missing() {
        let v = evaluate(
            &node(vec![0, 1], None, None),
            &["gpu", "general"],
            &[],
            &[(0, pulling(&[("cuda", "")])), (1, ready("2026-12-02T10:01:30Z"))],
            &gate(None),
            t(NOW),
        );
        assert!(!v.warm);
        let c = v.write.expect("no condition yet: written");
        assert!(!c.status);
        assert_eq!(c.reason, REASON_COLD);
        assert_eq!(c.message, "gpu: cuda (pulling 41 s); general: ok");
        assert_eq!(c.last_transition, t(NOW));
        assert!(v.warmed.is_empty());
        assert_eq!(v.taint, TaintAction::Absent);
    }

    #[test]
    fn no_pod_yet_and_pull_failures_are_named() {
        // Ready for long: a set's missing pod is not on its way any more.
        let mut n = node(vec![0, 1], None, None);
        n.ready_since = Some(t("2026-12-02T09:00:00Z"));
        let v = evaluate(
            &n,
            &["gpu", "general"],
            &[],
            &[(1, pulling(&[("java", "ImagePullBackOff"), ("go", "ContainerCreating")]))],
            &gate(None),
            t(NOW),
        );
        assert_eq!(
            v.write.unwrap().message,
            "gpu: no cache pod yet; general: java (ImagePullBackOff 41 s), go (pulling 41 s)"
        );
    }

    #[test]
    fn a_missing_cache_pod_is_written_only_after_the_grace_then_the_pull_replaces_it() {
        // The node turned Ready 10 s ago, its pod not placed yet: nothing written (the pod is on the way).
        let mut n = node(vec![0], None, None);
        n.ready_since = Some(t("2026-12-02T10:01:36Z"));
        let v = evaluate(&n, &["gpu"], &[], &[], &gate(None), t(NOW));
        assert_eq!(v.write, None);
        assert!(!v.warm);
        // Its pod pulling: the first write names the images.
        let pods = [(0, pulling(&[("cuda", "")]))];
        let v = evaluate(&n, &["gpu"], &[], &pods, &gate(None), t(NOW));
        let c = v.write.unwrap();
        assert_eq!(
            (c.status, c.reason, c.message.as_str()),
            (false, REASON_COLD, "gpu: cuda (pulling 41 s)")
        );
        // Still no pod 2 min after Ready: written as such.
        let later = t("2026-12-02T10:03:37Z");
        let c = evaluate(&n, &["gpu"], &[], &[], &gate(None), later).write.unwrap();
        assert_eq!(
            (c.status, c.reason, c.message.as_str()),
            (false, REASON_NO_POD, "gpu: no cache pod yet")
        );
        // Then the pod comes: written again (another reason), keeping the False transition.
        n.written = Some(Written {
            status: false,
            since: Some(later),
            reason: REASON_NO_POD.into(),
        });
        let c = evaluate(&n, &["gpu"], &[], &pods, &gate(None), t("2026-12-02T10:04:00Z"))
            .write
            .unwrap();
        assert_eq!((c.status, c.reason, c.last_transition), (false, REASON_COLD, later));
    }

    #[test]
    fn a_new_set_on_an_old_node_waits_for_its_pod_too() {
        let n = node(vec![0, 1], Some(true), None);
        let pods = [(0, ready("2026-12-02T10:01:30Z"))];
        let created = [None, Some(t("2026-12-02T10:01:40Z"))];
        let v = evaluate(&n, &["gpu", "new"], &created, &pods, &gate(None), t(NOW));
        assert_eq!(v.write, None, "the new set's DaemonSet is 6 s old");
        let v = evaluate(
            &n,
            &["gpu", "new"],
            &created,
            &pods,
            &gate(None),
            t("2026-12-02T10:03:41Z"),
        );
        assert_eq!(v.write.map(|c| (c.status, c.reason)), Some((false, REASON_NO_POD)));
    }

    #[test]
    fn the_condition_is_written_only_when_its_status_changes() {
        let pods = [(0, pulling(&[("cuda", "")]))];
        let v = evaluate(
            &node(vec![0], Some(false), None),
            &["gpu"],
            &[],
            &pods,
            &gate(None),
            t(NOW),
        );
        assert_eq!(
            v.write, None,
            "still cold, already False: no write even though the message would differ"
        );
        let pods = [(0, ready("2026-12-02T10:01:40Z"))];
        let v = evaluate(
            &node(vec![0], Some(true), None),
            &["gpu"],
            &[],
            &pods,
            &gate(None),
            t(NOW),
        );
        assert_eq!(v.write, None);
        assert!(v.warmed.is_empty());
    }

    #[test]
    fn turning_warm_writes_true_and_observes_time_to_warm_once() {
        let pods = [(0, ready("2026-12-02T10:01:40Z")), (1, ready("2026-12-02T10:01:20Z"))];
        let v = evaluate(
            &node(vec![0, 1], Some(false), None),
            &["gpu", "general"],
            &[],
            &pods,
            &gate(None),
            t(NOW),
        );
        assert!(v.warm);
        let c = v.write.unwrap();
        assert!(c.status);
        assert_eq!(c.reason, REASON_WARM);
        assert_eq!(c.message, "gpu: ok; general: ok");
        assert_eq!(v.warmed, [("gpu".to_owned(), 40.0), ("general".to_owned(), 20.0)]);
    }

    #[test]
    fn a_surge_pod_does_not_make_a_node_cold() {
        let pods = [(0, pulling(&[("cuda", "")])), (0, ready("2026-12-02T10:01:40Z"))];
        let v = evaluate(
            &node(vec![0], Some(true), None),
            &["gpu"],
            &[],
            &pods,
            &gate(None),
            t(NOW),
        );
        assert!(v.warm);
        assert_eq!(v.write, None);
    }

    #[test]
    fn a_node_met_warm_long_after_it_joined_is_not_observed() {
        let mut n = node(vec![0], None, None);
        n.ready_since = Some(t("2026-11-01T00:00:00Z"));
        let v = evaluate(
            &n,
            &["gpu"],
            &[],
            &[(0, ready("2026-11-01T00:01:00Z"))],
            &gate(None),
            t(NOW),
        );
        assert!(v.write.unwrap().status, "written True at once: one write");
        assert!(v.warmed.is_empty(), "not a join: no time-to-warm");
        let mut n = node(vec![0], None, None);
        n.ready_since = Some(t("2026-12-02T10:01:00Z"));
        let v = evaluate(
            &n,
            &["gpu"],
            &[],
            &[(0, ready("2026-12-02T10:01:10Z"))],
            &gate(None),
            t(NOW),
        );
        assert_eq!(v.warmed, [("gpu".to_owned(), 10.0)], "joined within the timeout");
    }

    #[test]
    fn the_taint_goes_once_warm_and_only_the_gate_taint() {
        let taints = vec![taint("dedicated"), taint("kip/cold")];
        let v = evaluate(
            &node(vec![0], Some(false), Some(taints.clone())),
            &["gpu"],
            &[],
            &[(0, ready("2026-12-02T10:01:40Z"))],
            &gate(Some("kip/cold")),
            t(NOW),
        );
        assert_eq!(
            v.taint,
            TaintAction::Remove {
                timed_out: false,
                current: taints,
                remaining: vec![taint("dedicated")]
            }
        );
    }

    #[test]
    fn the_taint_stays_while_cold_until_the_timeout_then_goes_anyway() {
        let n = node(vec![0], Some(false), Some(vec![taint("kip/cold")]));
        let pods = [(0, pulling(&[("cuda", "ErrImagePull")]))];
        let g = gate(Some("kip/cold"));
        let v = evaluate(&n, &["gpu"], &[], &pods, &g, t(NOW));
        assert_eq!(
            v.taint,
            TaintAction::Keep {
                until: t("2026-12-02T10:16:00Z")
            },
            "15 min from the Ready transition"
        );
        let v = evaluate(&n, &["gpu"], &[], &pods, &g, t("2026-12-02T10:16:00Z"));
        assert_eq!(
            v.taint,
            TaintAction::Remove {
                timed_out: true,
                current: vec![taint("kip/cold")],
                remaining: vec![]
            }
        );
        assert!(!v.warm);
        // A node not Ready yet: counted from its creation.
        let mut n = n.clone();
        n.ready = false;
        let v = evaluate(&n, &["gpu"], &[], &pods, &g, t(NOW));
        assert_eq!(
            v.taint,
            TaintAction::Keep {
                until: t("2026-12-02T10:15:00Z")
            }
        );
    }

    #[test]
    fn the_summary_counts_warm_nodes_and_lists_cold_ones() {
        let pods = [(0, pulling(&[("cuda", "")]))];
        let cold = evaluate(&node(vec![0], None, None), &["gpu"], &[], &pods, &gate(None), t(NOW));
        let warm = evaluate(
            &node(vec![0], None, None),
            &["gpu"],
            &[],
            &[(0, ready("2026-12-02T10:01:40Z"))],
            &gate(None),
            t(NOW),
        );
        let mut verdicts = vec![warm.clone(), warm, cold.clone()];
        verdicts.extend(std::iter::repeat_n(cold, COLD_LISTED + 2));
        let s = summarize(&verdicts, t(NOW));
        assert_eq!((s.warm, s.cold.len(), s.more_cold), (2, COLD_LISTED, 3));
        let text = s.to_string();
        assert!(text.starts_with("warm gate: 2 node(s) warm, 53 cold\n"), "{text}");
        assert!(
            text.contains("cold: n1 since 2026-12-02T10:01:00Z: gpu: cuda (pulling 41 s)"),
            "{text}"
        );
        assert!(text.ends_with("cold: and 3 more node(s)"), "{text}");
    }

    #[test]
    fn the_message_is_bounded() {
        let sets: Vec<(String, SetOnNode)> = (0..100)
            .map(|i| (format!("set-number-{i}"), SetOnNode::NoPod))
            .collect();
        let m = message(&sets, t(NOW));
        assert!(m.len() <= MESSAGE_MAX, "{}", m.len());
        assert!(m.ends_with("more sets"), "{m}");
    }

    #[test]
    fn the_budget_bounds_writes_per_second() {
        let mut b = WriteBudget::new(10, 5);
        let t0 = Instant::now();
        let burst = (0..20).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 5, "the burst at once");
        assert!(b.wait(t0) > Duration::ZERO);
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(b.take(t0 + Duration::from_millis(110)), "one per 100 ms after that");
        // Over ten seconds: at most burst + rate x time.
        let mut b = WriteBudget::new(10, 5);
        let taken = (0..10_000).filter(|i| b.take(t0 + Duration::from_millis(*i))).count();
        assert!(taken <= 5 + 100, "{taken}");
        assert!(taken >= 100, "{taken}");
    }

    #[test]
    fn cache_pods_are_read_from_the_partial_pod() {
        let pod: PodView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-x"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-02T10:01:05Z"},
                    {"type": "Ready", "status": "False", "lastTransitionTime": "2026-12-02T10:01:05Z"}],
                "containerStatuses": [
                    {"name": "cuda", "image": "x", "ready": false, "state": {"waiting": {"reason": "ErrImagePull"}}},
                    {"name": "base", "image": "y", "ready": true, "state": {"running": {}}}]}
        }))
        .unwrap();
        let images = |names: &[&str]| -> Vec<crate::config::Image> {
            names
                .iter()
                .map(|n| crate::config::Image {
                    name: (*n).into(),
                    reference: format!("r/{n}:1"),
                })
                .collect()
        };
        let (node, p) = cache_pod_of(&pod, &images(&["base", "cuda"])).unwrap();
        assert_eq!(node, "n1");
        assert!(!p.ready);
        assert_eq!(p.since, Some(t("2026-12-02T10:01:05Z")));
        assert_eq!(p.missing, [("cuda".to_owned(), "ErrImagePull".to_owned())]);
    }

    #[test]
    fn a_ready_pod_of_an_older_template_is_not_warm_for_an_added_image() {
        let pod: PodView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpu-x"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-02T10:01:05Z"}],
                "containerStatuses": [{"name": "cuda", "image": "x", "ready": true, "state": {"running": {}}}]}
        }))
        .unwrap();
        let image = |n: &str| crate::config::Image {
            name: n.into(),
            reference: format!("r/{n}:1"),
        };
        let (_, p) = cache_pod_of(&pod, &[image("cuda")]).unwrap();
        assert!(p.ready);
        let (_, p) = cache_pod_of(&pod, &[image("cuda"), image("tools")]).unwrap();
        assert!(!p.ready, "the set gained an image this pod lacks");
        assert_eq!(p.missing, [("tools".to_owned(), ROLLING_OUT.to_owned())]);
        let sets = [(
            "gpu".to_owned(),
            SetOnNode::Missing {
                images: p.missing,
                since: None,
            },
        )];
        assert_eq!(message(&sets, t(NOW)), "gpu: tools (rolling out)");
    }
}
