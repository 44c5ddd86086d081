//! Pure health of each set from its DaemonSet, pods and Events: nodes ready and up to date, what fails where and why.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ContainerStateWaiting;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::ImageSet;
use crate::labels;

/// Container waiting reasons that mean an image is not (or cannot be) cached on that node.
pub const STUCK_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
];

/// Node names kept per failing image: enough to act on, bounded so memory does not grow with the cluster.
pub const NODES_KEPT: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct FailingImage {
    pub image: String,
    pub container: String,
    pub reason: String,
    /// The kubelet's message from one of the nodes (e.g. "manifest unknown", "unauthorized").
    pub message: String,
    pub node_count: usize,
    pub nodes: Vec<String>,
}

/// The one wording of a failing image, for the log summary, the `status` table and Events:
/// `quay.io/x:1 (c): ImagePullBackOff on 12 node(s): n1, n2 and 10 more: manifest unknown`. An entry
/// without an image (pods the API refused, see [`SetHealth::set_not_created`]) reads as such.
impl std::fmt::Display for FailingImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.image.is_empty() {
            return write!(
                f,
                "pods not created on {} node(s): {}: {}",
                self.node_count, self.reason, self.message
            );
        }
        write!(
            f,
            "{} ({}): {} on {} node(s): {}",
            self.image,
            self.container,
            self.reason,
            self.node_count,
            self.nodes.join(", ")
        )?;
        let more = self.node_count.saturating_sub(self.nodes.len());
        if more > 0 {
            write!(f, " and {more} more")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct SetHealth {
    pub set: String,
    pub present: bool,
    /// The live object carries the spec hash of the current config.
    pub up_to_date: bool,
    pub desired: i32,
    pub scheduled: i32,
    pub ready: i32,
    pub updated: i32,
    pub failing: Vec<FailingImage>,
    /// Nodes that should run the set's pod but have none (desiredNumberScheduled − currentNumberScheduled).
    pub nodes_without_pod: i32,
    /// Why those pods were not created, from the DaemonSet controller's latest FailedCreate or
    /// FailedPlacement Event since the DaemonSet last changed; None when there is no such Event.
    pub not_created: Option<NotCreated>,
}

/// Pods the DaemonSet controller could not create, and the API's reason.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct NotCreated {
    /// The Event's reason: FailedCreate or FailedPlacement.
    pub reason: String,
    /// A short class for alerts and the metric label: quota, pod_security, limit_range, webhook, forbidden,
    /// placement, other.
    pub cause: String,
    /// The API's message, e.g. `pods "wide-x" is forbidden: exceeded quota: tight, requested: ...`.
    pub message: String,
    /// Occurrences counted by the Event.
    pub count: i32,
}

/// `FailedCreate (quota): exceeded quota: ...`, as the log summary and the `status` table show it.
impl std::fmt::Display for NotCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.cause, self.message)
    }
}

/// Event reasons of the DaemonSet controller that mean a pod was not created.
pub const NOT_CREATED_REASONS: &[&str] = &["FailedCreate", "FailedPlacement"];

/// The class of a pod creation failure, from the API's message.
pub fn failure_cause(reason: &str, message: &str) -> &'static str {
    if reason == "FailedPlacement" {
        "placement"
    } else if message.contains("exceeded quota") {
        "quota"
    } else if message.contains("violates PodSecurity") {
        "pod_security"
    } else if message.contains("usage per Container")
        || message.contains("usage per Pod")
        || message.contains("limit to request ratio per")
        || message.contains("LimitRange")
    {
        "limit_range"
    } else if message.contains("admission webhook") {
        "webhook"
    } else if message.contains("forbidden") {
        "forbidden"
    } else {
        "other"
    }
}

/// Keeps the newest not-created Event of one DaemonSet over pages of core/v1 Events, ignoring those older
/// than `since` (the DaemonSet's last change: an old failure says nothing about the current spec).
#[derive(Debug)]
pub struct NotCreatedTally {
    since: Option<Timestamp>,
    newest: Option<(Timestamp, NotCreated)>,
}

impl NotCreatedTally {
    pub fn new(since: Option<Timestamp>) -> Self {
        Self { since, newest: None }
    }

    pub fn add_events(&mut self, events: &[k8s_openapi::api::core::v1::Event]) {
        for e in events {
            let reason = e.reason.as_deref().unwrap_or_default();
            if !NOT_CREATED_REASONS.contains(&reason) {
                continue;
            }
            // The newest of the times an Event carries (legacy recorders set lastTimestamp, newer ones
            // eventTime or a series).
            let at = [
                e.last_timestamp.as_ref().map(|t| t.0),
                e.series
                    .as_ref()
                    .and_then(|s| s.last_observed_time.as_ref())
                    .map(|t| t.0),
                e.event_time.as_ref().map(|t| t.0),
                e.first_timestamp.as_ref().map(|t| t.0),
                e.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ]
            .into_iter()
            .flatten()
            .max();
            let Some(at) = at else { continue };
            if self.since.is_some_and(|since| at < since) {
                continue;
            }
            if self.newest.as_ref().is_some_and(|(t, _)| *t > at) {
                continue;
            }
            let message = e.message.clone().unwrap_or_default();
            self.newest = Some((
                at,
                NotCreated {
                    reason: reason.to_owned(),
                    cause: failure_cause(reason, &message).to_owned(),
                    message,
                    count: e.count.or(e.series.as_ref().and_then(|s| s.count)).unwrap_or(1),
                },
            ));
        }
    }

    pub fn finish(self) -> Option<NotCreated> {
        self.newest.map(|(_, n)| n)
    }
}

/// The API's message without the generated pod name (`Error creating: pods "wide-x7k2p" is forbidden: ...`,
/// as the DaemonSet controller words it → the part after "is forbidden: "), so the same cause reads the same
/// on every attempt.
pub fn without_pod_name(message: &str) -> &str {
    match message.split_once(" is forbidden: ") {
        Some((head, rest)) if head.contains("pods \"") => rest,
        _ => message,
    }
}

/// When the DaemonSet last changed, as far as the object tells: the newest managedFields entry (kept in
/// fresh lists and write responses), else its creation.
pub fn last_change(ds: &DaemonSet) -> Option<Timestamp> {
    let managed = ds
        .metadata
        .managed_fields
        .iter()
        .flatten()
        // Status writes (the DaemonSet controller's own, every few seconds) are no change of the spec.
        .filter(|m| m.subresource.as_deref().is_none_or(str::is_empty))
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max();
    managed.or_else(|| ds.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The field selector of the Warning Events regarding one DaemonSet (the very object: uid included).
pub fn daemonset_events_selector(ds: &DaemonSet) -> String {
    let name = ds.metadata.name.as_deref().unwrap_or_default();
    let mut selector = format!("involvedObject.kind=DaemonSet,involvedObject.name={name},type=Warning");
    if let Some(uid) = &ds.metadata.uid {
        selector.push_str(",involvedObject.uid=");
        selector.push_str(uid);
    }
    selector
}

impl SetHealth {
    pub fn is_healthy(&self) -> bool {
        self.present
            && self.up_to_date
            && self.failing.is_empty()
            && self.not_created.is_none()
            && self.ready == self.desired
    }

    /// The one-line summary logged at each health check.
    pub fn summary(&self) -> String {
        if !self.present {
            return format!("set {}: DaemonSet missing", self.set);
        }
        let mut line = format!(
            "set {}: {}/{} nodes ready, {} up to date{}",
            self.set,
            self.ready,
            self.desired,
            self.updated,
            if self.up_to_date {
                ""
            } else {
                ", config not yet applied"
            }
        );
        if self.nodes_without_pod > 0 {
            line.push_str(&format!(
                "; {} node{} without a pod",
                self.nodes_without_pod,
                if self.nodes_without_pod == 1 { "" } else { "s" }
            ));
            if let Some(n) = &self.not_created {
                let _ = write!(line, ": {n}");
            }
        }
        for f in self.failing.iter().filter(|f| !f.image.is_empty()) {
            let _ = write!(line, "; {f}");
        }
        line
    }
}

/// Counts from the DaemonSet's status.
pub fn from_daemonset(set: &str, ds: Option<&DaemonSet>, desired_hash: Option<&str>) -> SetHealth {
    let Some(ds) = ds else {
        return SetHealth {
            set: set.into(),
            ..SetHealth::default()
        };
    };
    let status = ds.status.clone().unwrap_or_default();
    let live_hash = ds
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::SPEC_HASH))
        .map(String::as_str);
    SetHealth {
        set: set.into(),
        present: true,
        up_to_date: desired_hash.is_none() || live_hash == desired_hash,
        desired: status.desired_number_scheduled,
        scheduled: status.current_number_scheduled,
        ready: status.number_ready,
        updated: status.updated_number_scheduled.unwrap_or(0),
        failing: Vec::new(),
        nodes_without_pod: status
            .desired_number_scheduled
            .saturating_sub(status.current_number_scheduled)
            .max(0),
        not_created: None,
    }
}

impl SetHealth {
    /// Records why pods are missing: in `not_created`, and as an entry of `failing` (no image: the pod
    /// itself was refused), so every consumer of `failing` sees the set as failing.
    pub fn set_not_created(&mut self, not_created: Option<NotCreated>) {
        self.failing.retain(|f| !f.image.is_empty());
        if let Some(n) = &not_created {
            self.failing.push(FailingImage {
                image: String::new(),
                container: String::new(),
                reason: n.reason.clone(),
                message: n.message.clone(),
                node_count: usize::try_from(self.nodes_without_pod).unwrap_or(0),
                nodes: Vec::new(),
            });
        }
        self.not_created = not_created;
    }
}

/// Accumulates failing containers over pages of pods.
#[derive(Debug, Default)]
pub struct FailureTally {
    by_image: BTreeMap<(String, String), FailingImage>,
}

impl FailureTally {
    pub fn add_pods(&mut self, pods: &[PodView]) {
        for pod in pods {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "(unscheduled)".into());
            let Some(status) = &pod.status else { continue };
            let statuses = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            for cs in statuses {
                let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                    continue;
                };
                let reason = waiting.reason.clone().unwrap_or_default();
                if !STUCK_REASONS.contains(&reason.as_str()) {
                    continue;
                }
                let entry = self
                    .by_image
                    .entry((cs.image.clone(), reason.clone()))
                    .or_insert_with(|| FailingImage {
                        image: cs.image.clone(),
                        container: cs.name.clone(),
                        reason,
                        message: waiting.message.clone().unwrap_or_default(),
                        ..FailingImage::default()
                    });
                entry.node_count += 1;
                if entry.nodes.len() < NODES_KEPT {
                    entry.nodes.push(node.clone());
                }
            }
        }
    }

    pub fn finish(self) -> Vec<FailingImage> {
        self.by_image.into_values().collect()
    }
}

/// The fields of a Pod the failure tally reads: its node, and each container's image and waiting state.
/// The rest (a spec of up to 100 containers, managedFields, conditions) is skipped by serde without being
/// allocated, so a page of pods weighs a fraction of the full objects.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct PodView {
    #[serde(default, deserialize_with = "crate::k8s::name_and_labels")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpecView>,
    #[serde(default)]
    pub status: Option<PodStatusView>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusView {
    /// Pending, Running, Succeeded, Failed: pods in the last two no longer count against a quota.
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub init_container_statuses: Option<Vec<ContainerView>>,
    #[serde(default)]
    pub container_statuses: Option<Vec<ContainerView>>,
    /// Ready and PodScheduled, with their transition times: when a node's cache became warm (warm gate).
    #[serde(default)]
    pub conditions: Option<Vec<PodConditionView>>,
}

/// A pod condition: its type, status and last transition only.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodConditionView {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub last_transition_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct ContainerView {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// What the runtime started (`repo@sha256:…`): the node's digest of the image.
    #[serde(default, rename = "imageID")]
    pub image_id: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub state: Option<StateView>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct StateView {
    #[serde(default)]
    pub waiting: Option<ContainerStateWaiting>,
}

crate::k8s::pages::partial_view!(PodView, "Pod", "pods", k8s_openapi::NamespaceResourceScope);

/// The label selector of one set's pods.
pub fn pod_selector(set: &str) -> String {
    format!("{}={},{}={set}", labels::NAME, labels::CACHE_NAME, labels::SET)
}

/// Whether the set's pods should be restarted now so moving tags are pulled again: refresh is on, some
/// image is not pinned, the last restart (or creation) is at least `interval` ago, and the previous rollout
/// has finished (restarting a stuck rollout would only pile up restarts).
pub fn refresh_due(set: &ImageSet, ds: &DaemonSet, health: &SetHealth, now: Timestamp, interval_hours: u32) -> bool {
    if set.refresh != crate::config::Refresh::Interval || set.images.iter().all(|i| i.is_pinned()) {
        return false;
    }
    let rolled_out = health.present && health.updated == health.desired && health.ready == health.desired;
    if !rolled_out || !health.failing.is_empty() {
        return false;
    }
    let last = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(labels::RESTARTED_AT))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| ds.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let Some(last) = last else { return false };
    now.duration_since(last).as_secs() >= i64::from(interval_hours) * 3600
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodSpec, PodStatus};

    /// A pod as the API sends it, read back as the partial type the tally takes.
    fn pod(node: &str, image: &str, reason: &str) -> PodView {
        let full = full_pod(node, image, reason);
        serde_json::from_value(serde_json::to_value(full).unwrap()).unwrap()
    }

    fn full_pod(node: &str, image: &str, reason: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    image: image.into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some(format!("{image}: not found")),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn event(reason: &str, message: &str, at: &str) -> k8s_openapi::api::core::v1::Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e"}, "involvedObject": {"kind": "DaemonSet", "name": "wide"},
            "reason": reason, "message": message, "type": "Warning", "count": 3, "lastTimestamp": at,
        }))
        .unwrap()
    }

    #[test]
    fn newest_not_created_event_since_the_last_change_wins_and_is_classified() {
        let since: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let mut tally = NotCreatedTally::new(Some(since));
        tally.add_events(&[
            event("FailedCreate", "Error creating: old spec", "2026-01-01T09:59:59Z"),
            event(
                "FailedCreate",
                "Error creating: pods \"wide-a\" is forbidden: exceeded quota: tight, requested: limits.memory=100Mi",
                "2026-01-01T10:00:05Z",
            ),
            event("SuccessfulCreate", "Created pod: wide-b", "2026-01-01T10:00:09Z"),
        ]);
        tally.add_events(&[event(
            "FailedCreate",
            "Error creating: pods \"wide-c\" is forbidden: violates PodSecurity \"restricted:latest\": privileged",
            "2026-01-01T10:00:07Z",
        )]);
        let found = tally.finish().expect("an Event since the change");
        assert_eq!((found.cause.as_str(), found.count), ("pod_security", 3));
        assert_eq!(
            without_pod_name(&found.message),
            "violates PodSecurity \"restricted:latest\": privileged"
        );
        let mut old_only = NotCreatedTally::new(Some(since));
        old_only.add_events(&[event("FailedCreate", "Error creating: old", "2026-01-01T09:00:00Z")]);
        assert_eq!(old_only.finish(), None);
        for (message, cause) in [
            ("Error creating: pods \"x\" is forbidden: exceeded quota: q", "quota"),
            (
                "Error creating: pods \"x\" is forbidden: maximum memory usage per Container is 16Mi, but limit is 20Mi",
                "limit_range",
            ),
            (
                "Error creating: Internal error occurred: failed calling webhook: admission webhook \"x\" denied",
                "webhook",
            ),
            (
                "Error creating: pods \"x\" is forbidden: error looking up service account",
                "forbidden",
            ),
            ("Error creating: etcdserver: request timed out", "other"),
        ] {
            assert_eq!(failure_cause("FailedCreate", message), cause, "{message}");
        }
        assert_eq!(failure_cause("FailedPlacement", "failed to place pod"), "placement");
    }

    #[test]
    fn a_failing_image_reads_the_same_in_the_summary_and_the_table() {
        let failing = FailingImage {
            image: "quay.io/x/missing:1".into(),
            container: "c0".into(),
            reason: "ImagePullBackOff".into(),
            message: "manifest unknown".into(),
            node_count: 12,
            nodes: vec!["n1".into(), "n2".into()],
        };
        let text = "quay.io/x/missing:1 (c0): ImagePullBackOff on 12 node(s): n1, n2 and 10 more: manifest unknown";
        assert_eq!(failing.to_string(), text);
        let all_named = FailingImage {
            node_count: 2,
            ..failing.clone()
        };
        assert!(
            all_named
                .to_string()
                .ends_with("on 2 node(s): n1, n2: manifest unknown")
        );
        let refused = NotCreated {
            reason: "FailedCreate".into(),
            cause: "quota".into(),
            message: "exceeded quota: tight".into(),
            count: 1,
        };
        assert_eq!(refused.to_string(), "FailedCreate (quota): exceeded quota: tight");
        let mut h = SetHealth {
            set: "wide".into(),
            present: true,
            up_to_date: true,
            desired: 12,
            scheduled: 11,
            ready: 10,
            updated: 12,
            failing: vec![failing],
            nodes_without_pod: 1,
            not_created: None,
        };
        h.set_not_created(Some(refused));
        // The refused-pod entry in `failing` has its own wording and is left out of the image list.
        assert_eq!(
            h.failing[1].to_string(),
            "pods not created on 1 node(s): FailedCreate: exceeded quota: tight"
        );
        assert_eq!(
            h.summary(),
            format!(
                "set wide: 10/12 nodes ready, 12 up to date; 1 node without a pod: \
                 FailedCreate (quota): exceeded quota: tight; {text}"
            )
        );
    }

    #[test]
    fn tally_groups_by_image_and_bounds_nodes() {
        let mut tally = FailureTally::default();
        let pods: Vec<PodView> = (0..25)
            .map(|i| pod(&format!("node-{i}"), "quay.io/x/missing:1", "ImagePullBackOff"))
            .collect();
        tally.add_pods(&pods[..12]);
        tally.add_pods(&pods[12..]);
        tally.add_pods(&[pod("node-a", "quay.io/x/ok:1", "ContainerCreating")]);
        let failing = tally.finish();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].node_count, 25);
        assert_eq!(failing[0].nodes.len(), NODES_KEPT);
        assert_eq!(failing[0].reason, "ImagePullBackOff");
        assert!(failing[0].message.contains("not found"));
    }
}
