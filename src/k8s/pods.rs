//! The digest refresh's API calls: refresh pods (list, create, delete), cache pods (delete, to be replaced
//! by the DaemonSet), and the sets' pull secrets (get by name).

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::{Cluster, is_forbidden, is_not_found};

/// Why a refresh call failed: the verb, the object and the API's answer.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {resource} {name}: {source}")]
pub struct PodCallError {
    pub verb: &'static str,
    pub resource: &'static str,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

impl PodCallError {
    pub fn is_forbidden(&self) -> bool {
        is_forbidden(&self.source)
    }
}

/// The keys of a pull Secret that hold Docker credentials, newest form first.
const DOCKER_CONFIG_KEYS: [&str; 2] = [".dockerconfigjson", ".dockercfg"];

impl Cluster {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Refresh pods matching `selector`: one per refreshing node, so a single request.
    pub async fn refresh_pods(&self, selector: &str) -> Result<Vec<Pod>, PodCallError> {
        self.pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items)
            .map_err(|source| self.pod_error("list", "pods", String::new(), source))
    }

    /// Creates a refresh pod; one already there (an earlier step's) counts as done.
    pub async fn create_pod(&self, pod: &Pod) -> Result<(), PodCallError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.pods().create(&PostParams::default(), pod).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(source) => Err(self.pod_error("create", "pods", name, source)),
        }
    }

    /// Deletes a pod by name; already gone counts as done.
    pub async fn delete_pod(&self, name: &str) -> Result<(), PodCallError> {
        match self.pods().delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(self.pod_error("delete", "pods", name.to_owned(), source)),
        }
    }

    /// The Docker credentials payload of a pull Secret (`.dockerconfigjson`, else `.dockercfg`); None when
    /// the Secret is missing or holds neither key.
    pub async fn pull_secret(&self, name: &str) -> Result<Option<Vec<u8>>, PodCallError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        match secrets.get_opt(name).await {
            Ok(secret) => Ok(secret.and_then(|s| {
                let mut data = s.data?;
                DOCKER_CONFIG_KEYS.iter().find_map(|k| data.remove(*k)).map(|b| b.0)
            })),
            Err(source) => Err(self.pod_error("get", "secrets", name.to_owned(), source)),
        }
    }

    fn pod_error(&self, verb: &'static str, resource: &'static str, name: String, source: kube::Error) -> PodCallError {
        if is_forbidden(&source) {
            self.access.forbidden(verb, "", resource);
        }
        PodCallError {
            verb,
            resource,
            name,
            source,
        }
    }
}
