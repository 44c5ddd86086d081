//! The pure half of a pass: what to do to each DaemonSet, from the desired sets, the owned live ones and
//! what earlier passes remembered ([`Verified`], [`Overlay`]). No I/O: unit tested without a cluster.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::ResourceExt;
use serde_json::Value;

use super::PassReport;
use crate::labels::{self, is_owned, spec_hash_of};
use crate::rbac::WriteStrategy;
use crate::render::Desired;

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

/// How a DaemonSet is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Server-side apply (`patch`): creates or updates.
    Apply,
    /// A plain create, for a new set without `patch`.
    Create,
    /// `update` in place: a rolling update.
    Replace,
    /// Delete, then create (the upstream verbs): two calls.
    Recreate,
}

impl Write {
    /// How an owned object that drifted is written under `strategy`.
    pub fn update(strategy: WriteStrategy) -> Self {
        if strategy.apply {
            Self::Apply
        } else {
            Self::replace(strategy)
        }
    }

    /// How a free name is taken under `strategy`.
    pub fn create(strategy: WriteStrategy) -> Self {
        if strategy.apply { Self::Apply } else { Self::Create }
    }

    /// Replacing the whole object: in place when `update` is allowed, else delete-then-create.
    pub fn replace(strategy: WriteStrategy) -> Self {
        if strategy.update { Self::Replace } else { Self::Recreate }
    }

    /// API writes this takes.
    pub fn calls(self) -> u32 {
        if self == Self::Recreate { 2 } else { 1 }
    }
}

/// What a pass does to one DaemonSet, in the order the pass does it (desired sets first, deletes last).
#[derive(Debug)]
pub enum Action<'a> {
    /// Ours and holding every field we set: no write.
    Keep { live: Arc<DaemonSet>, hash: &'a str },
    /// Not among ours: the name is looked up first (another's object is never taken over); [`after_lookup`]
    /// decides the rest. `known`: applied before by this process, so a re-creation is a repair.
    Create { desired: &'a Desired, known: bool },
    /// Ours and drifted: written with `how`. After an [`Write::Apply`] of a hand edit, [`after_apply`] tells
    /// whether the object must be replaced outright.
    Update {
        desired: &'a Desired,
        live: Arc<DaemonSet>,
        drift: Drift,
        how: Write,
    },
    /// Ours and its set left the config: deleted with a uid precondition.
    Delete { live: Arc<DaemonSet> },
}

/// The actions of one pass. Pure: `verified` only lets steady-state objects skip the field comparison
/// (and the building of the desired object: an unchanged, verified set needs only its name and hash).
pub fn plan<'a>(
    desired: &'a [Desired],
    owned: &[Arc<DaemonSet>],
    instance: &str,
    known: &HashSet<String>,
    verified: &Verified,
    strategy: WriteStrategy,
) -> Vec<Action<'a>> {
    // Names borrowed, not copied: a steady-state pass allocates little more than the action list.
    let mut actions = Vec::with_capacity(desired.len());
    for d in desired {
        let name = d.name();
        match owned.iter().find(|l| name_of(l) == name && is_owned(l, instance)) {
            Some(live) => actions.push(for_owned(d, live.clone(), verified, strategy)),
            None => actions.push(Action::Create {
                desired: d,
                known: known.contains(name),
            }),
        }
    }
    let wanted: HashSet<&str> = desired.iter().map(Desired::name).collect();
    actions.extend(
        owned
            .iter()
            .filter(|l| is_owned(l, instance) && !wanted.contains(name_of(l)))
            .map(|live| Action::Delete { live: live.clone() }),
    );
    actions
}

fn name_of(ds: &DaemonSet) -> &str {
    ds.metadata.name.as_deref().unwrap_or_default()
}

/// Keep or update one owned object.
pub fn for_owned<'a>(
    desired: &'a Desired,
    live: Arc<DaemonSet>,
    verified: &Verified,
    strategy: WriteStrategy,
) -> Action<'a> {
    let hash = desired.hash();
    let drift = if spec_hash_of(&live) == Some(hash) && verified.holds(&live, hash) {
        Drift::UpToDate
    } else {
        compare(desired.object(), &live)
    };
    match drift {
        Drift::UpToDate => Action::Keep { live, hash },
        drift => Action::Update {
            desired,
            live,
            drift,
            how: Write::update(strategy),
        },
    }
}

/// What the lookup of a name not among ours decided.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Taken by an object that is not ours: left alone and reported.
    Conflict(String),
    /// Ours after all (the cache lags behind a write): compared like any owned object.
    Owned(Action<'a>),
    /// Free (or ours, taken back by an apply): written with `how`; `repair` when it existed or was known.
    Take { how: Write, repair: bool },
}

/// Decides a [`Action::Create`] once the name was looked up (`found`) in `namespace`.
pub fn after_lookup<'a>(
    desired: &'a Desired,
    found: Option<DaemonSet>,
    instance: &str,
    namespace: &str,
    known: bool,
    verified: &Verified,
    strategy: WriteStrategy,
) -> Lookup<'a> {
    match found {
        Some(other) if !is_owned(&other, instance) => {
            let name = desired.name();
            let owner = other.labels().get(labels::MANAGED_BY).map_or("nobody", String::as_str);
            Lookup::Conflict(format!(
                "a DaemonSet named {name:?} already exists in {namespace} and is not managed by this puller (managed-by: {owner}); rename the set or remove that DaemonSet"
            ))
        }
        Some(ours) if !strategy.apply => Lookup::Owned(for_owned(desired, Arc::new(ours), verified, strategy)),
        existing => Lookup::Take {
            how: Write::create(strategy),
            repair: existing.is_some() || known,
        },
    }
}

/// After applying over a hand edit: the replacement still needed when the apply could not undo it (fields
/// owned by another manager, like an added container).
pub fn after_apply(applied: &DaemonSet, desired: &DaemonSet, strategy: WriteStrategy) -> Option<Write> {
    (!contains(applied, desired)).then(|| Write::replace(strategy))
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

    pub fn holds(&self, live: &DaemonSet, hash: &str) -> bool {
        self.0
            .get(&live.name_any())
            .is_some_and(|v| *v == Self::key_of(live, hash))
    }

    pub fn record(&mut self, live: &DaemonSet, hash: &str) {
        self.0.insert(live.name_any(), Self::key_of(live, hash));
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

    /// A DaemonSet of `instance` (None: unlabelled) with spec hash `hash` and one container image.
    fn labelled(name: &str, instance: Option<&str>, hash: &str, image: &str) -> Arc<DaemonSet> {
        let labels = match instance {
            Some(i) => json!({labels::MANAGED_BY: labels::MANAGER, labels::INSTANCE: i}),
            None => json!({}),
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1, "labels": labels,
                             "annotations": {labels::SPEC_HASH: hash}},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}
            }))
            .unwrap(),
        )
    }

    fn kinds(actions: &[Action<'_>]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Keep { live, .. } => format!("keep {}", live.name_any()),
                Action::Create { desired, known } => format!("create {} known={known}", desired.name()),
                Action::Update {
                    desired, drift, how, ..
                } => {
                    format!("update {} {drift:?} {how:?}", desired.name())
                }
                Action::Delete { live } => format!("delete {}", live.name_any()),
            })
            .collect()
    }

    const ME: &str = "me";

    #[test]
    fn plan_keeps_updates_creates_and_prunes_only_what_is_ours() {
        let want = |n: &str, h: &str, i: &str| Desired::from(DaemonSet::clone(&labelled(n, Some(ME), h, i)));
        let desired = vec![
            want("same", "h1", "a"),
            want("changed", "h2", "b"),
            want("edited", "h3", "c"),
            want("new", "h4", "d"),
            want("back", "h5", "e"),
            want("theirs", "h6", "f"),
        ];
        let owned = vec![
            labelled("same", Some(ME), "h1", "a"),
            labelled("changed", Some(ME), "old", "b"),
            labelled("edited", Some(ME), "h3", "hand-edit"),
            labelled("orphan", Some(ME), "h9", "z"),
            // Another instance's object in the cache is never ours to update or delete.
            labelled("theirs", Some("other"), "h6", "f"),
            labelled("stray", Some("other"), "h7", "g"),
        ];
        let known = HashSet::from(["back".to_owned()]);
        let actions = plan(
            &desired,
            &owned,
            ME,
            &known,
            &Verified::default(),
            WriteStrategy::default(),
        );
        assert_eq!(
            kinds(&actions),
            [
                "keep same",
                "update changed Changed Apply",
                "update edited Edited Apply",
                "create new known=false",
                "create back known=true",
                "create theirs known=false",
                "delete orphan",
            ]
        );
        // Without patch: update in place when allowed, else delete-then-create.
        let no_patch = WriteStrategy {
            apply: false,
            update: true,
        };
        assert_eq!(
            kinds(&plan(
                &desired[1..2],
                &owned[1..2],
                ME,
                &known,
                &Verified::default(),
                no_patch
            )),
            ["update changed Changed Replace"]
        );
        let upstream = WriteStrategy {
            apply: false,
            update: false,
        };
        let actions = plan(&desired[2..3], &owned[2..3], ME, &known, &Verified::default(), upstream);
        assert_eq!(kinds(&actions), ["update edited Edited Recreate"]);
        assert_eq!(Write::Recreate.calls(), 2);
    }

    #[test]
    fn verified_objects_skip_the_field_comparison_until_uid_generation_or_hash_moves() {
        let desired = vec![Desired::from(DaemonSet::clone(&labelled("s", Some(ME), "h", "a")))];
        // A live object whose fields differ but whose (uid, generation, hash) were verified before: kept.
        let live = labelled("s", Some(ME), "h", "server-default");
        let mut verified = Verified::default();
        verified.record(&live, "h");
        let known = HashSet::new();
        let strategy = WriteStrategy::default();
        assert_eq!(
            kinds(&plan(
                &desired,
                std::slice::from_ref(&live),
                ME,
                &known,
                &verified,
                strategy
            )),
            ["keep s"]
        );
        let mut bumped = DaemonSet::clone(&live);
        bumped.metadata.generation = Some(2);
        let actions = plan(&desired, &[Arc::new(bumped)], ME, &known, &verified, strategy);
        assert_eq!(kinds(&actions), ["update s Edited Apply"]);
    }

    #[test]
    fn a_reload_builds_only_the_objects_it_compares_or_writes() {
        use crate::config::{Config, Image, ImageSet};
        use crate::render::{self, RenderOptions};
        let set = |name: &str, tag: &str| ImageSet {
            name: name.into(),
            images: vec![Image {
                name: "web".into(),
                reference: format!("nginx:{tag}"),
            }],
            ..ImageSet::default()
        };
        let config = |b_tag: &str| {
            Arc::new(Config {
                namespace: "ns".into(),
                caching_interval_hours: 1,
                refresh_check_interval: crate::config::DEFAULT_REFRESH_CHECK_INTERVAL,
                warm_gate: None,
                kip_image: "kip:1".into(),
                deployment_name: Some(ME.into()),
                sets: vec![set("a", "1"), set("b", b_tag)],
            })
        };
        let options = RenderOptions::default();
        let live: Vec<_> = render::render(&config("1"), &options)
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut verified = Verified::default();
        for ds in &live {
            verified.record(ds, spec_hash_of(ds).unwrap());
        }
        let (known, strategy) = (HashSet::new(), WriteStrategy::default());
        let built = |desired: &[Desired]| desired.iter().map(Desired::is_built).collect::<Vec<_>>();

        // The same config again: verified objects are kept on their hash alone.
        let same = render::desired(&config("1"), &options);
        let actions = plan(&same, &live, ME, &known, &verified, strategy);
        assert_eq!(kinds(&actions), ["keep a", "keep b"]);
        assert_eq!(built(&same), [false, false]);
        // One set edited: only its object is built.
        let edited = render::desired(&config("2"), &options);
        let actions = plan(&edited, &live, ME, &known, &verified, strategy);
        assert_eq!(kinds(&actions), ["keep a", "update b Changed Apply"]);
        assert_eq!(built(&edited), [false, true]);
        // After a start nothing is verified: every object is built and compared field by field.
        let fresh = render::desired(&config("1"), &options);
        let actions = plan(&fresh, &live, ME, &known, &Verified::default(), strategy);
        assert_eq!(kinds(&actions), ["keep a", "keep b"]);
        assert_eq!(built(&fresh), [true, true]);
    }

    #[test]
    fn a_looked_up_name_is_a_conflict_ours_or_free() {
        let desired = Desired::from(DaemonSet::clone(&labelled("s", Some(ME), "h", "a")));
        let none = Verified::default();
        let apply = WriteStrategy::default();
        let other = DaemonSet::clone(&labelled("s", None, "x", "a"));
        match after_lookup(&desired, Some(other), ME, "ns", false, &none, apply) {
            Lookup::Conflict(why) => {
                assert!(
                    why.contains("\"s\" already exists in ns") && why.contains("managed-by: nobody"),
                    "{why}"
                )
            }
            other => panic!("want a conflict, got {other:?}"),
        }
        assert!(matches!(
            after_lookup(&desired, None, ME, "ns", false, &none, apply),
            Lookup::Take {
                how: Write::Apply,
                repair: false
            }
        ));
        assert!(matches!(
            after_lookup(
                &desired,
                None,
                ME,
                "ns",
                true,
                &none,
                WriteStrategy {
                    apply: false,
                    update: false
                }
            ),
            Lookup::Take {
                how: Write::Create,
                repair: true
            }
        ));
        // Ours after all: with apply it is simply applied again (a repair); without, compared like any owned.
        let ours = DaemonSet::clone(&labelled("s", Some(ME), "h", "a"));
        assert!(matches!(
            after_lookup(&desired, Some(ours.clone()), ME, "ns", false, &none, apply),
            Lookup::Take {
                how: Write::Apply,
                repair: true
            }
        ));
        let update = WriteStrategy {
            apply: false,
            update: true,
        };
        assert!(matches!(
            after_lookup(&desired, Some(ours), ME, "ns", false, &none, update),
            Lookup::Owned(Action::Keep { .. })
        ));
    }

    #[test]
    fn an_apply_that_left_a_hand_edit_is_followed_by_a_replace() {
        let desired = labelled("s", Some(ME), "h", "a");
        let applied = labelled("s", Some(ME), "h", "still-edited");
        let strategy = WriteStrategy::default();
        assert_eq!(after_apply(&applied, &desired, strategy), Some(Write::Replace));
        assert_eq!(after_apply(&desired, &desired, strategy), None);
        let no_update = WriteStrategy {
            apply: true,
            update: false,
        };
        assert_eq!(after_apply(&applied, &desired, no_update), Some(Write::Recreate));
    }
}
