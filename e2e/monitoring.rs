//! The chart's monitoring checked against a real Prometheus: the release binary runs against the cluster, a
//! Prometheus server on loopback (Debian's `prometheus` package, as ci/monitoring-checks.sh installs it)
//! scrapes it with the labels the chart's ServiceMonitor would give, and loads the chart's PrometheusRule as
//! `helm template` renders it. Every alert's and every dashboard panel's query runs through Prometheus' HTTP
//! API without error, and the "cache incomplete" alert fires for a set whose pods a ResourceQuota refuses.

use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::ResourceQuota;

use super::*;
use harness::{Process, free_port, helm, http_get};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
/// The job the chart's default rule selector expects: its ServiceMonitor's, named after the metrics Service
/// (`<deploymentName>-metrics`). The target also gets the `namespace` label a ServiceMonitor gives.
const JOB: &str = "kubernetes-image-puller-metrics";
const CACHE_INCOMPLETE: &str = "KubernetesImagePullerCacheIncomplete";

/// What this test needs on the machine besides the cluster, or the reason it cannot run.
fn tools() -> Result<(), String> {
    for tool in [PROMETHEUS, PROMTOOL] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} missing: install Debian's `prometheus` package (apt-get install prometheus), \
                 as ci/monitoring-checks.sh does"
            ));
        }
    }
    match Command::new(helm()).arg("version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(format!(
            "{} does not run: set KIP_E2E_HELM, or run ci/deploy-checks.sh once to cache helm",
            helm().display()
        )),
    }
}

/// `helm template` of the chart into `namespace` with the PrometheusRule and the dashboard ConfigMap on:
/// its documents, as JSON values.
fn render_chart(namespace: &str) -> Vec<serde_json::Value> {
    let out = Command::new(helm())
        .args(["template", "kip", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm")])
        .args(["--namespace", namespace])
        .args(["--set", "image.repository=registry.example/kubernetes-image-puller"])
        .args([
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
        ])
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("helm's output parses as YAML")
}

/// The one document of `kind` (and, for a ConfigMap, carrying the dashboard).
fn document<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == kind)
        .filter(|d| kind != "ConfigMap" || d["data"]["kubernetes-image-puller.json"].is_string())
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in the chart's output");
    found[0]
}

/// The rule groups with every `for` set to 0s and every group evaluated each second: the alert is checked on
/// its expression and labels, not on the chart's wait (15m for CacheIncomplete).
fn without_waits(groups: &serde_json::Value) -> serde_json::Value {
    let mut groups = groups.clone();
    for group in groups.as_array_mut().expect("spec.groups is a list") {
        group["name"] = format!("{}-for-0s", group["name"].as_str().unwrap()).into();
        group["interval"] = "1s".into();
        for rule in group["rules"].as_array_mut().expect("rules is a list") {
            if rule.get("for").is_some() {
                rule["for"] = "0s".into();
            }
        }
    }
    groups
}

/// Every panel target's `expr`, with the panel's title, rows' panels included.
fn panel_queries(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("panel \"{title}\""), expr.to_owned()));
            }
        }
        panel_queries(&panel["panels"], out);
    }
}

/// A dashboard query with the variables as Grafana fills them: this namespace and job, every set (`.*`, the
/// `$set` variable's "All"), and 1m for the interval macros.
fn substitute(expr: &str, namespace: &str) -> String {
    let mut expr = expr.to_owned();
    for (var, value) in [
        ("$__rate_interval", "1m"),
        ("$__interval", "1m"),
        ("$__range", "1m"),
        ("${namespace}", namespace),
        ("$namespace", namespace),
        ("${job}", JOB),
        ("$job", JOB),
        ("${set}", ".*"),
        ("$set", ".*"),
    ] {
        expr = expr.replace(var, value);
    }
    expr
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on a free loopback port; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &Path) -> Prometheus {
        let port = free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {PROMETHEUS}: {e}"));
        Prometheus { child, port, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for /-/ready; panics with its log if it exits or does not get ready in 30 s.
    async fn wait_ready(&mut self) -> Duration {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.output());
            }
            if http_get(self.port, "/-/ready")
                .await
                .is_some_and(|b| b.contains("Ready"))
            {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus not ready after 30 s:\n{}", self.output());
    }

    /// GET `path` (an API path with its query string) as JSON; Err with the body when it is not JSON.
    async fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let body = http_get(self.port, path)
            .await
            .ok_or_else(|| format!("no answer to {path}"))?;
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// An instant query: the result list, or Prometheus' error.
    async fn query(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", url_encode(query))).await?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        match &v["data"]["result"] {
            serde_json::Value::Array(result) => Ok(result.clone()),
            // A scalar or string result: one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The alerts in state firing: (alertname, labels).
    async fn firing(&self) -> Vec<(String, serde_json::Value)> {
        let v = self.api("/api/v1/alerts").await.expect("/api/v1/alerts");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ok` fits the namespace's ResourceQuota and gets Ready pods on kwok's nodes; `impossible` (3 images x 20Mi
/// = 60Mi per pod against 50Mi) has every pod refused with FailedCreate, so its nodes stay without a Ready
/// cache pod. Prometheus scrapes the release binary, evaluates the chart's rules (and a copy without the
/// `for` waits), every alert and dashboard query runs without error, and CacheIncomplete fires for
/// `impossible` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_controller_and_the_alerts_and_dashboard_queries_work() {
    let client = client_or_skip!();
    if let Err(why) = tools() {
        skip_or_fail(&why);
        return;
    }
    let ns = TempNamespace::new(&client, "kip-e2e-prom").await;
    let dir = tempfile::tempdir().unwrap();

    // The chart's rules and dashboard as a release in this namespace renders them.
    let docs = render_chart(&ns.name);
    let groups = &document(&docs, "PrometheusRule")["spec"]["groups"];
    let rules: Vec<(String, String)> = groups
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?").to_owned();
            (name, r["expr"].as_str().expect("a rule's expr").to_owned())
        })
        .collect();
    assert!(
        rules.iter().any(|(name, _)| name == CACHE_INCOMPLETE),
        "no {CACHE_INCOMPLETE} in the chart's rules"
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        document(&docs, "ConfigMap")["data"]["kubernetes-image-puller.json"]
            .as_str()
            .unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut panels = Vec::new();
    panel_queries(&dashboard["panels"], &mut panels);
    assert!(!panels.is_empty(), "no panel queries in the dashboard");

    // Rule files: JSON, which is YAML. The chart's as is, and the copy without waits.
    let chart_rules = dir.path().join("kubernetes-image-puller.rules.yaml");
    let fast_rules = dir.path().join("kubernetes-image-puller.for-0s.rules.yaml");
    std::fs::write(&chart_rules, serde_json::json!({ "groups": groups }).to_string()).unwrap();
    std::fs::write(
        &fast_rules,
        serde_json::json!({ "groups": without_waits(groups) }).to_string(),
    )
    .unwrap();
    let check = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .args([&chart_rules, &fast_rules])
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The cluster: a quota that `ok` fits (2 nodes x 20Mi) and no pod of `impossible` does.
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "tight"},
        "spec": {"hard": {"limits.memory": "50Mi", "requests.memory": "50Mi"}}
    }))
    .unwrap();
    Api::<ResourceQuota>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    let config = dir.path().join("config.toml");
    let text = format!(
        "namespace = \"{}\"\n\n\
         [[sets]]\nname = \"ok\"\nnode_selector = {{ type = \"kwok\" }}\n\
         images = {{ a = \"registry.example/a:1\" }}\n\n\
         [[sets]]\nname = \"impossible\"\nnode_selector = {{ type = \"kwok\" }}\n\
         images = {{ a = \"registry.example/a:1\", b = \"registry.example/b:1\", c = \"registry.example/c:1\" }}\n",
        ns.name
    );
    std::fs::write(&config, text).unwrap();
    let env = vec![
        ("KUBECONFIG", std::env::var("KUBECONFIG").expect("KUBECONFIG")),
        ("CONFIG_FILE", config.display().to_string()),
    ];
    let mut controller = Process::start(dir.path(), "controller", &["run"], &env);

    // Prometheus: one job scraping the controller with the labels the chart's ServiceMonitor would give.
    let prom_config = dir.path().join("prometheus.yml");
    let rule_files = serde_json::json!([chart_rules, fast_rules]);
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: {rule_files}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n\
             \x20     - targets: [\"127.0.0.1:{}\"]\n        labels: {{namespace: \"{}\", pod: \"kubernetes-image-puller-e2e\"}}\n",
            controller.metrics_port, ns.name
        ),
    )
    .unwrap();
    let check = Command::new(PROMTOOL)
        .args(["check", "config"])
        .arg(&prom_config)
        .output()
        .expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut prometheus = Prometheus::start(dir.path(), &prom_config);
    let started = Instant::now();
    let ready = prometheus.wait_ready().await;
    let up = format!("up{{job=\"{JOB}\",namespace=\"{}\"}} == 1", ns.name);
    let scraped = wait_until_for("Prometheus scrapes the controller", Duration::from_secs(60), || async {
        prometheus.query(&up).await.is_ok_and(|r| !r.is_empty())
    })
    .await;
    // Prometheus applies its scrape targets ~5 s after it starts (its target discovery's update interval).
    println!(
        "prometheus: ready {ready:?} after start, {up} {:?} after start",
        ready + scraped
    );
    assert!(controller.running(), "controller exited:\n{}", controller.output());

    // CacheIncomplete fires for `impossible` (desired > ready).
    let is_incomplete = |(name, labels): &(String, serde_json::Value), set: &str| {
        name == CACHE_INCOMPLETE && labels["set"] == set && labels["namespace"] == ns.name.as_str()
    };
    let took = wait_until_for(
        "CacheIncomplete firing for set=\"impossible\"",
        Duration::from_secs(60),
        || async { prometheus.firing().await.iter().any(|a| is_incomplete(a, "impossible")) },
    )
    .await;
    println!(
        "{CACHE_INCOMPLETE} firing for set=\"impossible\" {took:?} after the first scrape ({:?} after \
         Prometheus started)",
        started.elapsed(),
    );

    // Not for `ok` once it is Ready on every node it selects (in the cluster, then in the scraped figures).
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    wait_until_for("ok: every pod Ready", Duration::from_secs(60), || async {
        get(&daemonsets, "ok")
            .await
            .and_then(|d| d.status)
            .is_some_and(|s| s.desired_number_scheduled > 0 && s.number_ready == s.desired_number_scheduled)
    })
    .await;
    let ok_complete = format!(
        "kip_set_nodes_desired{{set=\"ok\",namespace=\"{0}\"}} > 0 and kip_set_nodes_desired{{set=\"ok\",namespace=\"{0}\"}} == kip_set_nodes_ready{{set=\"ok\",namespace=\"{0}\"}}",
        ns.name
    );
    wait_until_for(
        "ok: desired == ready in Prometheus",
        Duration::from_secs(60),
        || async { prometheus.query(&ok_complete).await.is_ok_and(|r| !r.is_empty()) },
    )
    .await;
    // Two evaluations of the 1s rule group on those figures: the alerts' state reflects them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let firing = prometheus.firing().await;
    let incomplete = firing
        .iter()
        .find(|a| is_incomplete(a, "impossible"))
        .unwrap_or_else(|| panic!("{CACHE_INCOMPLETE} for set=\"impossible\" stopped firing: {firing:?}"));
    println!("{CACHE_INCOMPLETE} labels {}", incomplete.1);
    assert_eq!(incomplete.1["severity"], "warning", "{}", incomplete.1);
    assert_eq!(incomplete.1["job"], JOB, "{}", incomplete.1);
    assert!(
        !firing.iter().any(|a| is_incomplete(a, "ok")),
        "{CACHE_INCOMPLETE} fires for set=\"ok\": {firing:?}"
    );
    // The `up` selector matches the scraped target: the "down or not scraped" alert stays quiet.
    assert!(
        !firing.iter().any(|(name, _)| name == "KubernetesImagePullerDown"),
        "KubernetesImagePullerDown fires: {firing:?}"
    );
    let mut names: Vec<String> = firing
        .iter()
        .map(|(name, labels)| match labels["set"].as_str() {
            Some(set) => format!("{name}{{set={set}}}"),
            None => name.clone(),
        })
        .collect();
    names.sort();
    names.dedup();
    println!("firing (for: 0s copy): {}", names.join(", "));

    // Every alert's and every panel's query through the HTTP API, once rate() over 1m has samples to use.
    let samples = format!(
        "count_over_time(up{{job=\"{JOB}\",namespace=\"{}\"}}[1m]) >= 5",
        ns.name
    );
    wait_until_for("5 scrapes in the last minute", Duration::from_secs(30), || async {
        prometheus.query(&samples).await.is_ok_and(|r| !r.is_empty())
    })
    .await;
    let mut queries: Vec<(String, String)> = rules
        .iter()
        .map(|(name, expr)| (format!("alert {name}"), expr.clone()))
        .collect();
    queries.extend(
        panels
            .iter()
            .map(|(what, expr)| (what.clone(), substitute(expr, &ns.name))),
    );
    let mut failures = Vec::new();
    let mut with_data = 0;
    let mut empty = Vec::new();
    for (what, expr) in &queries {
        if expr.contains('$') {
            failures.push(format!("{what}: a variable left unsubstituted: {expr}"));
            continue;
        }
        match prometheus.query(expr).await {
            Ok(result) if !result.is_empty() => with_data += 1,
            Ok(_) => empty.push(what.clone()),
            Err(e) => failures.push(format!("{what}: {e}\n    {expr}")),
        }
    }
    println!(
        "queried {} expressions ({} alerts, {} panel targets): {} without error, {with_data} returned data",
        queries.len(),
        rules.len(),
        panels.len(),
        queries.len() - failures.len()
    );
    println!("no data (nothing to report here): {}", empty.join("; "));
    assert!(failures.is_empty(), "queries failed:\n{}", failures.join("\n"));

    // The dashboard's variables (Grafana's label_values) through the label values API.
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let Some(definition) = var["definition"].as_str() else {
            continue;
        };
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(): {definition}", var["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = substitute(selector.trim(), &ns.name);
        let v = prometheus
            .api(&format!(
                "/api/v1/label/{}/values?match[]={}",
                label.trim(),
                url_encode(&selector)
            ))
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "variable {}: {v}", var["name"]);
        let values: Vec<&str> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        println!("dashboard variable ${}: {values:?}", var["name"].as_str().unwrap());
        let expected: &[&str] = match var["name"].as_str().unwrap() {
            "namespace" => &[ns.name.as_str()],
            "job" => &[JOB],
            "set" => &["impossible", "ok"],
            _ => &[],
        };
        for e in expected {
            assert!(
                values.contains(e),
                "variable {}: {e} missing from {values:?}",
                var["name"]
            );
        }
    }

    // Prometheus evaluated every rule of both files without error.
    let v = prometheus.api("/api/v1/rules").await.unwrap();
    let mut evaluated = 0;
    let mut unhealthy = Vec::new();
    for group in v["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            evaluated += 1;
            if rule["health"] != "ok" {
                unhealthy.push(format!(
                    "{}/{}: {} {}",
                    group["name"], rule["name"], rule["health"], rule["lastError"]
                ));
            }
        }
    }
    println!(
        "rules evaluated by Prometheus: {evaluated}, unhealthy: {}",
        unhealthy.len()
    );
    assert_eq!(evaluated, 2 * rules.len(), "both rule files loaded: {v}");
    assert!(unhealthy.is_empty(), "rules unhealthy:\n{}", unhealthy.join("\n"));

    drop(prometheus);
    let status = controller.terminate();
    assert!(status.success(), "exit {status}:\n{}", controller.output());
    drop(ns);
}
