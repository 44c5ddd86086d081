//! Reads in pages: the one pager, the page sizes, and the partial Node view that keeps memory flat.

use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};

use super::{Cluster, Result, is_forbidden};
use crate::health::PodView;

/// Page size of pod lists: the controller never holds more than one page of pods. A cache pod of a
/// 100-image set is tens of KB of JSON, and the whole page is read before it is parsed: small pages
/// bound the peak (a health check runs hourly; 20 requests per 1,000 nodes cost nothing).
pub const POD_PAGE: u32 = 50;
/// Page size of node lists (counting a new set's nodes): a real Node carries its cached-images list and
/// managedFields, 10 to 30 KB of JSON, and the client holds a page about three times over (the body, its
/// copy as text, the parse) before the partial type drops all but labels and taints. 20 keeps that under
/// 1 MiB; the count runs after the writes, so its 50 requests per 1,000 nodes delay nothing.
pub const NODE_PAGE: u32 = 20;
/// Page size of Event lists.
pub const EVENT_PAGE: u32 = 100;

impl Cluster {
    /// Visits the pods matching `selector` one page at a time, so memory does not grow with the cluster;
    /// only the fields the health tally reads are kept.
    pub async fn for_each_pod_page(&self, selector: &str, visit: impl FnMut(&[PodView])) -> Result<()> {
        let pods: Api<PodView> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(selector).limit(POD_PAGE);
        for_each_page(&pods, params, visit).await.map_err(|source| {
            if is_forbidden(&source) {
                self.access.forbidden("list", "", "pods");
            }
            self.list_error("pods")(source)
        })
    }

    /// Visits every node (cluster-wide `list nodes`) one small page at a time, keeping only labels and
    /// taints: memory stays flat in the number of nodes.
    pub async fn for_each_node_page(&self, visit: impl FnMut(&[NodeView])) -> Result<(), kube::Error> {
        let nodes: Api<NodeView> = Api::all(self.client.clone());
        for_each_page(&nodes, ListParams::default().limit(NODE_PAGE), visit).await
    }

    /// Visits the core/v1 Events matching a field selector, one page at a time: what other controllers
    /// wrote about one object (the DaemonSet controller's recorder writes these; they are visible through
    /// events.k8s.io too).
    pub async fn for_each_event_page(
        &self,
        field_selector: &str,
        visit: impl FnMut(&[k8s_openapi::api::core::v1::Event]),
    ) -> Result<()> {
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().fields(field_selector).limit(EVENT_PAGE);
        for_each_page(&events, params, visit)
            .await
            .map_err(self.list_error("events"))
    }

    /// The namespace's ResourceQuotas (a handful at most: one request, no pages).
    pub async fn resource_quotas(&self) -> Result<Vec<ResourceQuota>> {
        self.list_small("resourcequotas").await
    }

    /// The namespace's LimitRanges (a handful at most: one request, no pages).
    pub async fn limit_ranges(&self) -> Result<Vec<LimitRange>> {
        self.list_small("limitranges").await
    }

    /// A namespaced kind of which a namespace holds only a few objects, in one request.
    async fn list_small<K>(&self, what: &'static str) -> Result<Vec<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api.list(&ListParams::default()).await;
        Ok(list.map_err(self.list_error(what))?.items)
    }
}

/// The one pager: visits a list page by page (`limit` and `continue`); each page is dropped before the
/// next is requested, so memory is bounded by one page.
pub(super) async fn for_each_page<K>(
    api: &Api<K>,
    mut params: ListParams,
    mut visit: impl FnMut(&[K]),
) -> Result<(), kube::Error>
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

partial_view!(NodeView, "Node", "nodes", k8s_openapi::ClusterResourceScope);

/// Makes a partial type (a core/v1 kind read with only some of its fields, `metadata` among them) listable
/// through `Api`: its kind, URL segment and scope.
macro_rules! partial_view {
    ($view:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl k8s_openapi::Resource for $view {
            const API_VERSION: &'static str = "v1";
            const GROUP: &'static str = "";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $view {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use partial_view;

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
