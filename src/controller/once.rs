//! The one-shot uses of the controller: `status` (reads only) and `run --once` (one pass, then exit).

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

impl Controller {
    /// The `status` command: reads the cluster, writes nothing. The answer does not depend on the caller's
    /// environment: the spec hash leaves the owner reference out (so no owner is looked up), and without a
    /// local `deployment_name` the instance is read from the live DaemonSets of the config's sets.
    pub async fn status(&mut self) -> Result<StatusReport, StatusError> {
        let mut config = config::load(self.settings.config_path.as_deref(), self.env.as_ref())?;
        self.set_in_force(config_map::file_version(
            self.settings.config_path.as_deref(),
            self.env.as_ref(),
        ));
        let cluster = self.cluster(&config.namespace);
        self.review_permissions(&config.namespace).await;
        let managed = cluster.list_managed().await?;
        if config.deployment_name.is_none() {
            config.deployment_name = live_instance(&config, &managed);
        }
        let config = Arc::new(config);
        self.cfg.config = Some(config.clone());
        let instance = self.instance();
        let owned: Vec<Arc<DaemonSet>> = managed
            .into_iter()
            .filter(|d| reconcile::is_owned(d, &instance))
            .map(Arc::new)
            .collect();
        let desired = self.desired();
        let sets = status::gather(&cluster, &config, &desired, &owned).await;
        let quota = self.quota_check(&cluster, &owned).await;
        Ok(StatusReport {
            namespace: config.namespace.clone(),
            sets,
            permissions: self.platform.access.report(),
            shortfalls: quota.shortfalls,
            quota_totals: quota.totals,
            config: self.cfg.version.clone(),
        })
    }
}

/// `--once`: load, one pass against a fresh list, a health summary, and an exit status.
pub async fn run_once(mut controller: Controller) -> bool {
    controller.read_config_map_once().await;
    controller.reload().await;
    let Some(config) = controller.cfg.config.clone() else {
        return false;
    };
    let cluster = controller.cluster(&config.namespace);
    let owned = match cluster.list_owned(&controller.instance()).await {
        Ok(list) => list.into_iter().map(Arc::new).collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list DaemonSets");
            return false;
        }
    };
    let report = controller.pass(&cluster, &owned).await;
    println!("{}", report.summary());
    for e in &report.errors {
        println!("error: {e}");
    }
    for (_, why) in &report.conflicts {
        println!("conflict: {why}");
    }
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
    let mut refused = false;
    for h in controller.health_check(&cluster, &live, false).await {
        println!("{}", h.summary());
        refused |= h.not_created.is_some();
    }
    // Pods the API refuses (quota, Pod Security, LimitRange) are a failure of this run, like an API error.
    report.is_clean() && !refused
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
