//! One level-triggered pass: a pure [`plan()`] of what differs between the desired DaemonSets and the live
//! ones this instance owns, then the writes [`execute()`] performs through [`Cluster`].
//!
//! Safety rules, all enforced here: only objects labelled as this instance's are changed or deleted; a
//! same-named object that is not ours is reported as a conflict and left alone; deletes carry a uid
//! precondition; an API error on one set never leads to deleting anything.
//!
//! Writes follow the [`WriteStrategy`] the identity's verbs allow: server-side apply with `patch`; else a
//! plain create for a new set, `update` (a rolling update) or delete-then-create (the upstream verbs) for a
//! changed or hand-edited one.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;

use crate::k8s::{Cluster, KubeError};
use crate::rbac::WriteStrategy;
use crate::render::Desired;

pub mod execute;
pub mod plan;

pub use crate::labels::{is_owned, spec_hash_of};
pub use execute::execute;
pub use plan::{Action, Drift, Lookup, Overlay, Verified, Write, compare, contains, is_subset, plan};

/// What one pass did; also what `--once` prints and the metrics count.
#[derive(Debug, Default)]
pub struct PassReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub repaired: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: Vec<String>,
    /// Same-named objects that are not ours: left alone.
    pub conflicts: Vec<(String, String)>,
    pub errors: Vec<KubeError>,
    /// Calls made, for the steady-state figure (zero writes when nothing changed).
    pub reads: u32,
    pub writes: u32,
    /// Live objects after the pass (apply responses, or what was already there), by name.
    pub live: Vec<Arc<DaemonSet>>,
}

impl PassReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.conflicts.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "created {}, updated {}, repaired {}, deleted {}, unchanged {}, conflicts {}, errors {}",
            self.created.len(),
            self.updated.len(),
            self.repaired.len(),
            self.deleted.len(),
            self.unchanged.len(),
            self.conflicts.len(),
            self.errors.len()
        )
    }
}

/// One pass with nothing remembered and every verb allowed (the controller keeps [`Verified`] between
/// passes and writes the way its permissions allow: it calls [`plan()`] and [`execute()`] itself).
pub async fn reconcile(
    cluster: &Cluster,
    desired: &[Desired],
    owned: &[Arc<DaemonSet>],
    instance: &str,
    known: &HashSet<String>,
) -> PassReport {
    let (mut verified, strategy) = (Verified::default(), WriteStrategy::default());
    let actions = plan(desired, owned, instance, known, &verified, strategy);
    execute(cluster, actions, instance, &mut verified, strategy).await
}
