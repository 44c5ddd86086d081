//! The shared vocabulary: the label and annotation names this tool writes, and how it tells its own objects.
//! Only objects carrying [`MANAGED_BY`] = [`MANAGER`] and this instance's [`INSTANCE`] are ever changed or
//! deleted.

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "kubernetes-image-puller";
pub const NAME: &str = "app.kubernetes.io/name";
/// Cache pods get their own name, so the puller's own Service and selectors never match them.
pub const CACHE_NAME: &str = "kip-cache";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const SET: &str = "kubernetes-image-puller/set";
/// Hash of everything rendered; equal hashes mean the live object needs no write.
pub const SPEC_HASH: &str = "kubernetes-image-puller/spec-hash";
/// Set on the pod template to roll the pods (what `kubectl rollout restart` sets).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Label selector for every DaemonSet of one puller instance.
pub fn owned_selector(instance: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{INSTANCE}={instance}")
}

/// Whether this instance owns the object (the label check that guards every change and delete).
pub fn is_owned(ds: &DaemonSet, instance: &str) -> bool {
    let l = ds.labels();
    l.get(MANAGED_BY).map(String::as_str) == Some(MANAGER) && l.get(INSTANCE).map(String::as_str) == Some(instance)
}

/// The spec hash the object was rendered with (absent on objects this tool did not write).
pub fn spec_hash_of(ds: &DaemonSet) -> Option<&str> {
    ds.annotations().get(SPEC_HASH).map(String::as_str)
}
