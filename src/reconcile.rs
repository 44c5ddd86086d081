//! One level-triggered pass: compare the desired DaemonSets with the live ones this instance owns, then
//! create, update, repair and prune. The comparison is pure; the pass does the I/O through [`Cluster`].
//!
//! Safety rules, all enforced here: only objects labelled as this instance's are changed or deleted; a
//! same-named object that is not ours is reported as a conflict and left alone; deletes carry a uid
//! precondition; an API error on one set never leads to deleting anything.
//!
//! Writes follow the [`WriteStrategy`] the identity's verbs allow: server-side apply with `patch`; else a
//! plain create for a new set, `update` (a rolling update) or delete-then-create (the upstream verbs) for a
//! changed or hand-edited one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;
use serde_json::Value;

use crate::k8s::{Cluster, KubeError};
use crate::rbac::WriteStrategy;
use crate::render::labels;

/// How a live object compares with the desired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Same spec hash and every field we set has our value: no write.
    UpToDate,
    /// The config changed (different spec hash).
    Changed,
    /// Same hash, but someone edited fields we own (a hand edit): repair.
    Edited,
}

/// Whether this instance owns the object (the label check that guards every change and delete).
pub fn is_owned(ds: &DaemonSet, instance: &str) -> bool {
    let l = ds.labels();
    l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
        && l.get(labels::INSTANCE).map(String::as_str) == Some(instance)
}

pub fn spec_hash_of(ds: &DaemonSet) -> Option<&str> {
    ds.annotations().get(labels::SPEC_HASH).map(String::as_str)
}

pub fn compare(desired: &DaemonSet, live: &DaemonSet) -> Drift {
    if spec_hash_of(desired) != spec_hash_of(live) {
        return Drift::Changed;
    }
    if contains(live, desired) {
        Drift::UpToDate
    } else {
        Drift::Edited
    }
}

/// Whether every field set in `desired` has the same value in `live` (labels, annotations, owners, spec).
/// Fields the API server or other managers add are ignored; a list must have the same length.
pub fn contains(live: &DaemonSet, desired: &DaemonSet) -> bool {
    let d = &desired.metadata;
    let l = &live.metadata;
    fn sub<T: serde::Serialize>(desired: &T, live: &T) -> bool {
        let json = |v: &T| serde_json::to_value(v).unwrap_or_default();
        is_subset(&json(desired), &json(live))
    }
    sub(&d.labels, &l.labels)
        && sub(&d.annotations, &l.annotations)
        && sub(&d.owner_references, &l.owner_references)
        && sub(&desired.spec, &live.spec)
}

/// JSON containment. Quantities are compared by value, because the API server rewrites them (".2" → "200m").
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => {
                dv.is_null() || dv.as_object().is_some_and(|o| o.is_empty()) || dv.as_array().is_some_and(Vec::is_empty)
            }
        }),
        (Value::Object(d), Value::Null) => d.is_empty(),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b)),
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::String(a), Value::String(b)) => a == b || same_quantity(a, b),
        (a, b) => a == b,
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    let first = a.as_bytes().first().copied().unwrap_or(b'x');
    if !(first.is_ascii_digit() || first == b'.') {
        return false;
    }
    match (
        crate::config::rules::parse_quantity(a),
        crate::config::rules::parse_quantity(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

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

/// One pass. `owned` is every live DaemonSet carrying this instance's labels (from the watch cache or a
/// list); `known` names the sets this process has applied before, so a re-creation counts as a repair.
pub async fn reconcile(
    cluster: &Cluster,
    desired: &[DaemonSet],
    owned: &[Arc<DaemonSet>],
    instance: &str,
    known: &HashSet<String>,
) -> PassReport {
    reconcile_cached(cluster, desired, owned, instance, known, &mut Verified::default()).await
}

/// Objects already found to hold every field we set, by name: (uid, generation, spec hash). A spec edit
/// bumps the generation, so while uid, generation and hash are unchanged the JSON comparison is skipped:
/// a steady-state pass then costs a few string compares per DaemonSet.
#[derive(Debug, Default)]
pub struct Verified(HashMap<String, (Option<String>, Option<i64>, String)>);

impl Verified {
    fn key_of(ds: &DaemonSet, hash: &str) -> (Option<String>, Option<i64>, String) {
        (ds.uid(), ds.metadata.generation, hash.to_owned())
    }

    fn holds(&self, live: &DaemonSet, hash: &str) -> bool {
        self.0
            .get(&live.name_any())
            .is_some_and(|v| *v == Self::key_of(live, hash))
    }

    fn record(&mut self, live: &DaemonSet, hash: &str) {
        self.0.insert(live.name_any(), Self::key_of(live, hash));
    }
}

/// [`reconcile`] keeping what it verified for the next pass.
pub async fn reconcile_cached(
    cluster: &Cluster,
    desired: &[DaemonSet],
    owned: &[Arc<DaemonSet>],
    instance: &str,
    known: &HashSet<String>,
    verified: &mut Verified,
) -> PassReport {
    let strategy = WriteStrategy::default();
    reconcile_with(cluster, desired, owned, instance, known, verified, strategy).await
}

/// [`reconcile_cached`] writing the way `strategy` allows.
pub async fn reconcile_with(
    cluster: &Cluster,
    desired: &[DaemonSet],
    owned: &[Arc<DaemonSet>],
    instance: &str,
    known: &HashSet<String>,
    verified: &mut Verified,
    strategy: WriteStrategy,
) -> PassReport {
    let mut report = PassReport::default();
    let wanted: BTreeSet<String> = desired.iter().map(|d| d.name_any()).collect();

    for d in desired {
        let name = d.name_any();
        let known = known.contains(&name);
        match owned.iter().find(|l| l.name_any() == name && is_owned(l, instance)) {
            Some(live) => update(cluster, d, live, verified, strategy, &mut report).await,
            None => create(cluster, d, instance, known, verified, strategy, &mut report).await,
        }
    }

    for live in owned
        .iter()
        .map(Arc::as_ref)
        .filter(|l| is_owned(l, instance) && !wanted.contains(&l.name_any()))
    {
        let name = live.name_any();
        report.writes += 1;
        match cluster.delete(&name, live.uid()).await {
            Ok(()) => report.deleted.push(name),
            Err(e) => report.errors.push(e),
        }
    }
    report
}

async fn update(
    cluster: &Cluster,
    desired: &DaemonSet,
    live: &Arc<DaemonSet>,
    verified: &mut Verified,
    strategy: WriteStrategy,
    report: &mut PassReport,
) {
    let name = desired.name_any();
    let hash = spec_hash_of(desired).unwrap_or_default();
    let drift = if spec_hash_of(live) == Some(hash) && verified.holds(live, hash) {
        Drift::UpToDate
    } else {
        compare(desired, live)
    };
    if drift == Drift::UpToDate {
        verified.record(live, hash);
        report.unchanged.push(name);
        report.live.push(live.clone());
        return;
    }
    if !strategy.apply {
        // No patch: update in place when allowed (a rolling update), else delete-then-create.
        let result = if strategy.update {
            report.writes += 1;
            cluster.replace(desired, live).await
        } else {
            report.writes += 2;
            cluster.recreate(desired, live).await
        };
        match result {
            Ok(written) => {
                if drift == Drift::Changed {
                    report.updated.push(name);
                } else {
                    report.repaired.push(name);
                }
                report.live.push(Arc::new(written));
            }
            Err(e) => report.errors.push(e),
        }
        return;
    }
    report.writes += 1;
    let applied = match cluster.apply(desired).await {
        Ok(applied) => applied,
        Err(e) => return report.errors.push(e),
    };
    if drift == Drift::Changed {
        report.updated.push(name);
        report.live.push(Arc::new(applied));
        return;
    }
    // A hand edit: if the apply could not undo it (fields owned by another manager, like an added
    // container), replace the object outright.
    if contains(&applied, desired) {
        report.repaired.push(name);
        report.live.push(Arc::new(applied));
        return;
    }
    let replaced = if strategy.update {
        report.writes += 1;
        cluster.replace(desired, &applied).await
    } else {
        report.writes += 2;
        cluster.recreate(desired, &applied).await
    };
    match replaced {
        Ok(replaced) => {
            report.repaired.push(name);
            report.live.push(Arc::new(replaced));
        }
        Err(e) => report.errors.push(e),
    }
}

async fn create(
    cluster: &Cluster,
    desired: &DaemonSet,
    instance: &str,
    known: bool,
    verified: &mut Verified,
    strategy: WriteStrategy,
    report: &mut PassReport,
) {
    let name = desired.name_any();
    // Not among ours: check that the name is free before applying, so another's object is never taken over.
    report.reads += 1;
    match cluster.get(&name).await {
        Err(e) => report.errors.push(e),
        Ok(Some(other)) if !is_owned(&other, instance) => {
            let owner = other
                .labels()
                .get(labels::MANAGED_BY)
                .cloned()
                .unwrap_or_else(|| "nobody".into());
            report.conflicts.push((
                name.clone(),
                format!(
                    "a DaemonSet named {name:?} already exists in {} and is not managed by this puller (managed-by: {owner}); rename the set or remove that DaemonSet",
                    cluster.namespace()
                ),
            ));
        }
        // Ours after all (the cache lags behind a write): compare with it like any owned object.
        Ok(Some(ours)) if !strategy.apply => {
            update(cluster, desired, &Arc::new(ours), verified, strategy, report).await;
        }
        Ok(existing) => {
            report.writes += 1;
            let written = if strategy.apply {
                cluster.apply(desired).await
            } else {
                cluster.create(desired).await
            };
            match written {
                Ok(applied) => {
                    if existing.is_some() || known {
                        report.repaired.push(name)
                    } else {
                        report.created.push(name)
                    }
                    report.live.push(Arc::new(applied));
                }
                Err(e) => report.errors.push(e),
            }
        }
    }
}

/// Read-your-writes over the watch cache. After a write the cache may lag (the watch is slow, or down and
/// backing off); a pass against the stale copy would repeat the write. Each write's result (and each
/// delete) stands in for the cached object until the watch reports that object at a newer version than
/// the one seen before the write, or a fresh list replaces the whole cache.
#[derive(Debug, Default)]
pub struct Overlay {
    /// name → (resourceVersion seen before the write, None if absent; the write's result)
    written: HashMap<String, (Option<String>, Arc<DaemonSet>)>,
    /// name → resourceVersion seen when it was deleted
    deleted: HashMap<String, Option<String>>,
}

impl Overlay {
    /// The cache as this process knows it to be.
    pub fn view(&self, cached: Vec<Arc<DaemonSet>>) -> Vec<Arc<DaemonSet>> {
        let mut out = Vec::with_capacity(cached.len() + self.written.len());
        for obj in cached {
            let name = obj.name_any();
            if self.deleted.contains_key(&name) {
                continue;
            }
            out.push(self.written.get(&name).map_or(obj, |(_, fresh)| fresh.clone()));
        }
        for (_, fresh) in self.written.values() {
            if !out.iter().any(|o| o.name_any() == fresh.name_any()) {
                out.push(fresh.clone());
            }
        }
        out
    }

    /// A watch event: once the cache shows an object past the version seen before our write, it is current.
    pub fn observe(&mut self, obj: &DaemonSet) {
        let name = obj.name_any();
        let rv = obj.resource_version();
        if self.written.get(&name).is_some_and(|(before, _)| *before != rv) {
            self.written.remove(&name);
        }
        if self.deleted.get(&name).is_some_and(|before| *before != rv) {
            self.deleted.remove(&name);
        }
    }

    /// A fresh list replaced the cache: it is current.
    pub fn clear(&mut self) {
        self.written.clear();
        self.deleted.clear();
    }

    /// Records a pass's writes against the view it started from.
    pub fn record(&mut self, before: &[Arc<DaemonSet>], report: &PassReport) {
        let rv_of = |name: &str| {
            before
                .iter()
                .find(|d| d.name_any() == name)
                .and_then(|d| d.resource_version())
        };
        let written = report.created.iter().chain(&report.updated).chain(&report.repaired);
        for name in written {
            if let Some(fresh) = report.live.iter().find(|d| d.name_any() == *name) {
                self.written.insert(name.clone(), (rv_of(name), fresh.clone()));
            }
        }
        for name in &report.deleted {
            self.written.remove(name);
            self.deleted.insert(name.clone(), rv_of(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_and_compares_quantities() {
        let desired = json!({"a": {"cpu": ".2", "memory": "20Mi"}, "list": [{"name": "x"}], "unset": null});
        let live =
            json!({"a": {"cpu": "200m", "memory": "20Mi", "extra": 1}, "list": [{"name": "x", "default": true}]});
        assert!(is_subset(&desired, &live));
    }

    fn ds(name: &str, rv: &str, image: &str) -> Arc<DaemonSet> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "resourceVersion": rv},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}
            }))
            .unwrap(),
        )
    }

    fn image(d: &DaemonSet) -> String {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    #[test]
    fn overlay_reads_its_own_writes_until_the_cache_moves_on() {
        let mut overlay = Overlay::default();
        let before = vec![ds("a", "1", "old"), ds("gone", "2", "x")];
        let report = PassReport {
            updated: vec!["a".into()],
            created: vec!["new".into()],
            deleted: vec!["gone".into()],
            live: vec![ds("a", "5", "fresh"), ds("new", "6", "n")],
            ..PassReport::default()
        };
        overlay.record(&before, &report);
        // The cache has not caught up: our writes stand in for it.
        let view = overlay.view(before.clone());
        let names: Vec<String> = view.iter().map(|d| d.name_any()).collect();
        assert_eq!(names, ["a", "new"]);
        assert_eq!(image(&view[0]), "fresh");
        // An event at the version seen before the write changes nothing; newer ones make the cache current.
        overlay.observe(&ds("a", "1", "old"));
        assert_eq!(image(&overlay.view(before.clone())[0]), "fresh");
        overlay.observe(&ds("a", "9", "theirs"));
        overlay.observe(&ds("new", "6", "n"));
        overlay.observe(&ds("gone", "7", "x"));
        // Someone deleted "new" after it appeared: the cache lacks it and the overlay no longer hides that.
        let view = overlay.view(vec![ds("a", "9", "theirs")]);
        assert_eq!(view.len(), 1);
        assert_eq!(image(&view[0]), "theirs");
        overlay.record(&before, &report);
        overlay.clear();
        assert_eq!(overlay.view(vec![]).len(), 0);
    }

    #[test]
    fn subset_detects_changes() {
        assert!(!is_subset(&json!({"image": "a:1"}), &json!({"image": "a:2"})));
        assert!(!is_subset(&json!({"list": [1]}), &json!({"list": [1, 2]})));
        assert!(!is_subset(&json!({"cpu": ".2"}), &json!({"cpu": "300m"})));
        assert!(!is_subset(&json!({"k": "v"}), &json!({})));
        assert!(!is_subset(&json!({"name": "10"}), &json!({"name": "10.0x"})));
    }
}
