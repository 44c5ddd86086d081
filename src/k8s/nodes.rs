//! The warm gate's node calls: nodes read page by page in a partial form (name, labels, creation, taints and
//! the conditions' type, status and transition only), the `ImagesCached` condition written with a
//! strategic-merge patch of `nodes/status` (conditions merge by type, so the kubelet's are untouched), and the
//! startup taint removed with a JSON patch whose test op makes it fail if the taints changed meanwhile.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::pages::{NODE_PAGE, for_each_page, partial_view};
use super::{Cluster, FIELD_MANAGER, is_forbidden};
use crate::warmth::{CONDITION_TYPE, Condition};

/// A Node as the warm gate reads it. `status.images`, managedFields, addresses and the conditions' messages
/// are skipped by serde without being allocated.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct WarmNodeView {
    #[serde(default, deserialize_with = "name_labels_created")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<super::NodeSpecView>,
    #[serde(default)]
    pub status: Option<WarmNodeStatus>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct WarmNodeStatus {
    #[serde(default)]
    pub conditions: Option<Vec<NodeConditionView>>,
}

/// A node condition without its message (kubelet's are long).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConditionView {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub last_transition_time: Option<Time>,
}

partial_view!(WarmNodeView, "Node", "nodes", k8s_openapi::ClusterResourceScope);

impl WarmNodeView {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    pub fn taints(&self) -> &[Taint] {
        self.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
    }

    pub fn created(&self) -> Option<Timestamp> {
        self.metadata.creation_timestamp.as_ref().map(|t| t.0)
    }

    /// A condition's status (True) and last transition.
    pub fn condition(&self, kind: &str) -> Option<(bool, Option<Timestamp>)> {
        let c = self.find_condition(kind)?;
        Some((c.status == "True", c.last_transition_time.as_ref().map(|t| t.0)))
    }

    /// A condition's reason ("" when it has none).
    pub fn condition_reason(&self, kind: &str) -> Option<&str> {
        Some(self.find_condition(kind)?.reason.as_deref().unwrap_or_default())
    }

    fn find_condition(&self, kind: &str) -> Option<&NodeConditionView> {
        self.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == kind)
    }
}

/// Node metadata keeping only its name, labels and creation time.
fn name_labels_created<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Slim {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
        #[serde(default)]
        creation_timestamp: Option<Time>,
    }
    let slim: Option<Slim> = serde::Deserialize::deserialize(d)?;
    Ok(slim.map_or_else(ObjectMeta::default, |m| ObjectMeta {
        name: m.name,
        labels: m.labels,
        creation_timestamp: m.creation_timestamp,
        ..ObjectMeta::default()
    }))
}

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {resource} {name}: {source}")]
pub struct NodeCallError {
    pub verb: &'static str,
    pub resource: &'static str,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

impl NodeCallError {
    pub fn is_forbidden(&self) -> bool {
        is_forbidden(&self.source)
    }

    /// The taint list changed since it was read (the test op failed) or the node is gone: read again.
    pub fn is_stale(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if matches!(s.code, 404 | 409 | 422))
    }
}

impl Cluster {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn node_error(&self, verb: &'static str, resource: &'static str, name: &str, source: kube::Error) -> NodeCallError {
        if is_forbidden(&source) {
            self.access.forbidden(verb, "", resource);
        }
        NodeCallError {
            verb,
            resource,
            name: name.to_owned(),
            source,
        }
    }

    /// Visits every node in the warm gate's partial form, one small page at a time.
    pub async fn for_each_warm_node_page(&self, visit: impl FnMut(&[WarmNodeView])) -> Result<(), NodeCallError> {
        let nodes: Api<WarmNodeView> = Api::all(self.client.clone());
        for_each_page(&nodes, ListParams::default().limit(NODE_PAGE), visit)
            .await
            .map_err(|source| self.node_error("list", "nodes", "", source))
    }

    /// Writes the `ImagesCached` condition: a strategic-merge patch of `status.conditions`, merged by type,
    /// so the kubelet's conditions are untouched.
    pub async fn patch_node_condition(&self, node: &str, condition: &Condition) -> Result<(), NodeCallError> {
        let at = condition.last_transition.to_string();
        let patch = json!({"status": {"conditions": [{
            "type": CONDITION_TYPE,
            "status": if condition.status { "True" } else { "False" },
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": at,
            "lastHeartbeatTime": at,
        }]}});
        self.patch_node_status(node, &patch).await
    }

    /// Removes the `ImagesCached` condition from a node no set selects any more (a strategic-merge delete
    /// directive for that type; the kubelet's conditions stay).
    pub async fn remove_node_condition(&self, node: &str) -> Result<(), NodeCallError> {
        let patch = json!({"status": {"conditions": [{"type": CONDITION_TYPE, "$patch": "delete"}]}});
        self.patch_node_status(node, &patch).await
    }

    /// A strategic-merge patch of `nodes/status` (conditions merge by type).
    async fn patch_node_status(&self, node: &str, patch: &serde_json::Value) -> Result<(), NodeCallError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.nodes()
            .patch_status(node, &params, &Patch::Strategic(patch))
            .await
            .map(|_| ())
            .map_err(|source| self.node_error("patch", "nodes/status", node, source))
    }

    /// Removes the startup taint: a JSON patch that tests the taint list read (`current`) and replaces it
    /// with `remaining`, so a taint added or changed meanwhile makes it fail (422) instead of being lost.
    pub async fn remove_node_taint(
        &self,
        node: &str,
        current: &[Taint],
        remaining: &[Taint],
    ) -> Result<(), NodeCallError> {
        let ops = json!([
            {"op": "test", "path": "/spec/taints", "value": current},
            {"op": "replace", "path": "/spec/taints", "value": remaining},
        ]);
        let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|e| NodeCallError {
            verb: "patch",
            resource: "nodes",
            name: node.to_owned(),
            source: kube::Error::SerdeError(e),
        })?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.nodes()
            .patch(node, &params, &Patch::<()>::Json(patch))
            .await
            .map(|_| ())
            .map_err(|source| self.node_error("patch", "nodes", node, source))
    }
}
