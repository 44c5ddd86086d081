//! Tier 1: the admission webhook's own permissions against a tower-test mock API. A 403 on any of its calls
//! (the Secret: get, create; the ValidatingWebhookConfiguration: get, create, patch) sets
//! `kip_permission_denied{verb,resource}` with the controller's label scheme, says so in one warning, and
//! turns the webhook off: `run` returns, nothing more is asked of the API, and nothing listens. With
//! `--webhook-cert-dir` (cert-manager, OpenShift's service CA) it needs no permission at all: no API call.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use kubernetes_image_puller::metrics::Metrics;
use kubernetes_image_puller::webhook::{self, Endpoint, Tls, WebhookSettings};
use serde_json::{Value, json};
use tokio::sync::watch;

use support::logs::{LOGGING, Logs};
use support::verifier::{Verifier, mock_client, respond, status};

const NS: &str = "kip-test";
const SECRET: &str = "kip-webhook-tls";
const CONFIGURATION: &str = "kip-test-kip";
const SECRET_PATH: &str = "/api/v1/namespaces/kip-test/secrets/kip-webhook-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/kip-test/secrets";
const VWCS_PATH: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
const OFF: &str = "the admission webhook is off";

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn settings(addr: SocketAddr) -> WebhookSettings {
    WebhookSettings {
        addr,
        endpoint: Some(Endpoint::Url(format!("https://127.0.0.1:{}/validate", addr.port()))),
        cert_dir: None,
        secret: SECRET.into(),
        configuration: CONFIGURATION.into(),
        validity: webhook::DEFAULT_VALIDITY,
        config_map: None,
        namespace: Some(NS.into()),
    }
}

fn forbidden(verb: &str, resource: &str, name: &str) -> Value {
    status(
        403,
        "Forbidden",
        &format!(
            "{resource} \"{name}\" is forbidden: User \"system:serviceaccount:kip-test:kip\" cannot {verb} resource \"{resource}\""
        ),
    )
}

/// Runs the webhook while `api` answers for the API server; `run` must return (the webhook off) within 5 s.
/// Returns the metrics text, the logs and the verifier (to check that nothing more was asked).
async fn off_after<F, Fut>(api: F) -> (String, Logs, Verifier, SocketAddr)
where
    F: FnOnce(Verifier) -> Fut,
    Fut: std::future::Future<Output = Verifier>,
{
    let logs = Logs::default();
    let _guard = logs.install();
    let metrics = Metrics::default();
    let (client, verifier) = mock_client(NS);
    let (_stop_tx, stop) = watch::channel(false);
    let addr = free_port();
    let run = webhook::run(client, settings(addr), metrics.permission_denied.clone(), stop);
    let (_, verifier) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(run, api(verifier)) })
        .await
        .expect("the webhook did not turn off");
    (metrics.encode(), logs, verifier, addr)
}

fn assert_off(metrics: &str, logs: &Logs, verifier: &mut Verifier, verb: &str, resource: &str) {
    let series = format!("kip_permission_denied{{verb=\"{verb}\",resource=\"{resource}\"}} 1");
    assert!(metrics.contains(&series), "{series} not in\n{metrics}");
    assert_eq!(
        metrics.matches("kip_permission_denied{").count(),
        1,
        "only the refused verb: {metrics}"
    );
    assert_eq!(logs.count(OFF), 1, "one warning:\n{}", logs.text());
    let warning = logs
        .text()
        .lines()
        .find(|l| l.contains(OFF))
        .unwrap_or_default()
        .to_owned();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&format!("no permission to {verb} {resource}")),
        "{warning}"
    );
    // No retry: nothing more is asked of the API.
    verifier.assert_idle();
}

async fn assert_not_listening(addr: SocketAddr) {
    // The server task is aborted; its listener goes with it at the task's next poll.
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the webhook still listens on {addr}");
}

#[tokio::test]
async fn a_403_on_reading_the_secret_turns_the_webhook_off() {
    let _serial = LOGGING.lock().await;
    let (metrics, logs, mut verifier, addr) = off_after(|mut v| async move {
        let (_, send) = v.expect(Method::GET, SECRET_PATH).await;
        respond(send, 403, &forbidden("get", "secrets", SECRET));
        v
    })
    .await;
    assert_off(&metrics, &logs, &mut verifier, "get", "secrets");
    assert_not_listening(addr).await;
}

#[tokio::test]
async fn a_403_on_creating_the_secret_turns_the_webhook_off() {
    let _serial = LOGGING.lock().await;
    let (metrics, logs, mut verifier, _) = off_after(|mut v| async move {
        let (_, send) = v.expect(Method::GET, SECRET_PATH).await;
        respond(
            send,
            404,
            &status(404, "NotFound", "secrets \"kip-webhook-tls\" not found"),
        );
        let (seen, send) = v.expect(Method::POST, SECRETS_PATH).await;
        assert_eq!(seen.body["metadata"]["name"], SECRET);
        respond(send, 403, &forbidden("create", "secrets", ""));
        v
    })
    .await;
    assert_off(&metrics, &logs, &mut verifier, "create", "secrets");
}

/// The Secret is created; then the configuration call `verb` is refused.
async fn configuration_refused(verb: &'static str) {
    let _serial = LOGGING.lock().await;
    let (metrics, logs, mut verifier, addr) = off_after(|mut v| async move {
        let (_, send) = v.expect(Method::GET, SECRET_PATH).await;
        respond(send, 404, &status(404, "NotFound", "not found"));
        let (seen, send) = v.expect(Method::POST, SECRETS_PATH).await;
        respond(send, 201, &seen.body);
        let one = format!("{VWCS_PATH}/{CONFIGURATION}");
        let (_, send) = v.expect(Method::GET, &one).await;
        let resource = "validatingwebhookconfigurations";
        match verb {
            "get" => respond(send, 403, &forbidden("get", resource, CONFIGURATION)),
            "create" => {
                respond(send, 404, &status(404, "NotFound", "not found"));
                let (seen, send) = v.expect(Method::POST, VWCS_PATH).await;
                assert_eq!(seen.body["webhooks"][0]["failurePolicy"], "Ignore");
                respond(send, 403, &forbidden("create", resource, ""));
            }
            "patch" => {
                let ours = json!({
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingWebhookConfiguration",
                    "metadata": {"name": CONFIGURATION, "resourceVersion": "7",
                                 "labels": {"app.kubernetes.io/managed-by": "kubernetes-image-puller"}},
                    "webhooks": [],
                });
                respond(send, 200, &ours);
                let (seen, send) = v.expect(Method::PATCH, &one).await;
                assert!(
                    seen.body["webhooks"][0]["clientConfig"]["caBundle"].is_string(),
                    "{seen:?}"
                );
                respond(send, 403, &forbidden("patch", resource, CONFIGURATION));
            }
            other => unreachable!("{other}"),
        }
        v
    })
    .await;
    assert_off(
        &metrics,
        &logs,
        &mut verifier,
        verb,
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
    );
    // It was serving (the Secret was there); off means it stops.
    assert_not_listening(addr).await;
}

#[tokio::test]
async fn a_403_on_reading_the_configuration_turns_the_webhook_off() {
    configuration_refused("get").await;
}

#[tokio::test]
async fn a_403_on_creating_the_configuration_turns_the_webhook_off() {
    configuration_refused("create").await;
}

#[tokio::test]
async fn a_403_on_patching_the_configuration_turns_the_webhook_off() {
    configuration_refused("patch").await;
}

#[tokio::test]
async fn a_valid_secret_is_reused_and_a_granted_registration_keeps_the_webhook_on() {
    let _serial = LOGGING.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let metrics = Metrics::default();
    let (client, mut v) = mock_client(NS);
    let (stop_tx, stop) = watch::channel(false);
    let addr = free_port();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let tls = Tls::generate(&["127.0.0.1".to_owned()], webhook::DEFAULT_VALIDITY, now).unwrap();
    let run = tokio::spawn(webhook::run(
        client,
        settings(addr),
        metrics.permission_denied.clone(),
        stop,
    ));
    let (_, send) = v.expect(Method::GET, SECRET_PATH).await;
    respond(send, 200, &serde_json::to_value(tls.to_secret(SECRET, NS)).unwrap());
    let (_, send) = v.expect(Method::GET, &format!("{VWCS_PATH}/{CONFIGURATION}")).await;
    respond(send, 404, &status(404, "NotFound", "not found"));
    let (seen, send) = v.expect(Method::POST, VWCS_PATH).await;
    respond(send, 201, &seen.body);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok(), "serving");
    assert!(!metrics.encode().contains("kip_permission_denied{"));
    assert_eq!(logs.count(OFF), 0, "{}", logs.text());
    v.assert_idle();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn with_a_cert_dir_the_webhook_serves_without_any_api_call() {
    let _serial = LOGGING.lock().await;
    let (client, mut v) = mock_client(NS);
    let (stop_tx, stop) = watch::channel(false);
    let addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let tls = Tls::generate(&["127.0.0.1".to_owned()], webhook::DEFAULT_VALIDITY, now).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &tls.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &tls.key_pem).unwrap();
    let metrics = Metrics::default();
    let settings = WebhookSettings {
        endpoint: None,
        cert_dir: Some(dir.path().to_owned()),
        ..settings(addr)
    };
    let run = tokio::spawn(webhook::run(client, settings, metrics.permission_denied.clone(), stop));
    let mut listening = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listening, "serving from the directory");
    // Neither the Secret nor the ValidatingWebhookConfiguration (cainjector or the service CA keep it).
    v.assert_idle();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .unwrap()
        .unwrap();
    v.assert_idle();
    assert!(!metrics.encode().contains("kip_permission_denied{"));
}
