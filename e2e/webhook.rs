//! The validating admission webhook on the real API server, in URL mode (the controller outside the cluster):
//! `kubectl apply` of a broken config ConfigMap is refused with every problem and its line:col, and so is
//! `--dry-run=server`; a valid edit is admitted; the certificate is renewed near its expiry without one
//! request failing; with the controller stopped, edits are admitted within the timeout (failurePolicy Ignore).

use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;

use super::*;
use harness::{Process, free_port};

/// kubectl of the harness (built with the cluster), else PATH.
fn kubectl() -> PathBuf {
    let cache = Path::new(&env_home()).join(".cache/kubernetes-image-puller/cluster");
    std::fs::read_dir(&cache)
        .ok()
        .and_then(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("kubectl"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| "kubectl".into())
}

fn config_map(namespace: &str, toml: &str) -> String {
    let body: String = toml.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k8s-image-puller\n  namespace: {namespace}\n  \
         labels: {{kubernetes-image-puller.io/config: \"true\"}}\ndata:\n  config.toml: |\n{body}"
    )
}

/// `kubectl apply -f -` with `manifest` (and `extra` flags): (success, output).
fn apply(manifest: &str, extra: &[&str]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(kubectl())
        .args(["apply", "-f", "-"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_is_refused_at_kubectl_apply_with_line_and_column() {
    let client = client_or_skip!();
    let ns = TempNamespace::new(&client, "kip-e2e-webhook").await;
    let dir = tempfile::tempdir().unwrap();
    let valid = format!(
        "namespace = \"{}\"\n[[sets]]\nname = \"a\"\nnode_selector = {{ type = \"kwok\" }}\nimages = {{ a = \"registry.example/a:1\" }}\n",
        ns.name
    );
    let broken = format!(
        "namespace = \"{}\"\n[[sets]]\nname = \"a\"\nimagez = {{ a = \"registry.example/a:1\" }}\nmemory_limit = \"20Zz\"\n",
        ns.name
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &valid).unwrap();
    let port = free_port();
    // Cluster-scoped: a name of this run's own.
    let vwc_name = format!("kip-e2e-webhook-{}", std::process::id());
    let env = vec![
        ("KUBECONFIG", std::env::var("KUBECONFIG").expect("KUBECONFIG")),
        ("CONFIG_FILE", config.display().to_string()),
        ("POD_NAMESPACE", ns.name.clone()),
        ("WEBHOOK_ADDR", format!("127.0.0.1:{port}")),
        ("WEBHOOK_URL", format!("https://127.0.0.1:{port}/validate")),
        ("WEBHOOK_CONFIGURATION", vwc_name.clone()),
        // The shortest validity allowed: renewed at two thirds, 40 s in.
        ("WEBHOOK_CERT_VALIDITY_SECONDS", "60".to_owned()),
    ];
    let mut controller = Process::start(dir.path(), "controller", &["run"], &env);
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    wait_until("the webhook registered", || async {
        vwcs.get_opt(&vwc_name).await.ok().flatten().is_some_and(|v| {
            v.webhooks
                .unwrap_or_default()
                .iter()
                .any(|w| w.client_config.ca_bundle.is_some())
        })
    })
    .await;

    // 1. Refused, with each problem and its line:col; the server-side dry run says the same.
    let bad = config_map(&ns.name, &broken);
    let mut refused = (false, String::new());
    // The API server's webhook informer takes a moment to see a new configuration.
    wait_until("the first refusal", || {
        refused = apply(&bad, &[]);
        let done = !refused.0;
        async move { done }
    })
    .await;
    let message = &refused.1;
    assert!(message.contains("denied the request"), "{message}");
    assert!(
        message.contains("config.toml:4:1: sets[0].imagez: unknown field"),
        "{message}"
    );
    assert!(
        message.contains("config.toml:5:1:") && message.contains("\"20Zz\" is not a quantity"),
        "{message}"
    );
    println!("kubectl apply of a broken config:\n{message}");
    let (ok, dry) = apply(&bad, &["--dry-run=server"]);
    assert!(!ok && dry.contains("config.toml:4:1:"), "{dry}");

    // 2. A valid edit is admitted.
    let (ok, out) = apply(&config_map(&ns.name, &valid), &[]);
    assert!(ok, "{out}");

    // 3. Renewal near expiry, without one request failing: every apply of the broken config is refused by
    // the webhook (a TLS failure would be ignored and the edit admitted).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let cert = |s: Option<Secret>| s.and_then(|s| s.data).and_then(|d| d.get("tls.crt").cloned());
    let first = cert(secrets.get_opt("kubernetes-image-puller-webhook-tls").await.unwrap()).expect("the TLS Secret");
    let started = Instant::now();
    let mut applies = 0;
    loop {
        let (ok, out) = apply(&bad, &[]);
        applies += 1;
        assert!(
            !ok && out.contains("denied the request"),
            "apply {applies} was not refused:\n{out}"
        );
        let now = cert(secrets.get_opt("kubernetes-image-puller-webhook-tls").await.unwrap());
        if now.is_some_and(|c| c != first) && started.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "no renewal within 90 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // A few more after the switch.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (ok, out) = apply(&bad, &[]);
        assert!(!ok && out.contains("denied the request"), "{out}");
    }
    println!(
        "certificate renewed {:?} in; {applies} applies during it, all refused",
        started.elapsed()
    );

    // 4. The controller stopped: the edit is admitted within the timeout (failurePolicy Ignore).
    let status = controller.terminate();
    assert!(status.success(), "exit {status}:\n{}", controller.output());
    let t = Instant::now();
    let (ok, out) = apply(&bad, &[]);
    assert!(ok, "{out}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    println!("controller stopped: broken edit admitted in {:?}", t.elapsed());
    let _ = vwcs.delete(&vwc_name, &DeleteParams::default()).await;
    drop(ns);
}
