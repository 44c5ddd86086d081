//! The targeted look at a set whose DaemonSet shows unready pods: after a settling delay (so normal pulls
//! are not reported), its pods are read page by page in the partial form the health check uses, and the
//! failing images with the kubelet's reason per node go to the metrics, the log and an Event at once, not
//! at the next health check. Repeated with backoff while the set stays unready; cleared when it recovers.
//! Nothing new is watched: the trigger is the owned-DaemonSet watch.

use tokio::time::Instant;

use super::trigger::Session;
use super::*;

/// Longest wait between two looks at a set that stays unready.
const LOOK_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The wait after look number `looked` (from 0) found the set still unready: twice the settling delay,
/// doubling, at most [`LOOK_BACKOFF_MAX`] (or the settling delay if longer). Never less than the settling
/// delay: at most one look per set per settling delay, whatever the watch says.
pub(super) fn next_look(settle: Duration, looked: u32) -> Duration {
    settle
        .saturating_mul(1u32 << (looked + 1).min(8))
        .min(LOOK_BACKOFF_MAX.max(settle))
}

/// Whether a DaemonSet's status shows pods not ready or not available (on at least one node it should run on).
pub(super) fn shows_unready(ds: &DaemonSet) -> bool {
    ds.status.as_ref().is_some_and(|s| {
        s.desired_number_scheduled > 0
            && (s.number_ready < s.desired_number_scheduled || s.number_unavailable.unwrap_or(0) > 0)
    })
}

/// The looks at one set: the next one planned, how many in a row found it still unready (the backoff), and
/// when the last one ran (the next is never sooner than one settling delay after it).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Look {
    pub next: Option<Instant>,
    pub looked: u32,
    pub last: Option<Instant>,
}

impl Controller {
    /// A watched DaemonSet changed. Unready: a look after the settling delay, unless one is planned (a
    /// flapping set keeps its plan, so it is looked at once per settling delay at most). Ready again: its
    /// failing images are cleared at once (a planned look still runs and confirms). Gone: forgotten.
    pub(super) fn plan_look(&mut self, s: &mut Session, ds: &DaemonSet, deleted: bool) {
        let set = ds.name_any();
        if deleted {
            s.looks.remove(&set);
            self.clear_failing(&set);
            return;
        }
        if !shows_unready(ds) {
            self.clear_failing(&set);
            return;
        }
        let settle = self.settings.failure_settle;
        let look = s.looks.entry(set).or_default();
        if look.next.is_none() {
            let now = Instant::now();
            look.next = Some(look.last.map_or(now + settle, |last| (last + settle).max(now + settle)));
        }
    }

    /// Forgets a set's failing images (recovered, or its DaemonSet gone), once.
    fn clear_failing(&mut self, set: &str) {
        let had = self
            .reported
            .failing
            .remove(set)
            .is_some_and(|f| f.iter().any(|f| !f.image.is_empty()));
        if had {
            tracing::info!(set, "every image of the set is cached again");
            self.metrics.record_failing(&self.reported.failing);
        }
    }

    /// The looks that are due, one set at a time: its pods paged, the figures replaced, and the next look
    /// planned with backoff while the set stays unready.
    pub(super) async fn on_look_due(&mut self, s: &mut Session) {
        let now = Instant::now();
        let due: Vec<String> = s
            .looks
            .iter()
            .filter(|(_, l)| l.next.is_some_and(|at| at <= now))
            .map(|(set, _)| set.clone())
            .collect();
        let config = self.cfg.config.clone();
        for set in due {
            let images = config
                .as_ref()
                .and_then(|c| c.sets.iter().find(|c| c.name == set))
                .map(|c| c.images.len());
            let owned = self.memory.overlay.view(s.store.state());
            let live = owned.iter().find(|d| d.name_any() == set).cloned();
            let (Some(images), Some(ds)) = (images, live) else {
                // Not a set of the config in force any more, or its DaemonSet is gone.
                s.looks.remove(&set);
                self.clear_failing(&set);
                continue;
            };
            let gather = status::gather_set(&s.cluster, &set, None, Some(&ds));
            let h = tokio::time::timeout(super::run::PASS_TIMEOUT, gather)
                .await
                .unwrap_or_else(|_| health::from_daemonset(&set, Some(&ds), None));
            self.metrics.record_health(&h, images);
            self.report_failing(&ds, &h).await;
            let settle = self.settings.failure_settle;
            let look = s.looks.entry(set.clone()).or_default();
            look.last = Some(Instant::now());
            if h.ready < h.desired {
                look.next = Some(Instant::now() + next_look(settle, look.looked));
                look.looked += 1;
            } else {
                look.next = None;
                look.looked = 0;
                self.clear_failing(&set);
            }
        }
    }

    /// The set's failing images into the metrics, and each new finding into the log and an Event.
    async fn report_failing(&mut self, ds: &DaemonSet, h: &SetHealth) {
        let failing: Vec<_> = h.failing.iter().filter(|f| !f.image.is_empty()).cloned().collect();
        let before = self.reported.failing.get(&h.set).cloned().unwrap_or_default();
        for f in &failing {
            let known = before
                .iter()
                .any(|b| b.image == f.image && b.reason == f.reason && b.node_count == f.node_count);
            if !known {
                tracing::warn!(set = %h.set, image = %f.image, reason = %f.reason, "image {f}");
            }
            // Same note on the same object: written once per repeat period (the Events type aggregates).
            self.events
                .on_daemonset(ds, true, "ImageNotCached", format!("image {f}"))
                .await;
        }
        if failing.is_empty() && before.is_empty() {
            return;
        }
        self.reported.failing.insert(h.set.clone(), failing);
        self.metrics.record_failing(&self.reported.failing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_back_off_from_the_settling_delay_to_five_minutes() {
        let settle = Duration::from_secs(15);
        let waits: Vec<u64> = (0..7).map(|looked| next_look(settle, looked).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300, 300]);
        // A settling delay longer than the cap is never shortened.
        assert_eq!(next_look(Duration::from_secs(600), 3), Duration::from_secs(600));
    }

    #[test]
    fn unready_means_a_pod_not_ready_or_not_available_where_one_should_run() {
        let ds = |desired: i32, ready: i32, unavailable: Option<i32>| DaemonSet {
            status: Some(k8s_openapi::api::apps::v1::DaemonSetStatus {
                desired_number_scheduled: desired,
                number_ready: ready,
                number_unavailable: unavailable,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(shows_unready(&ds(3, 2, None)));
        assert!(shows_unready(&ds(3, 3, Some(1))));
        assert!(!shows_unready(&ds(3, 3, None)));
        assert!(!shows_unready(&ds(0, 0, None)), "no node selected: nothing to look at");
        assert!(!shows_unready(&DaemonSet::default()), "no status yet");
    }
}
