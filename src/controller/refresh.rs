//! The digest check of sets with `refresh = "digest"`: every `refresh_check_interval` each moving tag is
//! resolved once (`registry::Resolver`: one manifest HEAD, kept until the next check), compared with the
//! digest each node's cache container runs, reported (status, metrics, log, Events), and the nodes that
//! differ are refreshed (`freshness::plan`). While refreshes are going, the step repeats every few seconds
//! without asking the registry again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;
use crate::config::{ImageSet, Refresh};
use crate::freshness::{self, ImageFreshness, RefreshPlan, RegistryAnswer, Tally};
use crate::metrics::SetLabel;
use crate::registry::{self, Resolver};

/// Delay between the steps of a refresh in progress (refresh pods pulling, cache pods replaced).
pub(super) const REFRESH_STEP: Duration = Duration::from_secs(3);
/// The first digest check after a session starts: after the first pass has written the DaemonSets.
pub(super) const FIRST_DIGEST_CHECK: Duration = Duration::from_secs(20);

/// Whether a set's moving tags are kept current by the digest check.
pub fn checks_digests(set: &ImageSet) -> bool {
    set.refresh == Refresh::Digest && set.images.iter().any(|i| !i.is_pinned())
}

/// The registry's answer for each image of `set` (pinned ones without a request), with the credentials of
/// the set's pull Secrets (`payloads`: their `.dockerconfigjson` bytes).
pub async fn registry_answers(resolver: &Resolver, set: &ImageSet, payloads: &[Vec<u8>]) -> Vec<RegistryAnswer> {
    let asks = set.images.iter().map(|image| async move {
        if image.is_pinned() {
            return RegistryAnswer::Pinned;
        }
        let host = registry::ImageRef::parse(&image.reference)
            .map(|r| r.host().to_owned())
            .unwrap_or_default();
        let credentials = registry::credentials_for(&host, payloads);
        match resolver.resolve(&image.reference, credentials.as_ref()).await {
            Ok(digest) => RegistryAnswer::Digest(digest),
            Err(e) => RegistryAnswer::Failed(e),
        }
    });
    futures::future::join_all(asks).await
}

/// The payloads of `set`'s pull Secrets that could be read; a 403 turns the feature off (announced once).
pub async fn pull_secret_payloads(cluster: &Cluster, set: &ImageSet) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if !cluster.access().allows("get", "", "secrets") {
        return out;
    }
    for name in &set.image_pull_secrets {
        match cluster.pull_secret(name).await {
            Ok(Some(bytes)) => out.push(bytes),
            Ok(None) => tracing::debug!(secret = %name, "pull Secret missing or without Docker credentials"),
            Err(e) if e.is_forbidden() => break,
            Err(e) => tracing::warn!(error = %e, "cannot read a pull Secret; its registry is asked anonymously"),
        }
    }
    out
}

/// One set's answers and its cache pods tallied against them (pods read page by page).
pub async fn tally_set(
    cluster: &Cluster,
    set: &ImageSet,
    answers: &[RegistryAnswer],
    refreshed: &freshness::Refreshed,
) -> Result<Tally, crate::k8s::KubeError> {
    let mut tally = Tally::new(set.images.len());
    cluster
        .for_each_pod_page(&health::pod_selector(&set.name), |pods| {
            tally.add_pods(set, answers, refreshed, pods)
        })
        .await?;
    Ok(tally)
}

impl Controller {
    /// One step of the digest check: `fresh` asks the registry again (a new interval), otherwise its answers
    /// of this interval are used. Returns true while refreshes are going (the caller steps again soon).
    pub async fn digest_check(&mut self, cluster: &Cluster, owned: &[Arc<DaemonSet>], fresh: bool) -> bool {
        let Some(config) = self.cfg.config.clone() else {
            return false;
        };
        let sets: Vec<&ImageSet> = config.sets.iter().filter(|s| checks_digests(s)).collect();
        let access = cluster.access().clone();
        access.set_feature(Feature::DigestRefresh, !sets.is_empty());
        access.set_feature(
            Feature::PullSecrets,
            sets.iter().any(|s| !s.image_pull_secrets.is_empty()),
        );
        if fresh {
            self.resolver.invalidate_all();
            self.reported.pull_secrets.clear();
        }
        let mut in_progress = false;
        let mut lines = Vec::new();
        for set in sets {
            let Some(ds) = owned.iter().find(|d| d.name_any() == set.name) else {
                continue;
            };
            if !self.reported.pull_secrets.contains_key(&set.name) {
                let payloads = pull_secret_payloads(cluster, set).await;
                self.reported.pull_secrets.insert(set.name.clone(), payloads);
            }
            let payloads = self.reported.pull_secrets.get(&set.name).cloned().unwrap_or_default();
            let answers = registry_answers(&self.resolver, set, &payloads).await;
            // Refreshes to a digest the registry no longer names are forgotten.
            let refreshed = self.reported.refreshed_to.entry(set.name.clone()).or_default();
            refreshed.retain(|(_, image), digest| {
                let i = set.images.iter().position(|i| &i.name == image);
                matches!(i.and_then(|i| answers.get(i)), Some(RegistryAnswer::Digest(d)) if d == digest)
            });
            let refreshed = refreshed.clone();
            let tally = match tally_set(cluster, set, &answers, &refreshed).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(set = %set.name, error = %e, "digest check: cannot read the set's pods");
                    continue;
                }
            };
            if access.feature_on(Feature::DigestRefresh) {
                let selector = render::refresh_selector(&self.instance(), &set.name);
                match cluster.refresh_pods(&selector).await {
                    Ok(pods) => {
                        let pods: Vec<_> = pods.iter().filter_map(freshness::refresh_pod_of).collect();
                        let plan = freshness::plan(&tally, &pods);
                        in_progress |= plan.in_progress;
                        self.execute_refresh(cluster, &config, set, ds, &plan, &answers).await;
                    }
                    Err(e) => tracing::warn!(set = %set.name, error = %e, "digest check: cannot list refresh pods"),
                }
            }
            let report = freshness::report(set, &answers, &tally);
            self.report_freshness(ds, &report, fresh).await;
            lines.extend(report);
        }
        self.metrics.record_freshness(&lines);
        in_progress
    }

    /// Creates the planned refresh pods, replaces the cache pods of nodes refreshed, removes finished
    /// refresh pods. Each failure is logged; the next step or check tries again.
    async fn execute_refresh(
        &mut self,
        cluster: &Cluster,
        config: &Config,
        set: &ImageSet,
        ds: &DaemonSet,
        plan: &RefreshPlan,
        answers: &[RegistryAnswer],
    ) {
        let options = RenderOptions {
            openshift: self.platform.openshift.unwrap_or(false),
            owner: None,
        };
        let owner = ds.uid().map(|uid| OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: set.name.clone(),
            uid,
            controller: Some(false),
            block_owner_deletion: Some(false),
        });
        for (node, images) in &plan.create {
            // A 403 on the first create turns the feature off: the rest of the plan is not tried.
            if !cluster.access().allows("create", "", "pods") {
                break;
            }
            let images: Vec<&crate::config::Image> = images.iter().filter_map(|i| set.images.get(*i)).collect();
            let pod = render::refresh_pod(config, set, node, &images, owner.clone(), &options);
            let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
            match cluster.create_pod(&pod).await {
                Ok(()) => {
                    tracing::info!(set = %set.name, %node, images = ?names, "refreshing: pulling changed tags on the node");
                    self.count_write("create");
                }
                Err(e) => tracing::warn!(set = %set.name, %node, error = %e, "cannot create a refresh pod"),
            }
        }
        for (node, pod, images) in &plan.replace {
            if !cluster.access().allows("delete", "", "pods") {
                break;
            }
            match cluster.delete_pod(pod).await {
                Ok(()) => {
                    let refreshed = self.reported.refreshed_to.entry(set.name.clone()).or_default();
                    for i in images {
                        if let (Some(image), Some(RegistryAnswer::Digest(d))) = (set.images.get(*i), answers.get(*i)) {
                            refreshed.insert((node.clone(), image.name.clone()), d.clone());
                        }
                    }
                    self.count_write("delete");
                    self.metrics
                        .refreshed_nodes
                        .get_or_create(&SetLabel { set: set.name.clone() })
                        .inc();
                    let note = format!("cache pod {pod} replaced: its node pulled the changed tags");
                    tracing::info!(set = %set.name, "{note}");
                    self.events.on_daemonset(ds, false, "Refreshed", note).await;
                }
                Err(e) => tracing::warn!(set = %set.name, error = %e, "cannot replace a refreshed cache pod"),
            }
        }
        for (node, why) in &plan.failed {
            self.metrics
                .refresh_failures
                .get_or_create(&SetLabel { set: set.name.clone() })
                .inc();
            let note = format!("refresh on node {node} failed (tried again at the next check): {why}");
            tracing::warn!(set = %set.name, "{note}");
            self.events.on_daemonset(ds, true, "RefreshFailed", note).await;
        }
        for pod in &plan.remove {
            if !cluster.access().allows("delete", "", "pods") {
                break;
            }
            if let Err(e) = cluster.delete_pod(pod).await {
                tracing::warn!(set = %set.name, error = %e, "cannot delete a finished refresh pod");
            } else {
                self.count_write("delete");
            }
        }
    }

    fn count_write(&self, verb: &str) {
        self.metrics
            .api_writes
            .get_or_create(&VerbLabel { verb: verb.into() })
            .inc();
    }

    /// Logs and posts an Event for each image whose registry state changed (a failure, or back to normal);
    /// stale nodes are logged at each fresh check.
    async fn report_freshness(&mut self, ds: &DaemonSet, report: &[ImageFreshness], fresh: bool) {
        for line in report {
            let key = (line.set.clone(), line.image.clone());
            let failure = line.failure_reason().map(str::to_owned);
            let before = self.reported.registry_failures.get(&key).cloned();
            match (&failure, before) {
                (Some(reason), b) if b.as_deref() != Some(reason.as_str()) => {
                    tracing::warn!(set = %line.set, image = %line.image, "{line}");
                    self.events
                        .on_daemonset(ds, true, "RegistryCheckFailed", line.to_string())
                        .await;
                    self.reported.registry_failures.insert(key, reason.clone());
                }
                (None, Some(_)) => {
                    tracing::info!(set = %line.set, image = %line.image, "registry answers again: {line}");
                    self.reported.registry_failures.remove(&key);
                }
                _ => {}
            }
            if fresh && matches!(line.freshness, freshness::Freshness::Stale { .. }) {
                tracing::info!(set = %line.set, image = %line.image, "{line}");
            }
        }
    }
}
