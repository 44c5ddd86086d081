//! The I/O half of a pass: performs the actions of [`plan()`](super::plan()) through [`Cluster`] and reports
//! what happened as a [`PassReport`].

use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;

use super::PassReport;
use super::plan::{self, Action, Drift, Lookup, Verified, Write};
use crate::k8s::{Cluster, KubeError};
use crate::rbac::WriteStrategy;
use crate::render::Desired;

/// Performs `actions` in order. An error on one object is recorded and the rest go on; nothing is deleted
/// because of an error (deletes are only those the plan made from the live list).
pub async fn execute(
    cluster: &Cluster,
    actions: Vec<Action<'_>>,
    instance: &str,
    verified: &mut Verified,
    strategy: WriteStrategy,
) -> PassReport {
    let mut report = PassReport::default();
    for action in actions {
        let mut next = Some(action);
        while let Some(action) = next {
            next = step(cluster, action, instance, verified, strategy, &mut report).await;
        }
    }
    report
}

/// Performs one action; returns the action a lookup turned up (a name found to be ours after all).
async fn step<'a>(
    cluster: &Cluster,
    action: Action<'a>,
    instance: &str,
    verified: &mut Verified,
    strategy: WriteStrategy,
    report: &mut PassReport,
) -> Option<Action<'a>> {
    match action {
        Action::Keep { live, hash } => {
            verified.record(&live, hash);
            report.unchanged.push(live.name_any());
            report.live.push(live);
        }
        Action::Update {
            desired,
            live,
            drift,
            how,
        } => update(cluster, desired, &live, drift, how, strategy, report).await,
        Action::Create { desired, known } => {
            report.reads += 1;
            let found = match cluster.get(desired.name()).await {
                Ok(found) => found,
                Err(e) => {
                    report.errors.push(e);
                    return None;
                }
            };
            let (namespace, name) = (cluster.namespace(), desired.name().to_owned());
            match plan::after_lookup(desired, found, instance, namespace, known, verified, strategy) {
                Lookup::Conflict(why) => report.conflicts.push((name, why)),
                Lookup::Owned(action) => return Some(action),
                Lookup::Take { how, repair } => {
                    report.writes += how.calls();
                    match write(cluster, how, desired.object(), None).await {
                        Ok(written) => {
                            if repair {
                                report.repaired.push(name);
                            } else {
                                report.created.push(name);
                            }
                            report.live.push(Arc::new(written));
                        }
                        Err(e) => report.errors.push(e),
                    }
                }
            }
        }
        Action::Delete { live } => {
            report.writes += 1;
            match cluster.delete(&live.name_any(), live.uid()).await {
                Ok(()) => report.deleted.push(live.name_any()),
                Err(e) => report.errors.push(e),
            }
        }
    }
    None
}

/// Writes a drifted owned object; a hand edit an apply could not undo is then replaced outright.
async fn update(
    cluster: &Cluster,
    desired: &Desired,
    live: &DaemonSet,
    drift: Drift,
    how: Write,
    strategy: WriteStrategy,
    report: &mut PassReport,
) {
    report.writes += how.calls();
    let (name, desired) = (desired.name().to_owned(), desired.object());
    let mut written = match write(cluster, how, desired, Some(live)).await {
        Ok(written) => written,
        Err(e) => return report.errors.push(e),
    };
    if how == Write::Apply
        && drift == Drift::Edited
        && let Some(again) = plan::after_apply(&written, desired, strategy)
    {
        report.writes += again.calls();
        written = match write(cluster, again, desired, Some(&written)).await {
            Ok(replaced) => replaced,
            Err(e) => return report.errors.push(e),
        };
    }
    if drift == Drift::Changed {
        report.updated.push(name);
    } else {
        report.repaired.push(name);
    }
    report.live.push(Arc::new(written));
}

/// One write; `live` is the object a replace or recreate takes the place of.
async fn write(
    cluster: &Cluster,
    how: Write,
    desired: &DaemonSet,
    live: Option<&DaemonSet>,
) -> Result<DaemonSet, KubeError> {
    match (how, live) {
        (Write::Apply, _) => cluster.apply(desired).await,
        (Write::Replace, Some(live)) => cluster.replace(desired, live).await,
        (Write::Recreate, Some(live)) => cluster.recreate(desired, live).await,
        // Nothing to take the place of: a plain create.
        (Write::Create | Write::Replace | Write::Recreate, _) => cluster.create(desired).await,
    }
}
