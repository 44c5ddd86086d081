//! The one-shot uses: `status` (reads only, no controller) and `run --once` (one pass, then exit); both
//! return a report value that the caller prints.

use super::*;

/// What `status` prints: every set's health and the quota shortfalls (per set, and the totals).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    pub namespace: String,
    pub sets: Vec<SetHealth>,
    pub shortfalls: Vec<quota::Shortfall>,
    /// The write strategy these permissions allow and the optional permissions missing.
    pub permissions: crate::rbac::AccessReport,
    pub quota_totals: Vec<quota::QuotaTotal>,
    /// The config version this report was made with (the file's or variables' content hash).
    pub config: Option<ConfigVersion>,
    /// Per moving tag of the `refresh = "digest"` sets: the registry's digest against the nodes'. A registry
    /// that cannot be asked is reported, not a failure: the nodes keep their cache.
    pub freshness: Vec<crate::freshness::ImageFreshness>,
    /// The warm gate (`[warm_gate]`): warm nodes counted, cold ones listed; None when off or unreadable.
    pub warm: Option<crate::warmth::WarmSummary>,
}

impl StatusReport {
    pub fn is_healthy(&self) -> bool {
        self.shortfalls.is_empty() && self.sets.iter().all(SetHealth::is_healthy)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Kube(#[from] crate::k8s::KubeError),
}

/// The `status` command: reads the cluster, writes nothing, and needs no controller. The answer does not
/// depend on the caller's environment: the spec hash leaves the owner reference out (so no owner is looked
/// up), and without a local `deployment_name` the instance is read from the live DaemonSets of the config's
/// sets.
pub async fn status(
    client: Client,
    config_path: Option<&std::path::Path>,
    env: &dyn VarSource,
) -> Result<StatusReport, StatusError> {
    let mut config = config::load(config_path, env)?;
    let version = config_map::file_version(config_path, env);
    // A throwaway Access: the gauges it updates belong to no registry.
    let access = Arc::new(Access::new(
        Access::default_features(false),
        Default::default(),
        Default::default(),
    ));
    let cluster = Cluster::with_access(client, &config.namespace, access.clone());
    // Without an answer every read is tried and a 403 says what is missing.
    let _ = ask_permissions(cluster.client(), &access, &config.namespace).await;
    let managed = cluster.list_managed().await?;
    if config.deployment_name.is_none() {
        config.deployment_name = live_instance(&config, &managed);
    }
    let instance = render::instance(&config).to_owned();
    let owned: Vec<Arc<DaemonSet>> = managed
        .into_iter()
        .filter(|d| labels::is_owned(d, &instance))
        .map(Arc::new)
        .collect();
    let options = RenderOptions {
        openshift: detect_openshift(cluster.client()).await.unwrap_or(false),
        owner: None,
    };
    let config = Arc::new(config);
    let desired = render::desired(&config, &options);
    let sets = status::gather(&cluster, &config, &desired, &owned).await;
    let quota = checks::quota_check(&cluster, &config, &owned).await;
    let resolver = resolver_for(plain_http_registries());
    let mut freshness = Vec::new();
    for set in config.sets.iter().filter(|s| refresh::checks_digests(s)) {
        let payloads = refresh::pull_secret_payloads(&cluster, set).await;
        let answers = refresh::registry_answers(&resolver, set, &payloads).await;
        // A one-shot knows of no earlier refresh (see `freshness::Tally::add_pods`).
        if let Ok(tally) = refresh::tally_set(&cluster, set, &answers, &Default::default()).await {
            freshness.extend(crate::freshness::report(set, &answers, &tally));
        }
    }
    let mut warm = None;
    if let Some(gate) = &config.warm_gate {
        access.set_feature(Feature::WarmGate, true);
        access.set_feature(Feature::WarmGateTaint, gate.taint.is_some());
        match warm::survey(&cluster, &config, &[], gate, Timestamp::now()).await {
            Ok(survey) => warm = Some(crate::warmth::summarize(&survey.verdicts, Timestamp::now())),
            Err(e) => tracing::debug!(error = %e, "status: cannot read the warm gate's nodes"),
        }
    }
    Ok(StatusReport {
        warm,
        freshness,
        namespace: config.namespace.clone(),
        sets,
        permissions: access.report(),
        shortfalls: quota.shortfalls,
        quota_totals: quota.totals,
        config: Some(version),
    })
}

/// What `run --once` did: its pass and every set's health afterwards. Printed by the caller.
#[derive(Debug, Default)]
pub struct OnceReport {
    /// None when no config was in force or the DaemonSets could not be listed (said in the log).
    pub pass: Option<PassReport>,
    pub sets: Vec<SetHealth>,
}

impl OnceReport {
    /// Whether the run succeeded: a clean pass, and no set whose pods the API refuses (quota, Pod Security,
    /// LimitRange), which fails the run like an API error.
    pub fn ok(&self) -> bool {
        self.pass.as_ref().is_some_and(PassReport::is_clean) && self.sets.iter().all(|h| h.not_created.is_none())
    }
}

impl std::fmt::Display for OnceReport {
    /// The pass summary, its errors and conflicts, then one line per set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(pass) = &self.pass {
            writeln!(f, "{}", pass.summary())?;
            for e in &pass.errors {
                writeln!(f, "error: {e}")?;
            }
            for (_, why) in &pass.conflicts {
                writeln!(f, "conflict: {why}")?;
            }
        }
        for h in &self.sets {
            writeln!(f, "{}", h.summary())?;
        }
        Ok(())
    }
}

/// `--once`: load, one pass against a fresh list, and every set's health.
pub async fn run_once(mut controller: Controller) -> OnceReport {
    controller.read_config_map_once().await;
    controller.reload().await;
    let Some(config) = controller.cfg.config.clone() else {
        return OnceReport::default();
    };
    let cluster = controller.cluster(&config.namespace);
    let owned = match cluster.list_owned(&controller.instance()).await {
        Ok(list) => list.into_iter().map(Arc::new).collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list DaemonSets");
            return OnceReport::default();
        }
    };
    let report = controller.pass(&cluster, &owned).await;
    let live = if report.writes > 0 {
        // Give the DaemonSet controller a moment to create (or fail to create) the pods, so the summary can
        // name what the API refused.
        tokio::time::sleep(ONCE_SETTLE).await;
        match cluster.list_owned(&controller.instance()).await {
            Ok(list) => list.into_iter().map(Arc::new).collect(),
            Err(_) => report.live.clone(),
        }
    } else {
        report.live.clone()
    };
    let sets = controller.health_check(&cluster, &live, false).await;
    OnceReport {
        pass: Some(report),
        sets,
    }
}

/// How long `--once` waits after writing before it reads the DaemonSets' status and Events.
const ONCE_SETTLE: Duration = Duration::from_secs(2);

/// The instance label the controller gave the DaemonSets of the config's sets, when the caller's config does
/// not name a Deployment (the controller's DEPLOYMENT_NAME is not in this environment): the one label value
/// they all carry, unless it is the default.
fn live_instance(config: &Config, managed: &[DaemonSet]) -> Option<String> {
    let mut found = managed
        .iter()
        .filter(|d| config.sets.iter().any(|s| s.name == d.name_any()))
        .filter_map(|d| d.labels().get(labels::INSTANCE));
    let first = found.next()?;
    (found.all(|i| i == first) && first != labels::MANAGER).then(|| first.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_report_prints_the_pass_its_conflicts_and_each_set() {
        let pass = PassReport {
            created: vec!["a".into()],
            unchanged: vec!["b".into()],
            conflicts: vec![("c".into(), "a DaemonSet named \"c\" already exists".into())],
            ..PassReport::default()
        };
        let report = OnceReport {
            pass: Some(pass),
            sets: vec![health::from_daemonset("c", None, None)],
        };
        assert_eq!(
            report.to_string(),
            "created 1, updated 0, repaired 0, deleted 0, unchanged 1, conflicts 1, errors 0\n\
             conflict: a DaemonSet named \"c\" already exists\n\
             set c: DaemonSet missing\n"
        );
        assert!(!report.ok(), "a conflict fails the run");
    }

    #[test]
    fn once_report_fails_without_a_pass_or_with_refused_pods() {
        assert!(!OnceReport::default().ok(), "no config or no list: nothing was done");
        assert_eq!(OnceReport::default().to_string(), "");
        let clean = OnceReport {
            pass: Some(PassReport::default()),
            sets: vec![health::from_daemonset("a", None, None)],
        };
        assert!(clean.ok());
        let mut refused = health::from_daemonset("a", None, None);
        refused.not_created = Some(health::NotCreated {
            reason: "FailedCreate".into(),
            cause: "quota".into(),
            ..Default::default()
        });
        let refused = OnceReport {
            pass: Some(PassReport::default()),
            sets: vec![refused],
        };
        assert!(!refused.ok(), "pods the API refuses fail the run");
    }
}
