//! The only module that talks to the Kubernetes API: [`Cluster`] (DaemonSet verbs), pages, discovery, Events.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::labels;
use crate::rbac::Access;

pub mod discovery;
pub mod events;
pub mod nodes;
pub mod pages;
pub mod pods;
pub mod webhook;

pub use discovery::{is_openshift, rules_review};
pub use events::{EVENT_REPEAT_AFTER, Events, FIELD_MAX, NOTE_MAX, reporting_instance, truncate_note};
pub use pages::{EVENT_PAGE, NODE_PAGE, NodeSpecView, NodeView, POD_PAGE, name_and_labels};

/// Field manager of every apply; one owner for all the fields this tool sets.
pub const FIELD_MANAGER: &str = "kubernetes-image-puller";
/// Field manager of the periodic rolling restart, kept apart so applies never fight over it.
pub const REFRESH_MANAGER: &str = "kubernetes-image-puller-refresh";

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

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
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
        self.list_daemonsets(&labels::owned_selector(instance)).await
    }

    /// Every DaemonSet this tool manages in the namespace, whatever instance made it (for `status`).
    pub async fn list_managed(&self) -> Result<Vec<DaemonSet>> {
        self.list_daemonsets(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER))
            .await
    }

    async fn list_daemonsets(&self, selector: &str) -> Result<Vec<DaemonSet>> {
        let params = ListParams::default().labels(selector);
        let list = self.daemonsets.list(&params).await;
        Ok(list.map_err(self.list_error("daemonsets"))?.items)
    }

    /// Turns a failed list of `what` in this namespace into a [`KubeError::List`].
    fn list_error(&self, what: &'static str) -> impl FnOnce(kube::Error) -> KubeError + '_ {
        move |source| KubeError::List {
            what,
            namespace: self.namespace.clone(),
            source,
        }
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

/// The handle for watching and reading the config's ConfigMap (the controller's API-sourced config).
pub fn config_maps(client: Client, namespace: &str) -> Api<ConfigMap> {
    Api::namespaced(client, namespace)
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
