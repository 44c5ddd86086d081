//! All Kubernetes I/O: DaemonSets (get, list, create, apply, replace, delete, delete-then-create,
//! restart), pods (paged list for health checks), the owner Deployment, OpenShift detection, what this
//! identity may do (SelfSubjectRulesReview), and Events. Nothing else talks to the API.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::rbac::Access;
use crate::render::labels;

/// Field manager of every apply; one owner for all the fields this tool sets.
pub const FIELD_MANAGER: &str = "kubernetes-image-puller";
/// Field manager of the periodic rolling restart, kept apart so applies never fight over it.
pub const REFRESH_MANAGER: &str = "kubernetes-image-puller-refresh";
/// Page size of pod lists: the controller never holds more than one page of pods.
pub const POD_PAGE: u32 = 500;

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
        if let Some(at) = restarted_at(live) {
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

    /// Visits the pods matching `selector` one page at a time, so memory does not grow with the cluster.
    pub async fn for_each_pod_page(&self, selector: &str, mut visit: impl FnMut(&[Pod])) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut params = ListParams::default().labels(selector).limit(POD_PAGE);
        loop {
            let page = pods.list(&params).await.map_err(|source| {
                if is_forbidden(&source) {
                    self.access.forbidden("list", "", "pods");
                }
                KubeError::List {
                    what: "pods",
                    namespace: self.namespace.clone(),
                    source,
                }
            })?;
            visit(&page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(()),
            }
        }
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

/// Publishes Events; a failure to record is logged, never fatal.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    own_pod: Option<ObjectReference>,
    access: Arc<Access>,
}

impl Events {
    pub fn new(client: Client, pod_name: Option<String>, pod_namespace: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: pod_name.clone(),
        };
        let own_pod = pod_name.map(|name| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: pod_namespace,
            ..ObjectReference::default()
        });
        Self {
            recorder: Recorder::new(client, reporter),
            own_pod,
            access: Arc::new(Access::default()),
        }
    }

    /// Skips publishing while this identity may not create Events (announced once by [`Access`]).
    pub fn with_access(mut self, access: Arc<Access>) -> Self {
        self.access = access;
        self
    }

    pub async fn on_daemonset(&self, ds: &DaemonSet, warning: bool, reason: &str, note: String) {
        self.publish(&ds.object_ref(&()), warning, reason, note).await;
    }

    /// Config problems are about the puller itself: recorded on its own pod when it knows its name.
    pub async fn on_self(&self, warning: bool, reason: &str, note: String) {
        if let Some(pod) = self.own_pod.clone() {
            self.publish(&pod, warning, reason, note).await;
        }
    }

    /// An Event about another object, such as the ConfigMap whose edit was rejected.
    pub async fn on_object(&self, regarding: &ObjectReference, warning: bool, reason: &str, note: String) {
        self.publish(regarding, warning, reason, note).await;
    }

    async fn publish(&self, regarding: &ObjectReference, warning: bool, reason: &str, mut note: String) {
        if !self.access.allows("create", "events.k8s.io", "events") {
            return;
        }
        // The API refuses notes over 1 kB.
        if note.len() > 1000 {
            let cut = (0..=1000).rev().find(|i| note.is_char_boundary(*i)).unwrap_or(0);
            note.truncate(cut);
        }
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        let publish = self.recorder.publish(&event, regarding);
        match tokio::time::timeout(Duration::from_secs(10), publish).await {
            Ok(Ok(())) => {}
            Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                // The Recorder creates, or patches a repeat: either refusal turns Events off, announced once.
                let verb = if s.message.contains("cannot patch") {
                    "patch"
                } else {
                    "create"
                };
                self.access.forbidden(verb, "events.k8s.io", "events");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, reason, "cannot record event"),
            Err(_) => tracing::warn!(reason, "recording an event timed out"),
        }
    }
}
