//! All Kubernetes I/O: DaemonSets (get, list, create, apply, replace, delete, delete-then-create,
//! restart), pods (paged list for health checks), the owner Deployment, OpenShift detection, what this
//! identity may do (SelfSubjectRulesReview), and Events. Nothing else talks to the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::core::v1::{ObjectReference, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::health::PodView;
use crate::labels;
use crate::rbac::Access;

/// Field manager of every apply; one owner for all the fields this tool sets.
pub const FIELD_MANAGER: &str = "kubernetes-image-puller";
/// Field manager of the periodic rolling restart, kept apart so applies never fight over it.
pub const REFRESH_MANAGER: &str = "kubernetes-image-puller-refresh";
/// Page size of pod lists: the controller never holds more than one page of pods. A cache pod of a
/// 100-image set is tens of KB of JSON, and the whole page is read before it is parsed: small pages
/// bound the peak (a health check runs hourly; 20 requests per 1,000 nodes cost nothing).
pub const POD_PAGE: u32 = 50;
/// Page size of node lists (counting a new set's nodes): a real Node carries its cached-images list and
/// managedFields, 10 to 30 KB of JSON, and the client holds a page about three times over (the body, its
/// copy as text, the parse) before the partial type drops all but labels and taints. 20 keeps that under
/// 1 MiB; the count runs after the writes, so its 50 requests per 1,000 nodes delay nothing.
pub const NODE_PAGE: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{verb} daemonset {name}: {source}")]
    DaemonSet {
        verb: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("list {what} in {namespace}: {source}")]
    List {
        what: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

impl KubeError {
    /// Whether the API server refused this identity the call (RBAC).
    pub fn is_forbidden(&self) -> bool {
        let (Self::DaemonSet { source, .. } | Self::List { source, .. }) = self;
        is_forbidden(source)
    }

    /// The RBAC verb and (group, resource) of the call that failed.
    pub fn rbac(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::DaemonSet { verb, .. } => {
                let verb = match *verb {
                    "apply" | "restart" => "patch",
                    "replace" => "update",
                    other => other,
                };
                (verb, "apps", "daemonsets")
            }
            Self::List { what, .. } => ("list", if *what == "daemonsets" { "apps" } else { "" }, what),
        }
    }

    /// A short label for metrics: the HTTP status class or the transport.
    pub fn kind(&self) -> &'static str {
        let source = match self {
            Self::DaemonSet { source, .. } | Self::List { source, .. } => source,
        };
        match source {
            kube::Error::Api(s) if s.code == 409 => "conflict",
            kube::Error::Api(s) if s.code == 403 || s.code == 401 => "forbidden",
            kube::Error::Api(s) if s.code == 404 => "not_found",
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => "invalid",
            kube::Error::Api(s) if s.code >= 500 => "server",
            kube::Error::Api(_) => "api",
            _ => "transport",
        }
    }
}

pub type Result<T, E = KubeError> = std::result::Result<T, E>;

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// What this identity may do in `namespace`: a SelfSubjectRulesReview, which every authenticated user may
/// create. Returns the rules and whether the server says the list may be incomplete.
pub async fn rules_review(
    client: &Client,
    namespace: &str,
) -> Result<(Vec<k8s_openapi::api::authorization::v1::ResourceRule>, bool), kube::Error> {
    let api: Api<SelfSubjectRulesReview> = Api::all(client.clone());
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.to_owned()),
        },
        ..SelfSubjectRulesReview::default()
    };
    let answer = api.create(&PostParams::default(), &review).await?;
    let status = answer.status.unwrap_or_default();
    // An evaluation error means some rules could not be read: treat the list as a lower bound.
    let incomplete = status.incomplete || status.evaluation_error.is_some_and(|e| !e.is_empty());
    Ok((status.resource_rules, incomplete))
}

/// The namespace the puller manages, reached through one client.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    daemonsets: Api<DaemonSet>,
    access: Arc<Access>,
}

impl Cluster {
    /// Without known permissions: every call is tried.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self::with_access(client, namespace, Arc::new(Access::default()))
    }

    pub fn with_access(client: Client, namespace: &str, access: Arc<Access>) -> Self {
        Self {
            daemonsets: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_owned(),
            access,
        }
    }

    /// What this identity may do here, shared with the controller.
    pub fn access(&self) -> &Arc<Access> {
        &self.access
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn daemonsets(&self) -> &Api<DaemonSet> {
        &self.daemonsets
    }

    pub async fn get(&self, name: &str) -> Result<Option<DaemonSet>> {
        self.daemonsets
            .get_opt(name)
            .await
            .map_err(|source| KubeError::DaemonSet {
                verb: "get",
                name: name.into(),
                source,
            })
    }

    /// The DaemonSets of one puller instance, found by label (never by name).
    pub async fn list_owned(&self, instance: &str) -> Result<Vec<DaemonSet>> {
        let params = ListParams::default().labels(&labels::owned_selector(instance));
        let list = self.daemonsets.list(&params).await.map_err(|source| KubeError::List {
            what: "daemonsets",
            namespace: self.namespace.clone(),
            source,
        })?;
        Ok(list.items)
    }

    /// Server-side apply with this tool's field manager, forcing ownership of the fields it sets.
    pub async fn apply(&self, ds: &DaemonSet) -> Result<DaemonSet> {
        let name = ds.name_any();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.daemonsets
            .patch(&name, &params, &Patch::Apply(ds))
            .await
            .map_err(|source| KubeError::DaemonSet {
                verb: "apply",
                name,
                source,
            })
    }

    /// Creates a new DaemonSet (the upstream verb, for identities without `patch`).
    pub async fn create(&self, ds: &DaemonSet) -> Result<DaemonSet> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.daemonsets
            .create(&params, ds)
            .await
            .map_err(|source| KubeError::DaemonSet {
                verb: "create",
                name: ds.name_any(),
                source,
            })
    }

    /// Deletes the very object seen (uid precondition), then creates the desired one: how a DaemonSet is
    /// changed with only the upstream verbs. Its pods restart on every node at once, as upstream's do.
    pub async fn recreate(&self, desired: &DaemonSet, live: &DaemonSet) -> Result<DaemonSet> {
        self.delete(&desired.name_any(), live.uid()).await?;
        let mut fresh = desired.clone();
        fresh.metadata.resource_version = None;
        fresh.metadata.uid = None;
        self.create(&fresh).await
    }

    /// Replaces the whole object: the repair for fields another manager added (an extra container) that an
    /// apply cannot remove. The resourceVersion makes it fail rather than overwrite a concurrent change.
    pub async fn replace(&self, desired: &DaemonSet, live: &DaemonSet) -> Result<DaemonSet> {
        let name = desired.name_any();
        let mut object = desired.clone();
        object.metadata.resource_version = live.metadata.resource_version.clone();
        // A replace drops what it does not name: keep the refresh annotation so the restart is not undone.
        if let Some(at) = restarted_at(live).filter(|_| restarted_at(desired).is_none()) {
            object
                .spec
                .as_mut()
                .map(|s| s.template.metadata.get_or_insert_default())
                .map(|m| {
                    m.annotations
                        .get_or_insert_default()
                        .insert(labels::RESTARTED_AT.into(), at)
                });
        }
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.daemonsets
            .replace(&name, &params, &object)
            .await
            .map_err(|source| KubeError::DaemonSet {
                verb: "replace",
                name,
                source,
            })
    }

    /// Deletes only the very object seen (uid precondition), so a same-named newcomer is never removed.
    /// Already gone counts as done.
    pub async fn delete(&self, name: &str, uid: Option<String>) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.daemonsets.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(KubeError::DaemonSet {
                verb: "delete",
                name: name.into(),
                source,
            }),
        }
    }

    /// What `kubectl rollout restart` does: a new pod-template annotation, rolled out by the DaemonSet.
    pub async fn restart(&self, name: &str, at: &str) -> Result<DaemonSet> {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {labels::RESTARTED_AT: at}}}}});
        let params = PatchParams {
            field_manager: Some(REFRESH_MANAGER.into()),
            ..PatchParams::default()
        };
        self.daemonsets
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|source| KubeError::DaemonSet {
                verb: "restart",
                name: name.into(),
                source,
            })
    }

    /// A rolling restart without `patch`: the desired object with a new restart annotation, replaced in place.
    pub async fn restart_by_replace(&self, desired: &DaemonSet, live: &DaemonSet, at: &str) -> Result<DaemonSet> {
        let mut object = desired.clone();
        if let Some(spec) = object.spec.as_mut() {
            let meta = spec.template.metadata.get_or_insert_default();
            meta.annotations
                .get_or_insert_default()
                .insert(labels::RESTARTED_AT.into(), at.into());
        }
        self.replace(&object, live).await.map_err(|e| match e {
            KubeError::DaemonSet { name, source, .. } => KubeError::DaemonSet {
                verb: "restart",
                name,
                source,
            },
            other => other,
        })
    }

    /// Visits the pods matching `selector` one page at a time, so memory does not grow with the cluster;
    /// only the fields the health tally reads are kept.
    pub async fn for_each_pod_page(&self, selector: &str, visit: impl FnMut(&[PodView])) -> Result<()> {
        let pods: Api<PodView> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(selector).limit(POD_PAGE);
        for_each_page(&pods, params, visit).await.map_err(|source| {
            if is_forbidden(&source) {
                self.access.forbidden("list", "", "pods");
            }
            KubeError::List {
                what: "pods",
                namespace: self.namespace.clone(),
                source,
            }
        })
    }

    /// Visits every node (cluster-wide `list nodes`) one small page at a time, keeping only labels and
    /// taints: memory stays flat in the number of nodes.
    pub async fn for_each_node_page(&self, visit: impl FnMut(&[NodeView])) -> Result<(), kube::Error> {
        let nodes: Api<NodeView> = Api::all(self.client.clone());
        for_each_page(&nodes, ListParams::default().limit(NODE_PAGE), visit).await
    }

    /// The owner reference to the puller's own Deployment, if it can be read. Without it the DaemonSets
    /// simply have no owner (they outlive an uninstall); that is logged, never fatal.
    pub async fn owner_reference(&self, deployment: &str) -> Result<Option<OwnerReference>, kube::Error> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(d) = api.get_opt(deployment).await? else {
            return Ok(None);
        };
        Ok(d.controller_owner_ref(&()).map(|mut r| {
            // Owned, not controlled: deleting the DaemonSet is ours to do, GC only acts on uninstall.
            r.controller = None;
            r.block_owner_deletion = None;
            r
        }))
    }
}

fn restarted_at(ds: &DaemonSet) -> Option<String> {
    ds.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(labels::RESTARTED_AT)
        .cloned()
}

/// OpenShift is recognised by its `route.openshift.io` API group, as upstream does.
pub async fn is_openshift(client: &Client) -> Result<bool, kube::Error> {
    Ok(client
        .list_api_groups()
        .await?
        .groups
        .iter()
        .any(|g| g.name == "route.openshift.io"))
}

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
        self.publish(&ds.object_ref(&()), warning, reason, note).await;
    }

    /// Config-level Events: on the owner Deployment, else the own pod, else only in the log.
    pub async fn on_config(&self, warning: bool, reason: &str, note: String) {
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(target) = owner.or_else(|| self.own_pod.clone()) {
            self.publish(&target, warning, reason, note).await;
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
        self.publish(regarding, warning, reason, note).await;
    }

    async fn publish(&self, regarding: &ObjectReference, warning: bool, reason: &str, note: String) {
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
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
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

/// What other controllers wrote about one object: core/v1 Events (the DaemonSet controller's recorder writes
/// these; they are visible through events.k8s.io too).
impl Cluster {
    /// Visits the core/v1 Events matching a field selector, one page at a time.
    pub async fn for_each_event_page(
        &self,
        field_selector: &str,
        visit: impl FnMut(&[k8s_openapi::api::core::v1::Event]),
    ) -> Result<()> {
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().fields(field_selector).limit(EVENT_PAGE);
        for_each_page(&events, params, visit)
            .await
            .map_err(|source| KubeError::List {
                what: "events",
                namespace: self.namespace.clone(),
                source,
            })
    }

    /// Every DaemonSet this tool manages in the namespace, whatever instance made it (for `status`).
    pub async fn list_managed(&self) -> Result<Vec<DaemonSet>> {
        let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGER);
        let list = self
            .daemonsets
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| KubeError::List {
                what: "daemonsets",
                namespace: self.namespace.clone(),
                source,
            })?;
        Ok(list.items)
    }
}

/// Page size of Event lists.
pub const EVENT_PAGE: u32 = 100;

/// The one pager: visits a list page by page (`limit` and `continue`); each page is dropped before the
/// next is requested, so memory is bounded by one page.
async fn for_each_page<K>(api: &Api<K>, mut params: ListParams, mut visit: impl FnMut(&[K])) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    loop {
        let page = api.list(&params).await?;
        visit(&page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// The parts of a Node that decide where a DaemonSet pod may run: its labels and taints. Everything else
/// (`status.images`, managedFields, conditions) is skipped by serde without being allocated.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct NodeView {
    #[serde(default, deserialize_with = "name_and_labels")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<NodeSpecView>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct NodeSpecView {
    #[serde(default)]
    pub taints: Option<Vec<Taint>>,
}

impl k8s_openapi::Resource for NodeView {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Node";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "nodes";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for NodeView {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Reads an object's metadata keeping only its name and labels (managedFields, annotations and the rest
/// are skipped unallocated): for the partial types read in pages.
pub fn name_and_labels<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ObjectMeta, D::Error> {
    #[derive(serde::Deserialize)]
    struct Slim {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        labels: Option<std::collections::BTreeMap<String, String>>,
    }
    let slim: Option<Slim> = serde::Deserialize::deserialize(d)?;
    Ok(slim.map_or_else(ObjectMeta::default, |m| ObjectMeta {
        name: m.name,
        labels: m.labels,
        ..ObjectMeta::default()
    }))
}
