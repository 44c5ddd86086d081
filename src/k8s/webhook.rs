//! The admission webhook's API calls: its TLS Secret (get, create, update) and its
//! ValidatingWebhookConfiguration (get, create, merge patch). Errors are returned as they come, so that the
//! caller can tell a 403 (no webhook, one warning) from the rest.

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::FIELD_MANAGER;

fn absent_on_404<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

/// The Secret, or `None` when it does not exist.
pub async fn get_secret(client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
    absent_on_404(Api::<Secret>::namespaced(client.clone(), namespace).get(name).await)
}

pub async fn create_secret(client: &Client, namespace: &str, secret: &Secret) -> Result<Secret, kube::Error> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&post_params(), secret)
        .await
}

/// Replaces the Secret; its `metadata.resourceVersion` makes a concurrent change a conflict.
pub async fn update_secret(client: &Client, namespace: &str, secret: &Secret) -> Result<Secret, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .replace(&name, &post_params(), secret)
        .await
}

/// The configuration, or `None` when it does not exist.
pub async fn get_configuration(
    client: &Client,
    name: &str,
) -> Result<Option<ValidatingWebhookConfiguration>, kube::Error> {
    absent_on_404(
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .get(name)
            .await,
    )
}

pub async fn create_configuration(
    client: &Client,
    configuration: &ValidatingWebhookConfiguration,
) -> Result<ValidatingWebhookConfiguration, kube::Error> {
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&post_params(), configuration)
        .await
}

/// A JSON merge patch (the `webhooks` list is replaced whole: the caller owns it).
pub async fn patch_configuration(
    client: &Client,
    name: &str,
    patch: &serde_json::Value,
) -> Result<ValidatingWebhookConfiguration, kube::Error> {
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}
