//! The one-shot uses of the controller: `status` (reads only) and `run --once` (one pass, then exit).

use super::*;

/// What `status` prints: every set's health and the quota shortfalls.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    pub namespace: String,
    pub sets: Vec<SetHealth>,
    pub shortfalls: Vec<quota::Shortfall>,
    /// The write strategy these permissions allow and the optional permissions missing.
    pub permissions: crate::rbac::AccessReport,
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
    /// The `status` command: reads the cluster, writes nothing.
    pub async fn status(&mut self) -> Result<StatusReport, StatusError> {
        let config = Arc::new(config::load(self.settings.config_path.as_deref(), self.env.as_ref())?);
        self.set_in_force(config_map::file_version(
            self.settings.config_path.as_deref(),
            self.env.as_ref(),
        ));
        self.config = Some(config.clone());
        let cluster = self.cluster(&config.namespace);
        self.review_permissions(&config.namespace).await;
        let owned: Vec<Arc<DaemonSet>> = cluster
            .list_owned(&self.instance())
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        self.resolve_owner(&cluster).await;
        let desired = self.desired();
        let sets = status::gather(&cluster, &config, &desired, &owned).await;
        let shortfalls = self.check_quota(&cluster, &owned).await;
        Ok(StatusReport {
            namespace: config.namespace.clone(),
            sets,
            shortfalls,
            permissions: self.access.report(),
            config: self.in_force.clone(),
        })
    }
}

/// `--once`: load, one pass against a fresh list, a health summary, and an exit status.
pub async fn run_once(mut controller: Controller) -> bool {
    controller.read_config_map_once().await;
    controller.reload().await;
    let Some(config) = controller.config.clone() else {
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
    for h in controller.health_check(&cluster, &report.live, false).await {
        println!("{}", h.summary());
    }
    report.is_clean()
}
