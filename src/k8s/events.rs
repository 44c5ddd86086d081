//! The events.k8s.io/v1 writer: valid, aggregated Events about DaemonSets, the config and other objects.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

use super::{FIELD_MANAGER, is_not_found};
use crate::rbac::Access;

/// Most API Events one puller keeps track of (for aggregation); older entries are forgotten first.
const EVENTS_KEPT: usize = 512;
/// The same Event (object, reason, note) is written at most once per this period, as kubelet's correlator
/// does: a repeat after it bumps the Event's series count instead of adding a new Event.
pub const EVENT_REPEAT_AFTER: Duration = Duration::from_secs(600);
/// A refused Event is logged at once, further refusals at most once per this period (with a count).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// API limits of events.k8s.io/v1, in bytes: `note`; `reportingInstance`, `reason` and `action`.
pub const NOTE_MAX: usize = 1024;
pub const FIELD_MAX: usize = 128;

#[derive(Debug)]
struct Posted {
    name: String,
    namespace: String,
    /// Occurrences so far, the written ones and those held back.
    count: i32,
    written: std::time::Instant,
}

#[derive(Debug, Default)]
struct EventLog {
    posted: std::collections::HashMap<String, Posted>,
    refusal_logged: Option<std::time::Instant>,
    refusals_unlogged: u32,
}

/// Publishes events.k8s.io/v1 Events the API server accepts (every required field set, lengths within the
/// limits), aggregated: the same note on the same object is written once per [`EVENT_REPEAT_AFTER`], then as
/// a series. Set-level Events go on the set's DaemonSet; config-level ones on the puller's Deployment, else
/// its own pod, else nowhere (the log has them). A refusal is logged (rate-limited), never fatal.
#[derive(Clone)]
pub struct Events {
    client: Client,
    instance: String,
    repeat_after: Duration,
    own_pod: Option<ObjectReference>,
    owner: std::sync::Arc<std::sync::Mutex<Option<ObjectReference>>>,
    log: std::sync::Arc<std::sync::Mutex<EventLog>>,
    access: Arc<Access>,
}

/// `reportingInstance`: the pod name, else the host name, else the controller name; never empty.
pub fn reporting_instance(pod_name: Option<&str>) -> String {
    let host = || {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    };
    let name = pod_name
        .map(str::to_owned)
        .filter(|p| !p.is_empty())
        .or_else(host)
        .unwrap_or_else(|| FIELD_MANAGER.to_owned());
    truncate_bytes(name, FIELD_MAX)
}

/// The longest prefix of `text` within `max` bytes (the API counts bytes), cut on a character boundary.
fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let cut = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
    }
    text
}

/// The longest prefix of `note` within the API's limit.
pub fn truncate_note(note: String) -> String {
    truncate_bytes(note, NOTE_MAX)
}

/// A valid Event name (DNS subdomain, ≤ 253): the object's name, shortened, and the time in hex.
fn event_name(regarding: &ObjectReference, now: &jiff::Timestamp) -> String {
    let base: String = regarding
        .name
        .as_deref()
        .unwrap_or(FIELD_MANAGER)
        .chars()
        .take(200)
        .collect();
    format!("{}.{:x}", base.trim_end_matches(['.', '-']), now.as_nanosecond())
}

impl Events {
    pub fn new(client: Client, pod_name: Option<String>, pod_namespace: Option<String>) -> Self {
        let instance = reporting_instance(pod_name.as_deref());
        let own_pod = pod_name.zip(pod_namespace).map(|(name, namespace)| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace),
            ..ObjectReference::default()
        });
        Self {
            client,
            instance,
            repeat_after: EVENT_REPEAT_AFTER,
            own_pod,
            owner: Default::default(),
            log: Default::default(),
            access: Arc::new(Access::default()),
        }
    }

    /// Skips publishing while this identity may not create Events (announced once by [`Access`]).
    pub fn with_access(mut self, access: Arc<Access>) -> Self {
        self.access = access;
        self
    }

    /// Another aggregation period than [`EVENT_REPEAT_AFTER`] (tests).
    pub fn with_repeat_after(mut self, period: Duration) -> Self {
        self.repeat_after = period;
        self
    }

    /// The puller's own Deployment (from its owner reference), where config-level Events go.
    pub fn set_owner(&self, owner: Option<&OwnerReference>, namespace: &str) {
        let reference = owner.map(|o| ObjectReference {
            api_version: Some(o.api_version.clone()),
            kind: Some(o.kind.clone()),
            name: Some(o.name.clone()),
            uid: Some(o.uid.clone()),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        });
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = reference;
    }

    pub async fn on_daemonset(&self, ds: &DaemonSet, warning: bool, reason: &str, note: String) {
        self.publish(&ds.object_ref(&()), None, warning, reason, note).await;
    }

    /// Config-level Events: on the owner Deployment, else the own pod, else only in the log.
    pub async fn on_config(&self, warning: bool, reason: &str, note: String) {
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(target) = owner.or_else(|| self.own_pod.clone()) {
            self.publish(&target, None, warning, reason, note).await;
        }
    }

    /// Kept for callers of the first version: config-level Events.
    pub async fn on_self(&self, warning: bool, reason: &str, note: String) {
        self.on_config(warning, reason, note).await;
    }

    fn log(&self) -> std::sync::MutexGuard<'_, EventLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An Event about another object, such as the ConfigMap whose edit was rejected.
    pub async fn on_object(&self, regarding: &ObjectReference, warning: bool, reason: &str, note: String) {
        self.publish(regarding, None, warning, reason, note).await;
    }

    /// An Event about a node, recorded on the set's DaemonSet in `namespace` (the controller's own, where its
    /// Role grants Events), with the node named in the note. The API server refuses an Event about a
    /// cluster-scoped object outside the `default` namespace (seen on the real-cluster harness: "involvedObject
    /// namespace does not match event.namespace"), where this identity may not write.
    pub async fn on_node(&self, node: &str, set: &str, namespace: &str, warning: bool, reason: &str, note: String) {
        let regarding = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("DaemonSet".into()),
            name: Some(set.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectReference::default()
        };
        self.publish(
            &regarding,
            Some(namespace),
            warning,
            reason,
            format!("node {node}: {note}"),
        )
        .await;
    }

    async fn publish(
        &self,
        regarding: &ObjectReference,
        namespace: Option<&str>,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        if !self.access.allows("create", "events.k8s.io", "events") {
            return;
        }
        let note = truncate_note(note);
        let reason = truncate_bytes(reason.to_owned(), FIELD_MAX);
        let key = format!(
            "{}/{}/{}/{}\u{0}{reason}\u{0}{note}",
            regarding.kind.as_deref().unwrap_or_default(),
            regarding.namespace.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default(),
            regarding.uid.as_deref().unwrap_or_default(),
        );
        // Decide under the lock, write without it.
        let repeat = {
            let mut log = self.log();
            match log.posted.get_mut(&key) {
                Some(p) if p.written.elapsed() < self.repeat_after => {
                    p.count = p.count.saturating_add(1);
                    return;
                }
                Some(p) => {
                    p.count = p.count.saturating_add(1);
                    Some((p.name.clone(), p.namespace.clone(), p.count))
                }
                None => None,
            }
        };
        let namespace = namespace
            .map(str::to_owned)
            .or_else(|| regarding.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = jiff::Timestamp::now();
        let result = match &repeat {
            Some((name, _, count)) => {
                let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
                let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
                let call = api.patch(name, &params, &patch);
                match tokio::time::timeout(Duration::from_secs(10), call).await {
                    // Expired (Events live about an hour): write it anew.
                    Ok(Err(e)) if is_not_found(&e) => None,
                    Ok(other) => Some(other.map(|_| name.clone())),
                    Err(_) => {
                        tracing::warn!(reason, "recording an event timed out");
                        return;
                    }
                }
            }
            None => None,
        };
        let result = match result {
            Some(r) => r,
            None => {
                let event = k8s_openapi::api::events::v1::Event {
                    metadata: ObjectMeta {
                        name: Some(event_name(regarding, &now)),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    event_time: Some(MicroTime(now)),
                    type_: Some(if warning { "Warning" } else { "Normal" }.into()),
                    reason: Some(reason.clone()),
                    action: Some(reason.clone()),
                    note: Some(note),
                    regarding: Some(regarding.clone()),
                    reporting_controller: Some(FIELD_MANAGER.into()),
                    reporting_instance: Some(self.instance.clone()),
                    ..Default::default()
                };
                let params = PostParams::default();
                let create = api.create(&params, &event);
                match tokio::time::timeout(Duration::from_secs(10), create).await {
                    Ok(r) => r.map(|e| e.metadata.name.unwrap_or_default()),
                    Err(_) => {
                        tracing::warn!(reason, "recording an event timed out");
                        return;
                    }
                }
            }
        };
        let mut log = self.log();
        match result {
            Ok(name) => {
                if log.posted.len() >= EVENTS_KEPT {
                    let period = self.repeat_after;
                    log.posted.retain(|_, p| p.written.elapsed() < period);
                }
                let count = repeat.map_or(1, |(_, _, c)| c);
                log.posted.insert(
                    key,
                    Posted {
                        name,
                        namespace,
                        count,
                        written: std::time::Instant::now(),
                    },
                );
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                drop(log);
                // A create, or a patch of a repeat: either refusal turns Events off, announced once.
                let verb = if repeat.is_some() { "patch" } else { "create" };
                self.access.forbidden(verb, "events.k8s.io", "events");
            }
            Err(e) => {
                let due = log.refusal_logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY);
                if due {
                    let also = std::mem::take(&mut log.refusals_unlogged);
                    log.refusal_logged = Some(std::time::Instant::now());
                    drop(log);
                    tracing::warn!(error = %e, reason, refused_since_last_report = also, "the API refused an Event; it is only in this log");
                } else {
                    log.refusals_unlogged += 1;
                }
            }
        }
    }
}
