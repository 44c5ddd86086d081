//! The pass as the controller runs it: owner and platform first, the plan and its execution, then the
//! metrics, the quota check and the announcements (log and Events, each conflict once).

use super::*;

impl Controller {
    /// One pass against `owned` (the watch cache, or a fresh list in `--once`).
    pub async fn pass(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>]) -> PassReport {
        let started = Instant::now();
        if self.platform.review_due {
            self.review_permissions(cluster.namespace()).await;
        }
        self.discover_platform().await;
        self.resolve_owner(cluster).await;
        let desired = self.desired();
        let instance = self.instance();
        let writing = desired.iter().any(|d| {
            owned
                .iter()
                .find(|l| l.name_any() == d.name())
                .and_then(|l| labels::spec_hash_of(l))
                != Some(d.hash())
        });
        let strategy = self.platform.access.strategy();
        let memory = &mut self.memory;
        let actions = reconcile::plan(&desired, owned, &instance, &memory.known, &memory.verified, strategy);
        let report = reconcile::execute(cluster, actions, &instance, &mut memory.verified, strategy).await;
        self.learn_from(&report.errors);
        self.metrics.reconciles.inc();
        self.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
        self.metrics
            .api_writes
            .get_or_create(&VerbLabel {
                verb: "reconcile".into(),
            })
            .inc_by(u64::from(report.writes));
        self.metrics.conflicts.set(report.conflicts.len() as i64);
        for e in &report.errors {
            self.metrics
                .reconcile_errors
                .get_or_create(&KindLabel { kind: e.kind().into() })
                .inc();
            tracing::warn!(error = %e, "reconcile error; will retry");
        }
        self.memory.known.extend(report.live.iter().map(|d| d.name_any()));
        // After the writes, not before: counting a new set's nodes (paged over the whole cluster) must never
        // delay a create or a repair. Checked against the objects as they were before this pass (a DaemonSet
        // just created has a zero status until the DaemonSet controller sees it); its Event is posted below.
        if writing {
            self.check_quota(cluster, owned).await;
        }
        self.announce(&report).await;
        self.reported.conflicts = report.conflicts.iter().map(|(name, _)| name.clone()).collect();
        if report.errors.is_empty() {
            self.ready.store(true, Ordering::Relaxed);
        }
        report
    }

    async fn announce(&mut self, report: &PassReport) {
        // Quota Events of sets whose DaemonSet this pass created.
        self.post_quota_events(&report.live).await;
        let find = |name: &str| report.live.iter().find(|d| d.name_any() == name);
        for (list, reason, verb) in [
            (&report.created, "Created", "created"),
            (&report.updated, "Updated", "updated to the current config"),
            (
                &report.repaired,
                "Repaired",
                "restored to the config after it was deleted or edited",
            ),
        ] {
            for name in list {
                tracing::info!(daemonset = %name, "{verb}");
                if let Some(ds) = find(name) {
                    self.events
                        .on_daemonset(ds, false, reason, format!("DaemonSet {name} {verb}"))
                        .await;
                }
            }
        }
        for name in &report.deleted {
            tracing::info!(daemonset = %name, "deleted: its set left the config");
            self.events
                .on_self(
                    false,
                    "Deleted",
                    format!("DaemonSet {name} deleted: its set left the config"),
                )
                .await;
        }
        for (name, why) in report
            .conflicts
            .iter()
            .filter(|(name, _)| !self.reported.conflicts.contains(name))
        {
            tracing::warn!(daemonset = %name, "{why}");
            self.events.on_self(true, "Conflict", why.clone()).await;
        }
    }
}
