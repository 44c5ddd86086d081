//! ConfigMaps in the fake API server, kept apart from the DaemonSet store: get, list and watch with a
//! `metadata.name` field selector (as `kubectl` and kube's watcher send it), one global resourceVersion
//! shared with the other kinds, and test helpers that create, edit and delete a ConfigMap as another user
//! would (`kubectl apply`, `kubectl edit`, `kubectl delete`). The controller only reads ConfigMaps; writes
//! through the API are refused with 405 so that a test notices if it ever tries.

use std::collections::{BTreeMap, VecDeque};

use http::Method;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{BoxError, FakeApi, Msg, Reply, State, line, method_not_allowed, status};

#[derive(Debug, Clone)]
pub(super) struct CmChange {
    rv: u64,
    namespace: String,
    name: String,
    kind: &'static str,
    object: Value,
}

/// The ConfigMaps by (namespace, name), their change history and the channel their watchers follow.
#[derive(Default)]
pub(super) struct ConfigMapStore {
    objects: BTreeMap<(String, String), Value>,
    history: Vec<CmChange>,
    tx: Option<broadcast::Sender<CmChange>>,
    /// ConfigMap requests fail like refused connections until then.
    away_until: Option<tokio::time::Instant>,
}

impl ConfigMapStore {
    fn sender(&mut self) -> broadcast::Sender<CmChange> {
        self.tx.get_or_insert_with(|| broadcast::channel(1024).0).clone()
    }
}

/// A field selector as the server reads it: only `metadata.name` and `metadata.namespace` are supported
/// for ConfigMaps; anything else is a 400, as the real server answers.
fn field_selector(query: &BTreeMap<String, String>) -> Result<Option<String>, Reply> {
    let Some(s) = query.get("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let mut name = None;
    for term in s.split(',') {
        let (field, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .unwrap_or((term, ""));
        match field.trim() {
            "metadata.name" => name = Some(value.trim().to_owned()),
            "metadata.namespace" => {}
            other => {
                let message = format!(
                    "\"{other}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                );
                return Err(Reply::Json(400, status(400, "BadRequest", &message)));
            }
        }
    }
    Ok(name)
}

fn wanted(name: &Option<String>, object_name: &str) -> bool {
    name.as_deref().is_none_or(|n| n == object_name)
}

impl FakeApi {
    /// `GET|POST|... /api/v1/namespaces/{ns}/configmaps[/{name}]`.
    pub(super) fn configmaps(
        &self,
        method: &Method,
        ns: &str,
        name: Option<&str>,
        query: &BTreeMap<String, String>,
    ) -> Reply {
        if self
            .state()
            .configmaps
            .away_until
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return Reply::Connection;
        }
        match (method, name) {
            (&Method::GET, Some(name)) => {
                match self.state().configmaps.objects.get(&(ns.to_owned(), name.to_owned())) {
                    Some(o) => Reply::Json(200, o.clone()),
                    None => Reply::Json(
                        404,
                        status(404, "NotFound", &format!("configmaps \"{name}\" not found")),
                    ),
                }
            }
            (&Method::GET, None) => {
                let selected = match field_selector(query) {
                    Ok(n) => n,
                    Err(reply) => return reply,
                };
                if query.get("watch").map(String::as_str) == Some("true") {
                    self.watch_configmaps(ns, selected, query)
                } else {
                    let st = self.state();
                    let items: Vec<Value> = st
                        .configmaps
                        .objects
                        .iter()
                        .filter(|((n, name), _)| n == ns && wanted(&selected, name))
                        .map(|(_, o)| o.clone())
                        .collect();
                    Reply::Json(
                        200,
                        json!({"kind": "ConfigMapList", "apiVersion": "v1",
                               "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
                    )
                }
            }
            _ => method_not_allowed(),
        }
    }

    fn watch_configmaps(&self, ns: &str, name: Option<String>, query: &BTreeMap<String, String>) -> Reply {
        let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let ns = ns.to_owned();
        // Under the lock: the backlog and both subscriptions, so no change is missed or seen twice.
        let (mut backlog, rx, drops, current) = {
            let mut st = self.state();
            let rx = st.configmaps.sender().subscribe();
            let drops = self.inner.changes.subscribe();
            let backlog: VecDeque<Bytes> = if since == 0 {
                st.configmaps
                    .objects
                    .iter()
                    .filter(|((n, object_name), _)| *n == ns && wanted(&name, object_name))
                    .map(|(_, o)| line("ADDED", o))
                    .collect()
            } else {
                st.configmaps
                    .history
                    .iter()
                    .filter(|c| c.rv > since && c.namespace == ns && wanted(&name, &c.name))
                    .map(|c| line(c.kind, &c.object))
                    .collect()
            };
            (backlog, rx, drops, st.rv)
        };
        if query.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
            let bookmark = json!({"kind": "ConfigMap", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": current.max(since).to_string()}});
            backlog.push_back(line("BOOKMARK", &bookmark));
        }
        struct W {
            backlog: VecDeque<Bytes>,
            rx: broadcast::Receiver<CmChange>,
            drops: broadcast::Receiver<Msg>,
            ns: String,
            name: Option<String>,
            done: bool,
        }
        let state = W {
            backlog,
            rx,
            drops,
            ns,
            name,
            done: false,
        };
        let cut = || -> BoxError {
            Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "watch stream cut by the fake API server",
            ))
        };
        let stream = futures::stream::unfold(state, move |mut w| async move {
            if w.done {
                return None;
            }
            if let Some(b) = w.backlog.pop_front() {
                return Some((Ok(Frame::data(b)), w));
            }
            loop {
                tokio::select! {
                    change = w.rx.recv() => match change {
                        Ok(c) if c.namespace == w.ns && wanted(&w.name, &c.name) => {
                            return Some((Ok(Frame::data(line(c.kind, &c.object))), w));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            w.done = true;
                            return Some((Err(cut()), w));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    msg = w.drops.recv() => match msg {
                        Ok(Msg::DropWatches) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            w.done = true;
                            return Some((Err(cut()), w));
                        }
                        Ok(Msg::Change(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        });
        Reply::Watch(StreamBody::new(Box::pin(stream)).boxed_unsync())
    }

    /// Stores a change to a ConfigMap, stamps the next global resourceVersion and tells its watchers.
    fn commit_configmap(st: &mut State, ns: &str, name: &str, kind: &'static str, mut object: Value) -> Value {
        st.rv += 1;
        object["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let key = (ns.to_owned(), name.to_owned());
        if kind == "DELETED" {
            st.configmaps.objects.remove(&key);
        } else {
            st.configmaps.objects.insert(key, object.clone());
        }
        let change = CmChange {
            rv: st.rv,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            kind,
            object: object.clone(),
        };
        st.configmaps.history.push(change.clone());
        let _ = st.configmaps.sender().send(change);
        object
    }

    /// ConfigMap requests (only) fail like refused connections for `duration`; open watches are cut.
    pub fn configmaps_away_for(&self, duration: std::time::Duration) {
        self.state().configmaps.away_until = Some(tokio::time::Instant::now() + duration);
        self.drop_watches();
    }

    // ---- acting as another user ----

    /// `kubectl apply` of a ConfigMap with `data`: created, or its data replaced. Returns its new
    /// resourceVersion (what the API server accepted the edit as).
    pub fn put_configmap(&self, ns: &str, name: &str, data: &[(&str, &str)]) -> String {
        let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        let mut st = self.state();
        let key = (ns.to_owned(), name.to_owned());
        let (kind, object) = match st.configmaps.objects.get(&key).cloned() {
            Some(mut old) => {
                if old["data"] == Value::Object(data.clone()) {
                    // The real server writes nothing for an apply that changes nothing.
                    return old["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
                old["data"] = Value::Object(data);
                ("MODIFIED", old)
            }
            None => {
                st.uid += 1;
                let object = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns,
                                 "uid": format!("00000000-0000-4000-9000-{:012}", st.uid),
                                 "creationTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
                    "data": data,
                });
                ("ADDED", object)
            }
        };
        let stored = Self::commit_configmap(&mut st, ns, name, kind, object);
        stored["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `kubectl delete configmap`; watchers see DELETED. False when it does not exist.
    pub fn delete_configmap(&self, ns: &str, name: &str) -> bool {
        let mut st = self.state();
        let Some(old) = st.configmaps.objects.get(&(ns.to_owned(), name.to_owned())).cloned() else {
            return false;
        };
        Self::commit_configmap(&mut st, ns, name, "DELETED", old);
        true
    }

    pub fn configmap(&self, ns: &str, name: &str) -> Option<Value> {
        self.state()
            .configmaps
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The Events whose `regarding` is the ConfigMap `name` (what `kubectl describe configmap` lists).
    pub fn configmap_events(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["regarding"]["kind"] == "ConfigMap" && e["regarding"]["name"] == name)
            .collect()
    }
}
