//! Whether each node's cache holds what the registry says a moving tag is now, and which refreshes that
//! calls for. Pure: the registry's answers, the cache pods and the refresh pods come in; a report and a
//! plan go out (`controller::refresh` asks and acts, `k8s/` writes).
//!
//! A node's digest of an image is its cache container's `imageID` (`repo@sha256:…`, what the runtime started).
//! A node is stale for an image when that digest is not the registry's. A stale node gets one refresh pod
//! (`render::refresh_pod`: the stale tags pulled with pull policy Always, so the node's tag moves, then exit);
//! once it has succeeded the node's cache pod is deleted, and the DaemonSet's new pod starts from the new
//! content without the registry (IfNotPresent). At most [`REFRESH_PARALLELISM`] nodes of a set at once.
//! Only moving tags whose registry answer is a digest count: a registry that cannot be asked never
//! causes a refresh, a deletion or a roll.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::ImageSet;
use crate::health::{ContainerView, PodView};
use crate::labels;
use crate::registry::{Digest, ErrorKind, RegistryError};

/// Nodes of one set refreshed at once: each makes one pull per stale image from the registry.
pub const REFRESH_PARALLELISM: usize = 10;

/// The digest a container runs, from its `imageID` (`registry/repo@sha256:…`; older runtimes prefix
/// `docker-pullable://`). None without a repository digest (an image ID alone, or not started yet).
pub fn digest_of_image_id(image_id: &str) -> Option<Digest> {
    let (_, digest) = image_id.rsplit_once('@')?;
    Digest::parse(digest)
}

/// What the registry said of one image of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAnswer {
    /// Pinned by digest: never asked, never refreshed.
    Pinned,
    Digest(Digest),
    Failed(RegistryError),
}

/// Per image of a set (in the set's order): counts of nodes by what their cache holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCounts {
    /// Nodes whose cache container runs the registry's digest.
    pub current: u32,
    /// Nodes whose cache container runs another digest.
    pub stale: u32,
    /// Nodes whose container has no digest yet (pulling, not started).
    pub unknown: u32,
    /// Nodes whose container runs a digest (whatever the registry says): cached there.
    pub cached: u32,
}

/// One cache pod holding at least one stale image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleNode {
    pub pod: String,
    /// Indexes into the set's images.
    pub images: Vec<usize>,
}

/// The cache pods of one set, read page by page: only the counts and the stale nodes are kept.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub counts: Vec<ImageCounts>,
    /// Node → its stale cache pod.
    pub stale: BTreeMap<String, StaleNode>,
}

impl Tally {
    pub fn new(images: usize) -> Self {
        Self {
            counts: vec![ImageCounts::default(); images],
            stale: BTreeMap::new(),
        }
    }

    /// Adds one page of the set's cache pods. Only running pods this tool labelled count. `refreshed`: per
    /// (node, image name), the registry digest the node was refreshed to; its cache container counts as
    /// current at that digest whatever digest it reports, since containerd names an image by its config and
    /// reports any one of the manifest digests that share it (so one refresh per node and new digest, never a
    /// loop).
    pub fn add_pods(&mut self, set: &ImageSet, answers: &[RegistryAnswer], refreshed: &Refreshed, pods: &[PodView]) {
        for pod in pods {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            let owned = pod
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER));
            let status = pod.status.as_ref();
            if !owned || status.and_then(|s| s.phase.as_deref()) != Some("Running") {
                continue;
            }
            let containers: &[ContainerView] = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or(&[]);
            let mut stale = Vec::new();
            for (i, image) in set.images.iter().enumerate() {
                let digest = containers
                    .iter()
                    .find(|c| c.name == image.name)
                    .and_then(|c| digest_of_image_id(&c.image_id));
                let counts = &mut self.counts[i];
                let Some(digest) = digest else {
                    counts.unknown += 1;
                    continue;
                };
                counts.cached += 1;
                match answers.get(i) {
                    Some(RegistryAnswer::Digest(want))
                        if *want == digest || refreshed.get(&(node.to_owned(), image.name.clone())) == Some(want) =>
                    {
                        counts.current += 1
                    }
                    Some(RegistryAnswer::Digest(_)) => {
                        counts.stale += 1;
                        stale.push(i);
                    }
                    _ => {}
                }
            }
            if !stale.is_empty() {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                self.stale.insert(
                    node.to_owned(),
                    StaleNode {
                        pod: pod_name,
                        images: stale,
                    },
                );
            }
        }
    }
}

/// Per (node, image name): the registry digest that node was refreshed to.
pub type Refreshed = BTreeMap<(String, String), Digest>;

/// A refresh pod as read back: its node and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPod {
    pub name: String,
    pub node: String,
    pub progress: RefreshProgress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshProgress {
    /// Scheduled, pulling or running.
    Going,
    /// Every container pulled and exited 0.
    Succeeded,
    /// A pull failed (ErrImagePull, ImagePullBackOff...) or the pod failed: the reason and message.
    Failed(String),
}

/// Reads a refresh pod (a full Pod: they are few, one per refreshing node).
pub fn refresh_pod_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<RefreshPod> {
    let name = pod.metadata.name.clone()?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).or_else(|| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::render::REFRESH_NODE).cloned())
    })?;
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let waiting_failure = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            is_pull_failure(reason).then(|| format!("{}: {reason}: {}", c.image, w.message.as_deref().unwrap_or("")))
        })
        .next();
    let progress = match (phase, waiting_failure) {
        ("Succeeded", _) => RefreshProgress::Succeeded,
        ("Failed", _) => RefreshProgress::Failed(
            status
                .and_then(|s| s.message.clone().or_else(|| s.reason.clone()))
                .unwrap_or_else(|| "the refresh pod failed".into()),
        ),
        (_, Some(why)) => RefreshProgress::Failed(why),
        _ => RefreshProgress::Going,
    };
    Some(RefreshPod { name, node, progress })
}

/// Waiting reasons that mean the pull will not succeed by waiting a few seconds more.
fn is_pull_failure(reason: &str) -> bool {
    matches!(
        reason,
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" | "CreateContainerError"
    )
}

/// What to do for one set now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshPlan {
    /// Refresh pods to create: node and the indexes of its stale images.
    pub create: Vec<(String, Vec<usize>)>,
    /// Cache pods to delete (their node's refresh pod succeeded): node, pod, and the indexes of the images
    /// refreshed. The DaemonSet starts a new pod from the new content.
    pub replace: Vec<(String, String, Vec<usize>)>,
    /// Refresh pods to delete: done, failed or no longer needed.
    pub remove: Vec<String>,
    /// Refreshes that failed: node and why.
    pub failed: Vec<(String, String)>,
    /// Refreshes still going (or just planned): look again in a few seconds.
    pub in_progress: bool,
}

/// The plan for one set from its stale nodes and its refresh pods.
pub fn plan(tally: &Tally, refresh_pods: &[RefreshPod]) -> RefreshPlan {
    let mut plan = RefreshPlan::default();
    let mut going = 0usize;
    for pod in refresh_pods {
        match &pod.progress {
            RefreshProgress::Going if tally.stale.contains_key(&pod.node) => going += 1,
            // Not needed any more (the node's cache pod was replaced meanwhile, or the node went).
            RefreshProgress::Going => plan.remove.push(pod.name.clone()),
            RefreshProgress::Succeeded => {
                if let Some(stale) = tally.stale.get(&pod.node) {
                    plan.replace
                        .push((pod.node.clone(), stale.pod.clone(), stale.images.clone()));
                }
                plan.remove.push(pod.name.clone());
            }
            RefreshProgress::Failed(why) => {
                plan.failed.push((pod.node.clone(), why.clone()));
                plan.remove.push(pod.name.clone());
            }
        }
    }
    // Nodes with a refresh pod (whatever its state) get no new one in this step: a failed one is retried at
    // the next check, not in a loop.
    let budget = REFRESH_PARALLELISM.saturating_sub(going);
    plan.create = tally
        .stale
        .iter()
        .filter(|(node, _)| !refresh_pods.iter().any(|p| &p.node == *node))
        .take(budget)
        .map(|(node, s)| (node.clone(), s.images.clone()))
        .collect();
    plan.in_progress = going > 0 || !plan.create.is_empty() || !plan.replace.is_empty();
    plan
}

/// What `status`, the metrics and the log say of one image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Freshness {
    /// Pinned by digest.
    Pinned,
    /// Every node with a digest runs the registry's.
    Current { digest: String, nodes: u32 },
    /// Some nodes run another digest (a refresh follows).
    Stale {
        digest: String,
        stale_nodes: u32,
        nodes: u32,
    },
    /// The registry could not tell; the nodes keep what they have.
    RegistryFailed {
        reason: String,
        message: String,
        cached_nodes: u32,
    },
}

/// One image's line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageFreshness {
    pub set: String,
    pub image: String,
    pub reference: String,
    #[serde(flatten)]
    pub freshness: Freshness,
}

impl ImageFreshness {
    /// The metric label of a registry failure, if any.
    pub fn failure_reason(&self) -> Option<&str> {
        match &self.freshness {
            Freshness::RegistryFailed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for ImageFreshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (set, image, reference) = (&self.set, &self.image, &self.reference);
        match &self.freshness {
            Freshness::Pinned => write!(f, "set {set} image {image} ({reference}): pinned by digest"),
            Freshness::Current { digest, nodes } => {
                write!(
                    f,
                    "set {set} image {image} ({reference}): current on {nodes} node(s) ({digest})"
                )
            }
            Freshness::Stale {
                digest,
                stale_nodes,
                nodes,
            } => write!(
                f,
                "set {set} image {image} ({reference}): stale on {stale_nodes} of {nodes} node(s); the registry has {digest}"
            ),
            Freshness::RegistryFailed {
                reason,
                message,
                cached_nodes,
            } => write!(
                f,
                "set {set} image {image} ({reference}): cached on {cached_nodes} node(s); registry {reason}: {message}"
            ),
        }
    }
}

/// The reason label of a registry failure, as the operators read it.
pub fn reason_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Unreachable => "unreachable",
        other => other.as_str(),
    }
}

/// Every image's line for one set.
pub fn report(set: &ImageSet, answers: &[RegistryAnswer], tally: &Tally) -> Vec<ImageFreshness> {
    set.images
        .iter()
        .zip(answers)
        .zip(&tally.counts)
        .map(|((image, answer), counts)| {
            let freshness = match answer {
                RegistryAnswer::Pinned => Freshness::Pinned,
                RegistryAnswer::Digest(d) if counts.stale == 0 => Freshness::Current {
                    digest: d.as_str().to_owned(),
                    nodes: counts.current,
                },
                RegistryAnswer::Digest(d) => Freshness::Stale {
                    digest: d.as_str().to_owned(),
                    stale_nodes: counts.stale,
                    nodes: counts.cached,
                },
                RegistryAnswer::Failed(e) => Freshness::RegistryFailed {
                    reason: reason_label(e.kind).to_owned(),
                    message: e.to_string(),
                    cached_nodes: counts.cached,
                },
            };
            ImageFreshness {
                set: set.name.clone(),
                image: image.name.clone(),
                reference: image.reference.clone(),
                freshness,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Image;
    use crate::health::{PodSpecView, PodStatusView};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn set() -> ImageSet {
        ImageSet {
            name: "general".into(),
            images: vec![
                Image {
                    name: "ide".into(),
                    reference: "reg.example/ide:next".into(),
                },
                Image {
                    name: "pinned".into(),
                    reference: format!("reg.example/p@{OLD}"),
                },
            ],
            ..ImageSet::default()
        }
    }

    fn pod(name: &str, node: &str, phase: &str, ide_digest: Option<&str>) -> PodView {
        let container = |n: &str, id: Option<&str>| ContainerView {
            name: n.into(),
            image_id: id.map(|d| format!("reg.example/x@{d}")).unwrap_or_default(),
            ..ContainerView::default()
        };
        PodView {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(labels::MANAGED_BY.into(), labels::MANAGER.into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpecView {
                node_name: Some(node.into()),
            }),
            status: Some(PodStatusView {
                phase: Some(phase.into()),
                container_statuses: Some(vec![container("ide", ide_digest), container("pinned", Some(OLD))]),
                ..PodStatusView::default()
            }),
        }
    }

    fn answers(ide: &str) -> Vec<RegistryAnswer> {
        vec![
            RegistryAnswer::Digest(Digest::parse(ide).unwrap()),
            RegistryAnswer::Pinned,
        ]
    }

    fn tally(answers: &[RegistryAnswer], pods: &[PodView]) -> Tally {
        let mut t = Tally::new(2);
        t.add_pods(&set(), answers, &Refreshed::new(), pods);
        t
    }

    #[test]
    fn image_ids_give_digests_with_or_without_a_runtime_prefix() {
        assert_eq!(
            digest_of_image_id(&format!("docker-pullable://reg/x@{NEW}"))
                .unwrap()
                .as_str(),
            NEW
        );
        assert_eq!(
            digest_of_image_id(&format!("127.0.0.1:5000/a/b@{OLD}"))
                .unwrap()
                .as_str(),
            OLD
        );
        assert_eq!(
            digest_of_image_id(NEW),
            None,
            "an image ID alone is not a repository digest"
        );
        assert_eq!(digest_of_image_id(""), None);
    }

    #[test]
    fn nothing_changed_means_no_refresh_and_every_node_current() {
        let a = answers(OLD);
        let t = tally(
            &a,
            &[
                pod("p1", "n1", "Running", Some(OLD)),
                pod("p2", "n2", "Running", Some(OLD)),
            ],
        );
        let p = plan(&t, &[]);
        assert_eq!(p, RefreshPlan::default());
        let r = report(&set(), &a, &t);
        assert_eq!(
            r[0].freshness,
            Freshness::Current {
                digest: OLD.into(),
                nodes: 2
            }
        );
        assert_eq!(r[1].freshness, Freshness::Pinned);
    }

    #[test]
    fn a_new_digest_refreshes_only_the_nodes_that_differ() {
        let a = answers(NEW);
        let t = tally(
            &a,
            &[
                pod("p1", "n1", "Running", Some(OLD)),
                pod("p2", "n2", "Running", Some(NEW)),
                pod("p3", "n3", "Running", None),
                pod("p4", "n4", "Pending", Some(OLD)),
            ],
        );
        let p = plan(&t, &[]);
        assert_eq!(p.create, vec![("n1".to_owned(), vec![0])]);
        assert!(p.replace.is_empty() && p.remove.is_empty() && p.in_progress);
        let r = report(&set(), &a, &t);
        assert_eq!(
            r[0].freshness,
            Freshness::Stale {
                digest: NEW.into(),
                stale_nodes: 1,
                nodes: 2
            }
        );
        assert!(r[0].to_string().contains("stale on 1 of 2 node(s)"), "{}", r[0]);
    }

    #[test]
    fn a_succeeded_refresh_replaces_the_cache_pod_and_a_failed_one_is_reported_not_retried_at_once() {
        let a = answers(NEW);
        let t = tally(
            &a,
            &[
                pod("p1", "n1", "Running", Some(OLD)),
                pod("p2", "n2", "Running", Some(OLD)),
            ],
        );
        let done = RefreshPod {
            name: "r1".into(),
            node: "n1".into(),
            progress: RefreshProgress::Succeeded,
        };
        let failed = RefreshPod {
            name: "r2".into(),
            node: "n2".into(),
            progress: RefreshProgress::Failed("ErrImagePull".into()),
        };
        let p = plan(&t, &[done, failed]);
        assert_eq!(p.replace, vec![("n1".to_owned(), "p1".to_owned(), vec![0])]);
        assert_eq!(p.remove, vec!["r1".to_owned(), "r2".to_owned()]);
        assert_eq!(p.failed, vec![("n2".to_owned(), "ErrImagePull".to_owned())]);
        assert!(
            p.create.is_empty(),
            "no new refresh pod beside one being removed: {p:?}"
        );
    }

    #[test]
    fn a_registry_failure_never_refreshes_and_says_the_nodes_keep_their_cache() {
        let e = RegistryError {
            kind: ErrorKind::Unreachable,
            registry: "reg.example".into(),
            image: "reg.example/ide:next".into(),
            cause: "connection refused".into(),
        };
        let a = vec![RegistryAnswer::Failed(e), RegistryAnswer::Pinned];
        let t = tally(&a, &[pod("p1", "n1", "Running", Some(OLD))]);
        assert_eq!(plan(&t, &[]), RefreshPlan::default());
        let line = report(&set(), &a, &t)[0].clone();
        assert_eq!(line.failure_reason(), Some("unreachable"));
        assert!(
            line.to_string().contains("cached on 1 node(s); registry unreachable"),
            "{line}"
        );
    }

    #[test]
    fn refreshes_run_on_at_most_the_parallelism_of_nodes_at_once() {
        let a = answers(NEW);
        let pods: Vec<PodView> = (0..25)
            .map(|i| pod(&format!("p{i}"), &format!("n{i:02}"), "Running", Some(OLD)))
            .collect();
        let t = tally(&a, &pods);
        let going: Vec<RefreshPod> = (0..3)
            .map(|i| RefreshPod {
                name: format!("r{i}"),
                node: format!("n{i:02}"),
                progress: RefreshProgress::Going,
            })
            .collect();
        let p = plan(&t, &going);
        assert_eq!(p.create.len(), REFRESH_PARALLELISM - 3);
        assert!(p.create.iter().all(|(n, _)| !going.iter().any(|g| &g.node == n)));
    }

    #[test]
    fn a_node_refreshed_to_the_registry_digest_is_current_whatever_digest_its_runtime_reports() {
        // The node's runtime reports another manifest digest of the same image after the refresh.
        let a = answers(NEW);
        let pods = [
            pod("p1b", "n1", "Running", Some(OLD)),
            pod("p2", "n2", "Running", Some(OLD)),
        ];
        let refreshed = Refreshed::from([(("n1".to_owned(), "ide".to_owned()), Digest::parse(NEW).unwrap())]);
        let mut t = Tally::new(2);
        t.add_pods(&set(), &a, &refreshed, &pods);
        assert_eq!(t.counts[0].current, 1);
        assert_eq!(t.counts[0].stale, 1);
        let p = plan(&t, &[]);
        assert_eq!(p.create, vec![("n2".to_owned(), vec![0])], "n1 is not refreshed again");
        // A newer digest in the registry: n1 is stale again.
        let newer = answers(&format!("sha256:{}", "3".repeat(64)));
        let mut t = Tally::new(2);
        t.add_pods(&set(), &newer, &refreshed, &pods);
        assert_eq!(t.counts[0].stale, 2);
    }

    #[test]
    fn an_unneeded_refresh_pod_is_removed() {
        let a = answers(NEW);
        let t = tally(&a, &[pod("p1", "n1", "Running", Some(NEW))]);
        let stray = RefreshPod {
            name: "r1".into(),
            node: "n1".into(),
            progress: RefreshProgress::Going,
        };
        let p = plan(&t, &[stray]);
        assert_eq!(p.remove, vec!["r1".to_owned()]);
        assert!(!p.in_progress);
    }
}
