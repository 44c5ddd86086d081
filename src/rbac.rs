//! What this identity may do. One table of every permission the code uses (the chart's Role, its optional
//! node ClusterRole, the OpenShift template and `kubernetes-image-puller rbac` all come from it), the rules
//! learned from a SelfSubjectRulesReview, and the 403s seen since. From these follow the write strategy
//! (server-side apply, update, or delete-then-create with the upstream verbs) and which optional features
//! are off. Each missing optional permission is announced once (log and `kip_permission_denied` gauge).

use std::collections::BTreeSet;
use std::sync::Mutex;

use k8s_openapi::api::authorization::v1::ResourceRule;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Value, json};

use crate::metrics::{PermissionLabel, StrategyLabel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// What a permission serves; optional features turn off without theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// The upstream verbs: the controller cannot work without them.
    Core,
    ServerSideApply,
    Replace,
    Events,
    FailedCreateEvents,
    HealthCheck,
    QuotaCheck,
    NodeCount,
    LeaderElection,
    /// Reading the config from the API (`--config-map`): edits apply at once, not after kubelet's sync.
    ConfigMap,
    /// The digest refresh (sets with `refresh = "digest"`): a refresh pod per stale node, then that node's
    /// cache pod replaced. Without it: stale nodes are reported, not refreshed.
    DigestRefresh,
    /// The sets' pull Secrets read (by name) to ask private registries for digests. Without it: those
    /// images are asked anonymously, and a 401 is reported.
    PullSecrets,
    /// The validating admission webhook (`--webhook-addr`): its TLS Secret and its
    /// ValidatingWebhookConfiguration. Without them: one warning, no webhook.
    Webhook,
    /// The warm gate (`[warm_gate]`): the node condition `kubernetes-image-puller/ImagesCached` on every node
    /// a set selects. Without it: one warning, no condition.
    WarmGate,
    /// The warm gate's startup taint (`[warm_gate] taint`), removed from nodes once warm. Without it: one
    /// warning, the taint stays (the condition is still written).
    WarmGateTaint,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// What it is for; for an optional row, what is lost without it.
    pub purpose: &'static str,
    pub required: bool,
    pub scope: Scope,
    pub feature: Feature,
    /// Granted by name only (`resourceNames`): the one ConfigMap named at deploy time, never all of them.
    pub named: bool,
    /// The names `resourceNames` restricts the row to (empty: all); the chart's and template's defaults.
    pub resource_names: &'static [&'static str],
}

const fn row(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    purpose: &'static str,
    feature: Feature,
) -> Permission {
    Permission {
        group,
        resource,
        verbs,
        purpose,
        required: matches!(feature, Feature::Core),
        scope: if matches!(feature, Feature::NodeCount) {
            Scope::Cluster
        } else {
            Scope::Namespaced
        },
        feature,
        named: matches!(feature, Feature::ConfigMap),
        resource_names: if matches!(feature, Feature::ConfigMap) {
            &[DEFAULT_CONFIG_MAP]
        } else {
            &[]
        },
    }
}

/// A row restricted by `resourceNames` to `names`.
const fn named(p: Permission, names: &'static [&'static str]) -> Permission {
    Permission {
        named: true,
        resource_names: names,
        ..p
    }
}

/// A cluster-scoped row (granted by the ClusterRole).
const fn cluster(p: Permission) -> Permission {
    Permission {
        scope: Scope::Cluster,
        ..p
    }
}

/// The ConfigMap name the `rbac` command puts in `resourceNames` (the chart's and template's default).
pub const DEFAULT_CONFIG_MAP: &str = "k8s-image-puller";
/// The webhook's TLS Secret and ValidatingWebhookConfiguration names in `resourceNames` (the defaults of
/// `--webhook-secret` and `--webhook-configuration`).
pub const DEFAULT_WEBHOOK_SECRET: &str = crate::webhook::DEFAULT_SECRET;
pub const DEFAULT_WEBHOOK_CONFIGURATION: &str = crate::webhook::DEFAULT_CONFIGURATION;

/// Every permission the code uses. Required rows are exactly the upstream Role (what the upstream chart,
/// OpenShift template and the Che operator grant), so upstream users keep working with no change.
pub const TABLE: &[Permission] = &[
    row(
        "apps",
        "daemonsets",
        &["get", "list", "watch", "create", "delete"],
        "the cache DaemonSets: watch its own, create them, delete-then-create a changed one, prune removed sets",
        Feature::Core,
    ),
    row(
        "apps",
        "deployments",
        &["get"],
        "its own Deployment, named as the DaemonSets' owner so an uninstall removes them",
        Feature::Core,
    ),
    row(
        "apps",
        "daemonsets",
        &["patch"],
        "server-side apply: rolling updates in place and the periodic refresh by rolling restart (without it: delete-then-create, nodes briefly without cache pods)",
        Feature::ServerSideApply,
    ),
    row(
        "apps",
        "daemonsets",
        &["update"],
        "replace of hand edits server-side apply cannot undo, such as an added container (without it: delete-then-create)",
        Feature::Replace,
    ),
    row(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "Events about its work (kube's Recorder creates them and patches repeats)",
        Feature::Events,
    ),
    row(
        "",
        "events",
        &["list"],
        "pods the DaemonSet controller could not create (its FailedCreate Events)",
        Feature::FailedCreateEvents,
    ),
    row(
        "",
        "pods",
        &["list"],
        "health check: which images fail to pull on which nodes",
        Feature::HealthCheck,
    ),
    row(
        "",
        "pods",
        &["create", "delete"],
        "digest refresh: a short-lived pod pulls a changed tag on each stale node, then that node's cache pod is replaced (without them: stale nodes are reported, not refreshed)",
        Feature::DigestRefresh,
    ),
    named(
        row(
            "",
            "secrets",
            &["get"],
            "digest checks of private images: the sets' image_pull_secrets, restricted by resourceNames to those names (without it: asked anonymously, a 401 reported)",
            Feature::PullSecrets,
        ),
        // Named by the config, so no default: the chart renders them from its values, `rbac` leaves the row out.
        &[],
    ),
    row(
        "",
        "resourcequotas",
        &["list"],
        "quota check: whether the namespace has room for the cache pods",
        Feature::QuotaCheck,
    ),
    row(
        "",
        "limitranges",
        &["list"],
        "quota check: whether LimitRanges allow the cache containers",
        Feature::QuotaCheck,
    ),
    row(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "patch"],
        "leader election (--leader-elect), used by kube-lease-manager",
        Feature::LeaderElection,
    ),
    row(
        "",
        "configmaps",
        &["get", "list", "watch"],
        "the config read from the API (--config-map), restricted by resourceNames to that one ConfigMap: edits apply at once (without it: the mounted file, after kubelet's sync)",
        Feature::ConfigMap,
    ),
    row(
        "",
        "nodes",
        &["list"],
        "node counts of new sets for the quota check (cluster-scoped; optional ClusterRole)",
        Feature::NodeCount,
    ),
    cluster(row(
        "",
        "nodes",
        &["list"],
        "warm gate: which nodes the sets select, their Ready transition and their ImagesCached condition, read page by page (cluster-scoped; without it: no condition, no taint removal)",
        Feature::WarmGate,
    )),
    cluster(row(
        "",
        "nodes/status",
        &["patch"],
        "warm gate: the node condition kubernetes-image-puller/ImagesCached, written when it changes (cluster-scoped; without it: no condition)",
        Feature::WarmGate,
    )),
    row(
        "",
        "pods",
        &["list"],
        "warm gate: which cache pods are Ready on which nodes, read page by page",
        Feature::WarmGate,
    ),
    cluster(row(
        "",
        "nodes",
        &["patch"],
        "warm gate: the startup taint removed from a node once warm or after the timeout, never added (cluster-scoped; without it: the taint stays)",
        Feature::WarmGateTaint,
    )),
    named(
        row(
            "",
            "secrets",
            &["get", "update"],
            "the admission webhook's CA and certificate (--webhook-addr), restricted by resourceNames to its one Secret: read, reused, renewed (without it: no webhook)",
            Feature::Webhook,
        ),
        &[DEFAULT_WEBHOOK_SECRET],
    ),
    row(
        "",
        "secrets",
        &["create"],
        "the admission webhook's Secret, made at first start (create cannot be restricted by resourceNames; without it the Secret must exist)",
        Feature::Webhook,
    ),
    cluster(named(
        row(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            &["get", "patch"],
            "the admission webhook's own ValidatingWebhookConfiguration, restricted by resourceNames: its caBundle kept current (cluster-scoped; without it: no webhook)",
            Feature::Webhook,
        ),
        &[DEFAULT_WEBHOOK_CONFIGURATION],
    )),
    cluster(row(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        &["create"],
        "the admission webhook's ValidatingWebhookConfiguration, made when missing (create cannot be restricted by resourceNames; without it the chart's must exist)",
        Feature::Webhook,
    )),
];

/// The table as RBAC rules of one scope: one rule per (group, resource), verbs in table order.
pub fn rules(scope: Scope) -> Vec<Value> {
    type Rule<'a> = (&'a str, &'a str, &'a [&'a str], Vec<&'a str>);
    let mut out: Vec<Rule<'_>> = Vec::new();
    // A row named by the config (pull Secrets) has no names here: left out rather than granted for all.
    for p in TABLE
        .iter()
        .filter(|p| p.scope == scope && !(p.named && p.resource_names.is_empty()))
    {
        match out
            .iter_mut()
            .find(|(g, r, n, _)| *g == p.group && *r == p.resource && *n == p.resource_names)
        {
            Some((_, _, _, verbs)) => {
                for v in p.verbs {
                    if !verbs.contains(v) {
                        verbs.push(v);
                    }
                }
            }
            None => out.push((p.group, p.resource, p.resource_names, p.verbs.to_vec())),
        }
    }
    out.into_iter()
        .map(|(g, r, n, v)| {
            if n.is_empty() {
                json!({"apiGroups": [g], "resources": [r], "verbs": v})
            } else {
                json!({"apiGroups": [g], "resources": [r], "resourceNames": n, "verbs": v})
            }
        })
        .collect()
}

/// The Role and ClusterRole granting exactly the table, as `rbac -o json` prints them (with the table).
pub fn manifests_json(name: &str) -> Value {
    json!({
        "role": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": name}, "rules": rules(Scope::Namespaced)},
        "clusterRole": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": {"name": format!("{name}-nodes")}, "rules": rules(Scope::Cluster)},
        "permissions": TABLE,
    })
}

/// The same as YAML documents, each rule preceded by what it is for.
pub fn manifests_yaml(name: &str) -> String {
    let mut out = String::new();
    for (kind, scope, object_name) in [
        ("Role", Scope::Namespaced, name.to_owned()),
        ("ClusterRole", Scope::Cluster, format!("{name}-nodes")),
    ] {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {object_name}\nrules:\n"
        ));
        for rule in rules(scope) {
            let (group, resource) = (rule["apiGroups"][0].as_str(), rule["resources"][0].as_str());
            let names = rule.get("resourceNames").cloned().unwrap_or_else(|| json!([]));
            for p in TABLE
                .iter()
                .filter(|p| !(p.named && p.resource_names.is_empty()))
                .filter(|p| Some(p.group) == group && Some(p.resource) == resource && json!(p.resource_names) == names)
            {
                let need = if p.required { "required" } else { "optional" };
                out.push_str(&format!("  # {} ({need}): {}\n", p.verbs.join(", "), p.purpose));
            }
            out.push_str(&format!(
                "  - apiGroups: {}\n    resources: {}\n",
                rule["apiGroups"], rule["resources"]
            ));
            if let Some(names) = rule.get("resourceNames") {
                out.push_str(&format!("    resourceNames: {names}\n"));
            }
            out.push_str(&format!("    verbs: {}\n", rule["verbs"]));
        }
    }
    out
}

/// How DaemonSets are written, given the verbs granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStrategy {
    /// `patch`: server-side apply (creates, rolling updates, repairs) and rolling-restart refreshes.
    pub apply: bool,
    /// `update`: replace in place (a rolling update) where apply is not possible or not enough.
    pub update: bool,
}

impl Default for WriteStrategy {
    fn default() -> Self {
        Self {
            apply: true,
            update: true,
        }
    }
}

impl WriteStrategy {
    /// The name shown in the log, `status` and the `kip_write_strategy` metric.
    pub fn name(&self) -> &'static str {
        match (self.apply, self.update) {
            (true, _) => "server-side-apply",
            (false, true) => "update",
            (false, false) => "delete-then-create",
        }
    }

    pub const NAMES: [&'static str; 3] = ["server-side-apply", "update", "delete-then-create"];

    /// What rolling updates would need, when changes are made by delete-then-create.
    pub fn rolling_updates_need(&self) -> Option<&'static str> {
        (!self.apply && !self.update).then_some("patch (server-side apply) or update on apps/daemonsets")
    }
}

/// A missing optional permission, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Missing {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub lost: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "cannot {} {} ({group}): {}", self.verb, self.resource, self.lost)
    }
}

/// What `status` shows about permissions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccessReport {
    /// Whether the rules come from a SelfSubjectRulesReview (else only from 403s seen).
    pub reviewed: bool,
    pub write_strategy: &'static str,
    /// Set when changes are not rolling updates: the verbs that would make them so.
    pub rolling_updates_need: Option<&'static str>,
    pub missing: Vec<Missing>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Rules from the last review; None: not known, so everything is tried.
    rules: Option<Vec<ResourceRule>>,
    /// The review said its list may be incomplete (another authorizer): a rule's absence proves nothing.
    incomplete: bool,
    /// (verb, group, resource) answered 403 since the last review.
    forbidden: BTreeSet<(String, String, String)>,
    /// Missing (verb, group, resource) already announced.
    announced: BTreeSet<(String, String, String)>,
    active: BTreeSet<Feature>,
    /// The strategy last announced.
    strategy: Option<WriteStrategy>,
    /// The ConfigMap read through the API: a rule restricted by `resourceNames` grants `configmaps` only
    /// when it names this one.
    config_map: Option<String>,
}

/// The permissions of this identity in one namespace, shared by the API adapters and the controller.
#[derive(Debug, Default)]
pub struct Access {
    inner: Mutex<Inner>,
    denied_gauge: Family<PermissionLabel, Gauge>,
    strategy_gauge: Family<StrategyLabel, Gauge>,
}

fn matches_any(list: &Option<Vec<String>>, want: &str) -> bool {
    list.iter().flatten().any(|x| x == "*" || x == want)
}

impl Access {
    /// `active` lists the optional features in use; only their missing permissions are announced.
    pub fn new(
        active: impl IntoIterator<Item = Feature>,
        denied_gauge: Family<PermissionLabel, Gauge>,
        strategy_gauge: Family<StrategyLabel, Gauge>,
    ) -> Self {
        let inner = Inner {
            active: active.into_iter().collect(),
            ..Inner::default()
        };
        Self {
            inner: Mutex::new(inner),
            denied_gauge,
            strategy_gauge,
        }
    }

    /// Every optional feature but leader election and the FailedCreate Events reader (not wired yet).
    pub fn default_features(leader_elect: bool) -> Vec<Feature> {
        let mut f = vec![
            Feature::ServerSideApply,
            Feature::Replace,
            Feature::Events,
            Feature::FailedCreateEvents,
            Feature::HealthCheck,
            Feature::QuotaCheck,
            Feature::NodeCount,
        ];
        if leader_elect {
            f.push(Feature::LeaderElection);
        }
        f
    }

    /// Turns an optional feature the config decides (the digest refresh, pull Secrets) on or off, so that only
    /// the permissions in use are announced missing.
    pub fn set_feature(&self, feature: Feature, on: bool) {
        let mut inner = self.lock();
        let changed = if on {
            inner.active.insert(feature)
        } else {
            inner.active.remove(&feature)
        };
        if changed {
            self.announce(&mut inner);
        }
    }

    /// Turns on the ConfigMap feature for the ConfigMap `name` (its permission is then checked by name).
    pub fn watch_config_map(&self, name: &str) {
        let mut inner = self.lock();
        inner.config_map = Some(name.to_owned());
        inner.active.insert(Feature::ConfigMap);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn allows_in(inner: &Inner, verb: &str, group: &str, resource: &str) -> bool {
        let key = (verb.to_owned(), group.to_owned(), resource.to_owned());
        if inner.forbidden.contains(&key) {
            return false;
        }
        let Some(rules) = &inner.rules else { return true };
        let granted = rules.iter().any(|r| {
            let names = r.resource_names.as_deref().unwrap_or_default();
            // Pull Secrets are granted by name: whether a name is among them shows when it is read.
            (names.is_empty()
                || resource == "secrets"
                || (resource == "configmaps" && inner.config_map.as_ref().is_some_and(|n| names.contains(n))))
                && r.verbs.iter().any(|v| v == "*" || v == verb)
                && matches_any(&r.api_groups, group)
                && matches_any(&r.resources, resource)
        });
        granted || inner.incomplete
    }

    /// Whether `verb` on `group`/`resource` is worth trying: granted by the last review (or not known) and
    /// not answered 403 since.
    pub fn allows(&self, verb: &str, group: &str, resource: &str) -> bool {
        Self::allows_in(&self.lock(), verb, group, resource)
    }

    /// Whether every verb a feature needs is allowed.
    pub fn feature_on(&self, feature: Feature) -> bool {
        let inner = self.lock();
        TABLE
            .iter()
            .filter(|p| p.feature == feature)
            .all(|p| p.verbs.iter().all(|v| Self::allows_in(&inner, v, p.group, p.resource)))
    }

    /// The rules of a fresh SelfSubjectRulesReview. 403s seen stay in force (the server's answer wins over
    /// the review's) until [`Access::retry`].
    pub fn learn(&self, rules: Vec<ResourceRule>, incomplete: bool) {
        let mut inner = self.lock();
        inner.rules = Some(rules);
        inner.incomplete = incomplete;
        self.announce(&mut inner);
    }

    /// Forgets the 403s seen, so what they turned off is tried again: once per health check, never in a
    /// loop. The review that follows decides what is on.
    pub fn retry(&self) {
        self.lock().forbidden.clear();
    }

    /// A 403 for `verb` on `group`/`resource`. Returns true when this is news (the caller may then review).
    pub fn forbidden(&self, verb: &str, group: &str, resource: &str) -> bool {
        let mut inner = self.lock();
        let fresh = inner
            .forbidden
            .insert((verb.to_owned(), group.to_owned(), resource.to_owned()));
        if fresh {
            self.announce(&mut inner);
        }
        fresh
    }

    pub fn strategy(&self) -> WriteStrategy {
        let inner = self.lock();
        Self::strategy_in(&inner)
    }

    fn strategy_in(inner: &Inner) -> WriteStrategy {
        WriteStrategy {
            apply: Self::allows_in(inner, "patch", "apps", "daemonsets"),
            update: Self::allows_in(inner, "update", "apps", "daemonsets"),
        }
    }

    fn missing_in(inner: &Inner) -> Vec<(Missing, (String, String, String))> {
        let mut out = Vec::new();
        for p in TABLE.iter().filter(|p| p.required || inner.active.contains(&p.feature)) {
            for verb in p.verbs {
                if !Self::allows_in(inner, verb, p.group, p.resource) {
                    let key = ((*verb).to_owned(), p.group.to_owned(), p.resource.to_owned());
                    // A verb two features use (list nodes, list pods) is missing once.
                    if out.iter().any(|(_, k)| *k == key) {
                        continue;
                    }
                    let lost = if p.required {
                        format!("required: {}", p.purpose)
                    } else {
                        p.purpose.to_owned()
                    };
                    out.push((
                        Missing {
                            verb: key.0.clone(),
                            group: key.1.clone(),
                            resource: key.2.clone(),
                            lost,
                        },
                        key,
                    ));
                }
            }
        }
        out
    }

    /// Logs each newly missing permission once (and each one granted again), updates the gauges, and
    /// announces a change of write strategy.
    fn announce(&self, inner: &mut Inner) {
        let missing = Self::missing_in(inner);
        let now: BTreeSet<_> = missing.iter().map(|(_, k)| k.clone()).collect();
        for (m, key) in &missing {
            if !inner.announced.contains(key) {
                tracing::warn!(verb = %m.verb, resource = %m.resource, group = %m.group, "permission missing: {m}");
            }
            self.denied_gauge.get_or_create(&label(key)).set(1);
        }
        for key in inner.announced.difference(&now) {
            tracing::info!(verb = %key.0, resource = %key.2, group = %key.1, "permission granted now: {} {} is back on", key.0, key.2);
            self.denied_gauge.remove(&label(key));
        }
        inner.announced = now;
        let strategy = Self::strategy_in(inner);
        if inner.strategy != Some(strategy) {
            match strategy.rolling_updates_need() {
                Some(need) => tracing::warn!(
                    strategy = strategy.name(),
                    "DaemonSet write strategy: {}; a change re-creates the DaemonSet (its pods restart at once on every node); rolling updates need {need}",
                    strategy.name()
                ),
                None => tracing::info!(
                    strategy = strategy.name(),
                    "DaemonSet write strategy: {}",
                    strategy.name()
                ),
            }
            for name in WriteStrategy::NAMES {
                let value = i64::from(name == strategy.name());
                self.strategy_gauge
                    .get_or_create(&StrategyLabel { strategy: name.into() })
                    .set(value);
            }
            inner.strategy = Some(strategy);
        }
    }

    /// The permission part of `status`.
    pub fn report(&self) -> AccessReport {
        let inner = self.lock();
        let strategy = Self::strategy_in(&inner);
        AccessReport {
            reviewed: inner.rules.is_some(),
            write_strategy: strategy.name(),
            rolling_updates_need: strategy.rolling_updates_need(),
            missing: Self::missing_in(&inner).into_iter().map(|(m, _)| m).collect(),
        }
    }
}

fn label(key: &(String, String, String)) -> PermissionLabel {
    permission_label(&key.0, &key.1, &key.2)
}

/// The `kip_permission_denied` labels of `verb` on `group`/`resource`: `resource.group`, or `resource` alone
/// for the core group. Also used by the admission webhook, which sets its gauges itself (its rows are
/// granted by name, which a SelfSubjectRulesReview cannot tell apart, so [`Access`] never announces them).
pub fn permission_label(verb: &str, group: &str, resource: &str) -> PermissionLabel {
    let resource = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    PermissionLabel {
        verb: verb.to_owned(),
        resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> ResourceRule {
        let strings = |x: &[&str]| Some(x.iter().map(|s| (*s).to_owned()).collect());
        ResourceRule {
            api_groups: strings(groups),
            resources: strings(resources),
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            resource_names: None,
        }
    }

    fn upstream() -> Vec<ResourceRule> {
        vec![
            rule(
                &["apps"],
                &["daemonsets"],
                &["create", "delete", "get", "list", "watch"],
            ),
            rule(&["apps"], &["deployments"], &["get"]),
        ]
    }

    fn access() -> Access {
        Access::new(Access::default_features(false), Family::default(), Family::default())
    }

    #[test]
    fn required_rows_are_exactly_the_upstream_role() {
        let mut required: Vec<(&str, &str, Vec<&str>)> = TABLE
            .iter()
            .filter(|p| p.required)
            .map(|p| (p.group, p.resource, p.verbs.to_vec()))
            .collect();
        for r in &mut required {
            r.2.sort_unstable();
        }
        assert_eq!(
            required,
            [
                ("apps", "daemonsets", vec!["create", "delete", "get", "list", "watch"]),
                ("apps", "deployments", vec!["get"])
            ]
        );
    }

    #[test]
    fn role_rules_merge_verbs_per_resource_and_nodes_go_to_the_cluster_role() {
        let role = rules(Scope::Namespaced);
        assert_eq!(
            role[0],
            json!({"apiGroups": ["apps"], "resources": ["daemonsets"],
                   "verbs": ["get", "list", "watch", "create", "delete", "patch", "update"]})
        );
        assert!(role.iter().all(|r| r["resources"][0] != "nodes"));
        assert_eq!(
            rules(Scope::Cluster),
            [
                json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "patch"]}),
                json!({"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}),
                json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                       "resourceNames": [DEFAULT_WEBHOOK_CONFIGURATION], "verbs": ["get", "patch"]}),
                json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                       "verbs": ["create"]}),
            ]
        );
        let yaml = manifests_yaml("kip");
        assert!(yaml.contains("kind: ClusterRole") && yaml.contains("# patch (optional): server-side apply"));
    }

    #[test]
    fn upstream_role_means_delete_then_create_and_features_off() {
        let a = access();
        assert_eq!(
            a.strategy(),
            WriteStrategy::default(),
            "unknown rules: everything is tried"
        );
        a.learn(upstream(), false);
        assert_eq!(a.strategy().name(), "delete-then-create");
        assert!(a.strategy().rolling_updates_need().is_some());
        assert!(!a.feature_on(Feature::HealthCheck));
        assert!(a.allows("watch", "apps", "daemonsets"));
        let report = a.report();
        assert!(report.rolling_updates_need.is_some());
        let missing: Vec<String> = report
            .missing
            .iter()
            .map(|m| format!("{} {}", m.verb, m.resource))
            .collect();
        assert!(missing.contains(&"patch daemonsets".to_owned()), "{missing:?}");
        assert!(missing.contains(&"list pods".to_owned()));
        assert!(!missing.iter().any(|m| m.contains("leases")), "leader election is off");
        assert_eq!(
            a.denied_gauge
                .get_or_create(&label(&("list".into(), "".into(), "pods".into())))
                .get(),
            1
        );
    }

    #[test]
    fn a_403_turns_a_verb_off_until_the_next_review_and_wildcards_grant() {
        let a = access();
        a.learn(vec![rule(&["*"], &["*"], &["*"])], false);
        assert!(a.report().missing.is_empty());
        assert!(a.forbidden("patch", "apps", "daemonsets"));
        assert!(!a.forbidden("patch", "apps", "daemonsets"), "news once");
        assert_eq!(a.strategy().name(), "update");
        assert_eq!(a.strategy().rolling_updates_need(), None, "update rolls too");
        a.learn(vec![rule(&["*"], &["*"], &["*"])], false);
        assert_eq!(
            a.strategy().name(),
            "update",
            "the server's 403 wins over the review until a retry"
        );
        a.retry();
        a.learn(vec![rule(&["*"], &["*"], &["*"])], false);
        assert_eq!(a.strategy().name(), "server-side-apply");
        // An incomplete review proves no absence: everything not forbidden is tried.
        a.learn(upstream(), true);
        assert!(a.allows("list", "", "pods"));
    }

    #[test]
    fn the_webhook_secret_is_granted_by_name_except_create() {
        let role = rules(Scope::Namespaced);
        let secrets: Vec<&Value> = role.iter().filter(|r| r["resources"][0] == "secrets").collect();
        assert_eq!(
            secrets,
            [
                &json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": [DEFAULT_WEBHOOK_SECRET],
                        "verbs": ["get", "update"]}),
                &json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}),
            ]
        );
        assert!(
            TABLE
                .iter()
                .filter(|p| p.feature == Feature::Webhook)
                .all(|p| !p.required)
        );
        let yaml = manifests_yaml("kip");
        assert_eq!(
            yaml.matches("# get, update (optional): the admission webhook's CA")
                .count(),
            1
        );
        assert!(
            !Access::default_features(true).contains(&Feature::Webhook),
            "never announced by Access"
        );
    }

    #[test]
    fn configmaps_are_granted_by_the_name_of_the_one_config_map() {
        let a = access();
        // Not turned on: a missing configmaps rule is not announced.
        a.learn(upstream(), false);
        assert!(!a.report().missing.iter().any(|m| m.resource == "configmaps"));
        a.watch_config_map("kip");
        let by_name = |name: &str| {
            let mut r = rule(&[""], &["configmaps"], &["get", "list", "watch"]);
            r.resource_names = Some(vec![name.to_owned()]);
            r
        };
        a.learn(vec![by_name("kip")], false);
        assert!(a.feature_on(Feature::ConfigMap));
        assert!(!a.report().missing.iter().any(|m| m.resource == "configmaps"));
        a.learn(vec![by_name("other")], false);
        assert!(!a.feature_on(Feature::ConfigMap));
        assert!(
            a.report()
                .missing
                .iter()
                .any(|m| m.resource == "configmaps" && m.verb == "watch")
        );
        let role = rules(Scope::Namespaced);
        let rule = role
            .iter()
            .find(|r| r["resources"][0] == "configmaps")
            .expect("configmaps rule");
        assert_eq!(rule["resourceNames"], json!([DEFAULT_CONFIG_MAP]));
        assert_eq!(rule["verbs"], json!(["get", "list", "watch"]));
    }
}
