//! Tier 2: a stateful in-memory API server, good enough to run the whole controller loop in-process.
//!
//! A real `kube::Client` talks to a tower-test mock service; a task behind the mock's handle answers each
//! request from an in-memory store of DaemonSets (uid, global resourceVersion, generation,
//! creationTimestamp, some server defaulting), with list/watch (label selectors, resourceVersion resume,
//! newline-delimited watch events), server-side apply with no-op detection, merge patch, replace with
//! resourceVersion check, delete with uid precondition, Events, API discovery, and fault injection.
//! Tests can also act as another user (create, edit, delete objects directly; watchers see the change).
//! With [`FakeApi::authorize`] it enforces RBAC like the real server: every request must be granted by the
//! given rules (verb from the method, as the real request-info resolver maps it), else a 403 with the real
//! Status body and message; SelfSubjectRulesReviews are answered from the same rules.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Client;
use kube::client::Body;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tower_test::mock::{self, SendResponse};

mod configmaps;
mod objects;
mod socket;

#[allow(unused_imports)] // each test crate uses some of them
pub use objects::{node_name, realistic_node, realistic_pod};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResBody = UnsyncBoxBody<Bytes, BoxError>;
type Send_ = SendResponse<Response<ResBody>>;

/// One request as it reached the server.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub at: Instant,
    /// HTTP status answered; 0 for a connection error.
    pub status: u16,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }
    /// A create, apply, patch, replace or delete of a DaemonSet.
    pub fn is_daemonset_write(&self) -> bool {
        self.path.contains("/daemonsets") && self.method != Method::GET
    }
    pub fn is_daemonset_request(&self) -> bool {
        self.path.contains("/daemonsets")
    }
    pub fn is_apply(&self) -> bool {
        self.method == Method::PATCH && self.path.contains("/daemonsets/") && self.query.contains_key("force")
    }
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?} -> {}", self.method, self.path, self.query, self.status)
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Any,
    /// Server-side applies of DaemonSets.
    Apply,
    /// Any DaemonSet write (create, apply, patch, replace, delete).
    DaemonSetWrites,
    DaemonSetDeletes,
    /// Watch requests.
    Watch,
    /// DaemonSet lists (not watches).
    List,
    /// SelfSubjectRulesReviews.
    RulesReview,
}

#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Answer with this status (a `Status` body).
    Status(u16),
    /// Fail like a refused connection (the client sees a transport error).
    ConnectionError,
    /// Wait, then answer normally.
    Delay(Duration),
    /// For a watch: what the real server sends when the resourceVersion is too old (compacted): a 200
    /// stream with one `ERROR` event carrying a 410 Status, then the end. The client must list again.
    WatchGone,
}

#[derive(Debug, Clone)]
struct Fault {
    matcher: Match,
    action: Action,
    remaining: u32,
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    namespace: String,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Debug, Clone)]
enum Msg {
    Change(Change),
    DropWatches,
}

#[derive(Default)]
struct State {
    rv: u64,
    uid: u64,
    /// DaemonSets by (namespace, name), as JSON with apiVersion and kind.
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Change>,
    requests: Vec<Recorded>,
    events: Vec<Value>,
    /// Pods by namespace, in list order (read-only for the controller).
    pods: Vec<(String, Value)>,
    faults: Vec<Fault>,
    away_until: Option<Instant>,
    /// Leases by (namespace, name), and the field manager owning each one's `spec.holderIdentity`: enough
    /// server-side-apply conflict semantics for leader election.
    leases: BTreeMap<(String, String), (Value, Option<String>)>,
    /// Serve the `route.openshift.io` group, as an OpenShift API server does.
    openshift: bool,
    /// RBAC: None grants everything.
    authz: Option<Authz>,
    /// What other controllers and users put in the cluster (see `model`).
    model: Model,
    /// ConfigMaps (tests/support/fake_api/configmaps.rs).
    configmaps: configmaps::ConfigMapStore,
}

/// The PolicyRules bound to the client's identity: a Role's (namespaced requests only) and a ClusterRole's.
#[derive(Debug, Clone)]
struct Authz {
    role: Vec<Value>,
    cluster: Vec<Value>,
    user: String,
}

/// What RBAC sees of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The request-info resolver of the real server, for the paths the controller uses. None: a non-resource
/// path (discovery), which every authenticated user may read.
pub fn attributes(method: &Method, path: &str, query: &BTreeMap<String, String>) -> Option<Attributes> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, mut name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        // A subresource (nodes/status) is authorized as `resource/subresource`, as the real server does.
        [resource, name, sub] => (format!("{resource}/{sub}"), Some((*name).to_owned())),
        [resource, name, ..] => ((*resource).to_owned(), Some((*name).to_owned())),
        _ => return None,
    };
    let verb = match *method {
        Method::GET if name.is_some() => "get",
        Method::GET if query.get("watch").map(String::as_str) == Some("true") => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    };
    // A list or watch selecting one name by `metadata.name` is authorized for that name (resourceNames),
    // as the real request-info resolver does.
    if name.is_none() && *method == Method::GET {
        name = query
            .get("fieldSelector")
            .and_then(|s| s.strip_prefix("metadata.name="))
            .filter(|n| !n.is_empty() && !n.contains([',', '=', '/']))
            .map(str::to_owned);
    }
    Some(Attributes {
        verb,
        group: group.to_owned(),
        resource,
        namespace,
        name,
    })
}

fn rule_grants(rule: &Value, a: &Attributes) -> bool {
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == "*" || x.as_str() == Some(want)))
    };
    let names_ok = match rule["resourceNames"].as_array() {
        None => true,
        Some(l) if l.is_empty() => true,
        Some(l) => a
            .name
            .as_deref()
            .is_some_and(|n| l.iter().any(|x| x.as_str() == Some(n))),
    };
    has("verbs", a.verb) && has("apiGroups", &a.group) && has("resources", &a.resource) && names_ok
}

impl Authz {
    fn allows(&self, a: &Attributes) -> bool {
        // A Role grants nothing cluster-scoped; a ClusterRole (bound cluster-wide) grants everywhere.
        (a.namespace.is_some() && self.role.iter().any(|r| rule_grants(r, a)))
            || self.cluster.iter().any(|r| rule_grants(r, a))
    }

    /// The real server's 403: `daemonsets.apps "x" is forbidden: User "…" cannot patch resource …`.
    fn forbidden(&self, a: &Attributes) -> Value {
        let qualified = if a.group.is_empty() {
            a.resource.clone()
        } else {
            format!("{}.{}", a.resource, a.group)
        };
        let subject = match &a.name {
            Some(n) => format!("{qualified} \"{n}\""),
            None => qualified,
        };
        let scope = match &a.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        let message = format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            self.user, a.verb, a.resource, a.group
        );
        let mut body = status(403, "Forbidden", &message);
        body["details"] = json!({"name": a.name.clone().unwrap_or_default(), "group": a.group, "kind": a.resource});
        body
    }
}

/// Objects the puller reads but never writes, and the Events it writes, validated like the real server.
#[derive(Default)]
struct Model {
    quotas: Vec<(String, Value)>,
    limit_ranges: Vec<(String, Value)>,
    nodes: Vec<Value>,
    deployments: BTreeMap<(String, String), Value>,
    /// core/v1 Events as the DaemonSet controller's recorder writes them.
    core_events: Vec<(String, Value)>,
    /// events.k8s.io/v1 Events accepted, by (namespace, name), for patches.
    api_events: BTreeMap<(String, String), Value>,
    /// Events refused with 422, and the server's message.
    refused_events: Vec<(Value, String)>,
    /// Answer 403 to lists of Events (a Role without `list` on events).
    events_list_forbidden: bool,
}

struct Inner {
    state: Mutex<State>,
    changes: broadcast::Sender<Msg>,
}

/// The fake API server; cheap to clone, shared by the serving task and the test.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

enum Reply {
    Json(u16, Value),
    Watch(ResBody),
    Connection,
}

impl FakeApi {
    /// A new empty server and a client talking to it. Requests are served concurrently (watches stream).
    pub fn start() -> (FakeApi, Client) {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<ResBody>>();
        let (changes, _) = broadcast::channel(4096);
        let api = FakeApi {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes,
            }),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let server = server.clone();
                tokio::spawn(async move { server.serve(request, send).await });
            }
        });
        (api, Client::new(service, "default"))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- fault injection ----

    /// The next `times` requests matching `matcher` get `action`.
    pub fn inject(&self, matcher: Match, action: Action, times: u32) {
        self.state().faults.push(Fault {
            matcher,
            action,
            remaining: times,
        });
    }

    /// Answer API discovery as an OpenShift server does.
    pub fn set_openshift(&self, on: bool) {
        self.state().openshift = on;
    }

    /// Every request fails like a refused connection for `duration`, and open watches are cut.
    pub fn away_for(&self, duration: Duration) {
        self.state().away_until = Some(Instant::now() + duration);
        self.drop_watches();
    }

    /// Cuts every open watch stream (the client sees a read error and re-watches).
    pub fn drop_watches(&self) {
        let _ = self.inner.changes.send(Msg::DropWatches);
    }

    /// Enforce RBAC from now on: the identity `system:serviceaccount:<namespace>:<sa>` is bound to a Role
    /// with `role` rules (in every namespace, for simplicity) and a ClusterRole with `cluster` rules.
    pub fn authorize(&self, role: Vec<Value>, cluster: Vec<Value>, namespace: &str, sa: &str) {
        self.state().authz = Some(Authz {
            role,
            cluster,
            user: format!("system:serviceaccount:{namespace}:{sa}"),
        });
    }

    // ---- inspection ----

    /// Requests answered 403.
    pub fn forbidden_requests(&self) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.status == 403)
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    pub fn requests_since(&self, t: Instant) -> Vec<Recorded> {
        self.state().requests.iter().filter(|r| r.at >= t).cloned().collect()
    }

    pub fn daemonset_writes_since(&self, t: Instant) -> Vec<Recorded> {
        self.requests_since(t)
            .into_iter()
            .filter(Recorded::is_daemonset_write)
            .collect()
    }

    pub fn daemonset(&self, namespace: &str, name: &str) -> Option<DaemonSet> {
        let st = self.state();
        st.objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|v| serde_json::from_value(v.clone()).expect("stored DaemonSet"))
    }

    pub fn daemonset_names(&self, namespace: &str) -> Vec<String> {
        self.state()
            .objects
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }

    /// Every Event posted (or patched, for a repeat), in order.
    pub fn events(&self) -> Vec<Value> {
        self.state().events.clone()
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    // ---- acting as another user ----

    /// Puts pods in the store (what the DaemonSet controller and kubelet would create).
    pub fn add_pods(&self, namespace: &str, pods: impl IntoIterator<Item = Value>) {
        let mut st = self.state();
        for p in pods {
            st.pods.push((namespace.to_owned(), p));
        }
    }

    /// Takes pods out of the store (a pod replaced by the DaemonSet controller, or gone with its node).
    pub fn remove_pods(&self, namespace: &str, gone: impl Fn(&Value) -> bool) {
        self.state().pods.retain(|(ns, p)| ns != namespace || !gone(p));
    }

    /// Creates an object directly (e.g. a foreign DaemonSet); watchers see ADDED.
    pub fn create(&self, ds: &DaemonSet) -> DaemonSet {
        let mut body = serde_json::to_value(ds).expect("json");
        let ns = body["metadata"]["namespace"].as_str().expect("namespace").to_owned();
        let name = body["metadata"]["name"].as_str().expect("name").to_owned();
        let mut st = self.state();
        assert!(
            !st.objects.contains_key(&(ns.clone(), name.clone())),
            "{name} already exists"
        );
        st.insert_new(&ns, &name, &mut body);
        let created = self.commit(&mut st, &ns, &name, None, Some(body));
        serde_json::from_value(created.expect("stored")).expect("DaemonSet")
    }

    /// Edits an object directly, as `kubectl edit` would; returns false when it does not exist.
    pub fn edit(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.state();
        let Some(old) = st.objects.get(&(namespace.to_owned(), name.to_owned())).cloned() else {
            return false;
        };
        let mut new = old.clone();
        f(&mut new);
        finish_update(&old, &mut new);
        if new != old {
            self.commit(&mut st, namespace, name, Some(old), Some(new));
        }
        true
    }

    /// Deletes an object directly; watchers see DELETED.
    pub fn delete(&self, namespace: &str, name: &str) -> bool {
        let mut st = self.state();
        match st.objects.get(&(namespace.to_owned(), name.to_owned())).cloned() {
            Some(old) => {
                self.commit(&mut st, namespace, name, Some(old), None);
                true
            }
            None => false,
        }
    }

    /// Stores the new version (or removes it), stamps a resourceVersion, logs and broadcasts the change.
    fn commit(
        &self,
        st: &mut State,
        namespace: &str,
        name: &str,
        old: Option<Value>,
        new: Option<Value>,
    ) -> Option<Value> {
        st.rv += 1;
        let rv = st.rv;
        let key = (namespace.to_owned(), name.to_owned());
        let new = new.map(|mut n| {
            n["metadata"]["resourceVersion"] = json!(rv.to_string());
            n
        });
        match &new {
            Some(n) => st.objects.insert(key, n.clone()),
            None => st.objects.remove(&key),
        };
        // A deleted object's last state carries the deletion's resourceVersion, as the real server sends.
        let old = old.map(|mut o| {
            if new.is_none() {
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
            }
            o
        });
        let change = Change {
            rv,
            namespace: namespace.to_owned(),
            old,
            new: new.clone(),
        };
        st.history.push(change.clone());
        let _ = self.inner.changes.send(Msg::Change(change));
        new
    }

    // ---- serving ----

    async fn serve(self, request: Request<Body>, send: Send_) {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        let path = parts.uri.path().to_owned();
        let mut query = super::parse_query(parts.uri.query().unwrap_or(""));
        let method = parts.method.clone();
        let mut record = Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            at: Instant::now(),
            status: 0,
        };

        // Not recorded: the patch type travels in the content type; leases need it (apply vs strategic).
        if parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/apply-patch"))
        {
            query.insert("__apply".into(), "true".into());
        }

        let fault = self.take_fault(&record);
        // RBAC after the connection: a request that reaches the server is authorized before anything else.
        let mut denied = match fault {
            Some(Action::ConnectionError) => None,
            _ => self.authorize_request(&method, &path, &query),
        };
        let reply = match fault {
            Some(Action::ConnectionError) => Reply::Connection,
            _ if denied.is_some() => denied.take().expect("checked"),
            Some(Action::Status(code)) => Reply::Json(code, status(code, reason(code), "injected fault")),
            Some(Action::WatchGone) => {
                let gone = status(410, "Expired", "too old resource version: 1 (2)");
                let text = line("ERROR", &gone);
                let stream = futures::stream::iter([Ok::<_, BoxError>(Frame::data(text))]);
                Reply::Watch(StreamBody::new(stream).boxed_unsync())
            }
            Some(Action::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.route(&method, &path, &query, body)
            }
            None => self.route(&method, &path, &query, body),
        };

        match reply {
            Reply::Connection => {
                self.state().requests.push(record);
                send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "fake API server is away",
                ));
            }
            Reply::Json(code, value) => {
                record.status = code;
                self.state().requests.push(record);
                let bytes = Bytes::from(serde_json::to_vec(&value).expect("json"));
                let body = Full::new(bytes).map_err(|e: Infallible| match e {}).boxed_unsync();
                send.send_response(response(code, body));
            }
            Reply::Watch(body) => {
                record.status = 200;
                self.state().requests.push(record);
                send.send_response(response(200, body));
            }
        }
    }

    /// A 403 when RBAC is on and no rule grants the request. Reviews of one's own rules are always allowed.
    fn authorize_request(&self, method: &Method, path: &str, query: &BTreeMap<String, String>) -> Option<Reply> {
        let st = self.state();
        let authz = st.authz.as_ref()?;
        let a = attributes(method, path, query)?;
        if a.group == "authorization.k8s.io" && a.resource.starts_with("selfsubject") && a.verb == "create" {
            return None;
        }
        (!authz.allows(&a)).then(|| Reply::Json(403, authz.forbidden(&a)))
    }

    /// A SelfSubjectRulesReview: the rules that apply in the asked namespace, as the real server lists them.
    fn rules_review(&self, body: Value) -> Reply {
        let st = self.state();
        let basic = json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                           "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]});
        let mut rules = vec![basic];
        match &st.authz {
            Some(a) => rules.extend(a.role.iter().chain(&a.cluster).cloned()),
            None => rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})),
        }
        let rules: Vec<Value> = rules
            .into_iter()
            .map(|mut r| {
                if let Some(m) = r.as_object_mut() {
                    m.remove("nonResourceURLs");
                }
                r
            })
            .collect();
        let mut review = body;
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["kind"] = json!("SelfSubjectRulesReview");
        review["status"] = json!({"resourceRules": rules, "nonResourceRules": [], "incomplete": false});
        Reply::Json(201, review)
    }

    fn take_fault(&self, r: &Recorded) -> Option<Action> {
        let mut st = self.state();
        if st.away_until.is_some_and(|t| Instant::now() < t) {
            return Some(Action::ConnectionError);
        }
        let fault = st
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && matches(f.matcher, r))?;
        fault.remaining -= 1;
        Some(fault.action)
    }

    fn route(&self, method: &Method, path: &str, query: &BTreeMap<String, String>, body: Value) -> Reply {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some(reply) = self.route_model(method, &segs, query, &body) {
            return reply;
        }
        match (method, segs.as_slice()) {
            (&Method::GET, ["apis"]) => Reply::Json(200, api_groups(self.state().openshift)),
            (&Method::GET, ["api"]) => Reply::Json(200, json!({"kind": "APIVersions", "versions": ["v1"]})),
            (&Method::POST, ["apis", "authorization.k8s.io", "v1", "selfsubjectrulesreviews"]) => {
                self.rules_review(body)
            }
            (_, ["apis", "apps", "v1", "namespaces", ns, "daemonsets"]) => match *method {
                Method::GET if query.get("watch").map(String::as_str) == Some("true") => self.watch(ns, query),
                Method::GET => self.list(ns, query),
                Method::POST => self.post(ns, body),
                _ => method_not_allowed(),
            },
            (_, ["apis", "apps", "v1", "namespaces", ns, "daemonsets", name]) => match *method {
                Method::GET => self.get(ns, name),
                Method::PATCH if query.contains_key("fieldManager") && query.contains_key("force") => {
                    self.apply(ns, name, body)
                }
                Method::PATCH => self.merge_patch(ns, name, body),
                Method::PUT => self.replace(ns, name, body),
                Method::DELETE => self.remove(ns, name, &body),
                _ => method_not_allowed(),
            },
            (&Method::GET, ["apis", "apps", "v1", "namespaces", _, "deployments", name]) => Reply::Json(
                404,
                status(404, "NotFound", &format!("deployments.apps \"{name}\" not found")),
            ),
            (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => self.list_pods(ns, query),
            (
                _,
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    ns,
                    "leases",
                    rest @ ..,
                ],
            ) => self.lease(method, ns, rest.first().copied(), query, body),
            (_, ["api", "v1", "namespaces", ns, "configmaps", rest @ ..]) => {
                self.configmaps(method, ns, rest.first().copied(), query)
            }
            (&Method::GET, ["api", "v1", "nodes"]) => Reply::Json(200, empty_list("NodeList")),
            (&Method::GET, ["api", "v1", "namespaces", _, "resourcequotas"]) => {
                Reply::Json(200, empty_list("ResourceQuotaList"))
            }
            (&Method::GET, ["api", "v1", "namespaces", _, "limitranges"]) => {
                Reply::Json(200, empty_list("LimitRangeList"))
            }
            (&Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => {
                let mut event = body;
                event["metadata"]["namespace"] = json!(ns);
                if event["metadata"]["name"].is_null() {
                    let n = self.state().events.len();
                    let prefix = event["metadata"]["generateName"]
                        .as_str()
                        .unwrap_or("event.")
                        .to_owned();
                    event["metadata"]["name"] = json!(format!("{prefix}{n}"));
                }
                self.state().events.push(event.clone());
                Reply::Json(201, event)
            }
            (&Method::PATCH, ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => {
                self.state().events.push(body.clone());
                Reply::Json(200, body)
            }
            _ => Reply::Json(
                404,
                status(404, "NotFound", &format!("the server could not find {path}")),
            ),
        }
    }

    /// Leases: get, create (409 AlreadyExists), and patch. An apply of `spec.holderIdentity` that another
    /// field manager owns with a different value is a 409 Conflict, as the real server answers; a strategic
    /// merge patch sets or clears fields (null removes) and takes ownership of what it sets.
    fn lease(
        &self,
        method: &Method,
        ns: &str,
        name: Option<&str>,
        query: &BTreeMap<String, String>,
        body: Value,
    ) -> Reply {
        let mut st = self.state();
        match (method, name) {
            (&Method::GET, Some(name)) => match st.leases.get(&(ns.to_owned(), name.to_owned())) {
                Some((lease, _)) => Reply::Json(200, lease.clone()),
                None => not_found(name),
            },
            (&Method::POST, None) => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                let key = (ns.to_owned(), name.clone());
                if st.leases.contains_key(&key) {
                    return Reply::Json(
                        409,
                        status(409, "AlreadyExists", &format!("leases \"{name}\" already exists")),
                    );
                }
                st.rv += 1;
                let mut lease = body;
                lease["apiVersion"] = json!("coordination.k8s.io/v1");
                lease["kind"] = json!("Lease");
                lease["metadata"]["namespace"] = json!(ns);
                lease["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                st.leases.insert(key, (lease.clone(), None));
                Reply::Json(201, lease)
            }
            (&Method::PATCH, Some(name)) => {
                let manager = query.get("fieldManager").cloned().unwrap_or_else(|| "unknown".into());
                let apply = query.contains_key("__apply");
                let key = (ns.to_owned(), name.to_owned());
                let rv = st.rv + 1;
                let Some((lease, owner)) = st.leases.get_mut(&key) else {
                    return not_found(name);
                };
                let wanted = &body["spec"]["holderIdentity"];
                let current = &lease["spec"]["holderIdentity"];
                if apply
                    && !wanted.is_null()
                    && owner.as_ref().is_some_and(|o| *o != manager)
                    && !current.is_null()
                    && wanted != current
                {
                    let message = format!(
                        "Apply failed with 1 conflict: conflict with \"{}\": .spec.holderIdentity",
                        owner.as_deref().unwrap_or("")
                    );
                    return Reply::Json(409, status(409, "Conflict", &message));
                }
                if let Some(fields) = body["spec"].as_object() {
                    if !lease["spec"].is_object() {
                        lease["spec"] = json!({});
                    }
                    for (k, v) in fields {
                        if v.is_null() {
                            lease["spec"].as_object_mut().map(|m| m.remove(k));
                        } else {
                            lease["spec"][k] = v.clone();
                        }
                    }
                    if fields.contains_key("holderIdentity") {
                        *owner = (!wanted.is_null()).then_some(manager);
                    }
                }
                lease["metadata"]["resourceVersion"] = json!(rv.to_string());
                let lease = lease.clone();
                st.rv = rv;
                Reply::Json(200, lease)
            }
            _ => method_not_allowed(),
        }
    }

    fn get(&self, ns: &str, name: &str) -> Reply {
        match self.state().objects.get(&(ns.to_owned(), name.to_owned())) {
            Some(o) => Reply::Json(200, o.clone()),
            None => not_found(name),
        }
    }

    fn list(&self, ns: &str, query: &BTreeMap<String, String>) -> Reply {
        let selector = Selector::parse(query.get("labelSelector").map_or("", String::as_str));
        let st = self.state();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((n, _), o)| n == ns && selector.matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        Reply::Json(
            200,
            json!({"kind": "DaemonSetList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
        )
    }

    /// Pods matching the selector, paged by `limit` with `continue` tokens (the offset, here).
    fn list_pods(&self, ns: &str, query: &BTreeMap<String, String>) -> Reply {
        let selector = Selector::parse(query.get("labelSelector").map_or("", String::as_str));
        let st = self.state();
        // The token is the position in the store where the previous page stopped, so a page costs its own
        // length, not a scan of every pod (100 sets x 1,000 nodes in the benches).
        let start: usize = query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
        let mut matching = st
            .pods
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, (n, p))| n == ns && selector.matches(p));
        let items: Vec<&Value> = matching.by_ref().take(limit).map(|(_, (_, p))| p).collect();
        let mut metadata = json!({"resourceVersion": st.rv.to_string()});
        if items.len() == limit
            && let Some((next, _)) = matching.next()
        {
            metadata["continue"] = json!(next.to_string());
        }
        Reply::Json(
            200,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items}),
        )
    }

    fn watch(&self, ns: &str, query: &BTreeMap<String, String>) -> Reply {
        let selector = Selector::parse(query.get("labelSelector").map_or("", String::as_str));
        let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let ns = ns.to_owned();
        // Under the lock: the backlog and the subscription, so no change is missed or seen twice.
        let (backlog, rx, current) = {
            let st = self.state();
            let rx = self.inner.changes.subscribe();
            let backlog: VecDeque<Bytes> = if since == 0 {
                st.objects
                    .iter()
                    .filter(|((n, _), o)| *n == ns && selector.matches(o))
                    .map(|(_, o)| line("ADDED", o))
                    .collect()
            } else {
                st.history
                    .iter()
                    .filter(|c| c.rv > since)
                    .filter_map(|c| translate(c, &ns, &selector))
                    .collect()
            };
            (backlog, rx, st.rv)
        };
        let mut backlog = backlog;
        // A bookmark first, as a server honouring allowWatchBookmarks may send at any time.
        if query.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
            let bookmark = json!({"kind": "DaemonSet", "apiVersion": "apps/v1", "metadata": {"resourceVersion": current.max(since).to_string()}});
            backlog.push_back(line("BOOKMARK", &bookmark));
        }
        struct W {
            backlog: VecDeque<Bytes>,
            rx: broadcast::Receiver<Msg>,
            ns: String,
            selector: Selector,
            done: bool,
        }
        let state = W {
            backlog,
            rx,
            ns,
            selector,
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut w| async move {
            if w.done {
                return None;
            }
            if let Some(b) = w.backlog.pop_front() {
                return Some((Ok(Frame::data(b)), w));
            }
            loop {
                match w.rx.recv().await {
                    Ok(Msg::Change(c)) => {
                        if let Some(b) = translate(&c, &w.ns, &w.selector) {
                            return Some((Ok(Frame::data(b)), w));
                        }
                    }
                    Ok(Msg::DropWatches) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        w.done = true;
                        let e: BoxError = Box::new(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "watch stream cut by the fake API server",
                        ));
                        return Some((Err(e), w));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Reply::Watch(StreamBody::new(stream.boxed()).boxed_unsync())
    }

    fn post(&self, ns: &str, mut body: Value) -> Reply {
        let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
            return Reply::Json(422, status(422, "Invalid", "metadata.name: Required value"));
        };
        let mut st = self.state();
        if st.objects.contains_key(&(ns.to_owned(), name.clone())) {
            return Reply::Json(
                409,
                status(
                    409,
                    "AlreadyExists",
                    &format!("daemonsets.apps \"{name}\" already exists"),
                ),
            );
        }
        st.insert_new(ns, &name, &mut body);
        let stored = self.commit(&mut st, ns, &name, None, Some(body));
        Reply::Json(201, stored.unwrap_or_default())
    }

    /// Server-side apply, simplified: the applied labels, annotations, owner references and spec replace the
    /// stored ones; uid and creationTimestamp stay; nothing is written when nothing changed.
    fn apply(&self, ns: &str, name: &str, mut body: Value) -> Reply {
        if body["metadata"]["name"].as_str() != Some(name) {
            return Reply::Json(
                400,
                status(400, "BadRequest", "the name of the object does not match the URL"),
            );
        }
        let mut st = self.state();
        let key = (ns.to_owned(), name.to_owned());
        match st.objects.get(&key).cloned() {
            None => {
                st.insert_new(ns, name, &mut body);
                let stored = self.commit(&mut st, ns, name, None, Some(body));
                Reply::Json(201, stored.unwrap_or_default())
            }
            Some(old) => {
                let mut new = old.clone();
                for field in ["labels", "annotations", "ownerReferences"] {
                    match body["metadata"].get(field) {
                        Some(v) if !v.is_null() => new["metadata"][field] = v.clone(),
                        _ => {
                            if let Some(m) = new["metadata"].as_object_mut() {
                                m.remove(field);
                            }
                        }
                    }
                }
                new["spec"] = body["spec"].clone();
                finish_update(&old, &mut new);
                if new == old {
                    return Reply::Json(200, old);
                }
                let stored = self.commit(&mut st, ns, name, Some(old), Some(new));
                Reply::Json(200, stored.unwrap_or_default())
            }
        }
    }

    fn merge_patch(&self, ns: &str, name: &str, patch: Value) -> Reply {
        let mut st = self.state();
        let Some(old) = st.objects.get(&(ns.to_owned(), name.to_owned())).cloned() else {
            return not_found(name);
        };
        let mut new = old.clone();
        merge(&mut new, &patch);
        finish_update(&old, &mut new);
        if new == old {
            return Reply::Json(200, old);
        }
        let stored = self.commit(&mut st, ns, name, Some(old), Some(new));
        Reply::Json(200, stored.unwrap_or_default())
    }

    fn replace(&self, ns: &str, name: &str, body: Value) -> Reply {
        let mut st = self.state();
        let Some(old) = st.objects.get(&(ns.to_owned(), name.to_owned())).cloned() else {
            return not_found(name);
        };
        let given = body["metadata"]["resourceVersion"].as_str();
        if given.is_some() && given != old["metadata"]["resourceVersion"].as_str() {
            return Reply::Json(
                409,
                status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on daemonsets.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                ),
            );
        }
        let mut new = body;
        for keep in ["uid", "creationTimestamp", "generation", "namespace", "resourceVersion"] {
            new["metadata"][keep] = old["metadata"][keep].clone();
        }
        new["status"] = old["status"].clone();
        new["apiVersion"] = json!("apps/v1");
        new["kind"] = json!("DaemonSet");
        finish_update(&old, &mut new);
        if new == old {
            return Reply::Json(200, old);
        }
        let stored = self.commit(&mut st, ns, name, Some(old), Some(new));
        Reply::Json(200, stored.unwrap_or_default())
    }

    fn remove(&self, ns: &str, name: &str, options: &Value) -> Reply {
        let mut st = self.state();
        let Some(old) = st.objects.get(&(ns.to_owned(), name.to_owned())).cloned() else {
            return not_found(name);
        };
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && Some(uid) != old["metadata"]["uid"].as_str()
        {
            return Reply::Json(
                409,
                status(
                    409,
                    "Conflict",
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"]
                    ),
                ),
            );
        }
        self.commit(&mut st, ns, name, Some(old.clone()), None);
        Reply::Json(200, old)
    }
}

/// A DaemonSet as the API server would return it after creating it: apiVersion/kind, uid, resourceVersion,
/// generation, creationTimestamp, server defaults (CPU ".2" rewritten to "200m") and a status.
pub fn as_served(ds: &DaemonSet, uid: u64, resource_version: u64) -> Value {
    let mut st = State {
        uid: uid.saturating_sub(1),
        ..State::default()
    };
    let mut body = serde_json::to_value(ds).expect("json");
    let ns = body["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let name = body["metadata"]["name"].as_str().expect("name").to_owned();
    st.insert_new(&ns, &name, &mut body);
    body["metadata"]["resourceVersion"] = json!(resource_version.to_string());
    body
}

impl State {
    /// Server-set metadata, defaults and status of a new object.
    fn insert_new(&mut self, ns: &str, name: &str, body: &mut Value) {
        self.uid += 1;
        body["apiVersion"] = json!("apps/v1");
        body["kind"] = json!("DaemonSet");
        let meta = &mut body["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uid));
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        default_daemonset(body);
        body["status"] = json!({
            "currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0,
            "numberReady": 0, "observedGeneration": 1,
        });
    }
}

/// Defaults and bookkeeping after a change: generation bumps when the spec changed.
fn finish_update(old: &Value, new: &mut Value) {
    default_daemonset(new);
    if new["spec"] != old["spec"] {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        new["metadata"]["generation"] = json!(generation);
        new["status"]["observedGeneration"] = json!(generation);
    }
}

/// A few of the real server's defaults, and its canonical form of CPU quantities (".2" → "200m").
fn default_daemonset(ds: &mut Value) {
    let spec = &mut ds["spec"];
    if !spec.is_object() {
        return;
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    let pod = &mut spec["template"]["spec"];
    set_default(pod, "restartPolicy", json!("Always"));
    set_default(pod, "dnsPolicy", json!("ClusterFirst"));
    set_default(pod, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = pod[list].as_array_mut() {
            for c in containers {
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                for kind in ["requests", "limits"] {
                    if let Some(cpu) = c["resources"][kind]["cpu"].as_str().and_then(canonical_cpu) {
                        c["resources"][kind]["cpu"] = json!(cpu);
                    }
                }
            }
        }
    }
}

fn set_default(v: &mut Value, key: &str, value: Value) {
    if let Some(m) = v.as_object_mut() {
        m.entry(key).or_insert(value);
    }
}

/// ".2" → "200m", "0.05" → "50m"; whole numbers and millis stay as written.
fn canonical_cpu(q: &str) -> Option<String> {
    if !q.contains('.') {
        return None;
    }
    let cores: f64 = q.parse().ok()?;
    Some(format!("{}m", (cores * 1000.0).round() as i64))
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Equality-based label selector: `a=b`, `a==b`, `a!=b`, `a` (exists), `!a`.
#[derive(Debug, Clone, Default)]
pub struct Selector(Vec<(String, Op)>);

#[derive(Debug, Clone)]
enum Op {
    Eq(String),
    Ne(String),
    Exists,
    Absent,
}

impl Selector {
    pub fn parse(s: &str) -> Self {
        Self(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    if let Some((k, v)) = t.split_once("!=") {
                        (k.to_owned(), Op::Ne(v.to_owned()))
                    } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                        (k.to_owned(), Op::Eq(v.to_owned()))
                    } else if let Some(k) = t.strip_prefix('!') {
                        (k.to_owned(), Op::Absent)
                    } else {
                        (t.to_owned(), Op::Exists)
                    }
                })
                .collect(),
        )
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(want) => v != Some(want.as_str()),
                Op::Exists => v.is_some(),
                Op::Absent => v.is_none(),
            }
        })
    }
}

/// How one change looks to a watch on `ns` with `selector`: an object leaving the selection is DELETED
/// for that watch, one entering it is ADDED.
fn translate(c: &Change, ns: &str, selector: &Selector) -> Option<Bytes> {
    if c.namespace != ns {
        return None;
    }
    let was = c.old.as_ref().is_some_and(|o| selector.matches(o));
    let is = c.new.as_ref().is_some_and(|n| selector.matches(n));
    match (was, is, &c.new) {
        (true, true, Some(n)) => Some(line("MODIFIED", n)),
        (false, true, Some(n)) => Some(line("ADDED", n)),
        (true, false, Some(n)) => {
            let mut gone = n.clone();
            gone["metadata"]["resourceVersion"] = json!(c.rv.to_string());
            Some(line("DELETED", &gone))
        }
        (true, _, None) => Some(line("DELETED", c.old.as_ref()?)),
        _ => None,
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    text.push(b'\n');
    Bytes::from(text)
}

fn matches(m: Match, r: &Recorded) -> bool {
    match m {
        Match::Any => true,
        Match::Apply => r.is_apply(),
        Match::DaemonSetWrites => r.is_daemonset_write(),
        Match::DaemonSetDeletes => r.is_daemonset_request() && r.method == Method::DELETE,
        Match::Watch => r.is_watch(),
        Match::RulesReview => r.path.ends_with("/selfsubjectrulesreviews"),
        Match::List => {
            r.is_daemonset_request() && r.method == Method::GET && !r.is_watch() && r.path.ends_with("/daemonsets")
        }
    }
}

fn response(code: u16, body: ResBody) -> Response<ResBody> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status code"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("response")
}

fn reason(code: u16) -> &'static str {
    match code {
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn not_found(name: &str) -> Reply {
    Reply::Json(
        404,
        status(404, "NotFound", &format!("daemonsets.apps \"{name}\" not found")),
    )
}

fn node_not_found(name: &str) -> Reply {
    Reply::Json(404, status(404, "NotFound", &format!("nodes \"{name}\" not found")))
}

/// RFC 6902 on the paths the controller uses (object keys, array indices, `-` to append).
fn json_patch(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    fn split(path: &str) -> Vec<String> {
        path.split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect()
    }
    fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
        let mut at = doc;
        for seg in path {
            at = match at {
                Value::Object(m) => m.get_mut(seg)?,
                Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    }
    for op in ops {
        let path = split(op["path"].as_str().unwrap_or_default());
        let (last, head) = path.split_last().ok_or("empty path")?;
        let value = op["value"].clone();
        let target = parent(doc, head).ok_or_else(|| format!("path {} not found", op["path"]))?;
        match op["op"].as_str() {
            Some("test") => {
                let current = match target {
                    Value::Object(m) => m.get(last).cloned(),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i).cloned()),
                    _ => None,
                };
                if current.as_ref() != Some(&value) {
                    return Err(format!("testing value {} failed: test failed", op["path"]));
                }
            }
            Some("add" | "replace") => match target {
                Value::Object(m) => {
                    if op["op"] == "replace" && !m.contains_key(last) {
                        return Err(format!(
                            "replace operation does not apply: doc is missing path: {}",
                            op["path"]
                        ));
                    }
                    m.insert(last.clone(), value);
                }
                Value::Array(a) if last == "-" => a.push(value),
                Value::Array(a) => {
                    let i: usize = last.parse().map_err(|_| "bad index")?;
                    if op["op"] == "replace" {
                        *a.get_mut(i).ok_or("index out of range")? = value;
                    } else {
                        a.insert(i.min(a.len()), value);
                    }
                }
                _ => return Err("cannot add to a scalar".into()),
            },
            Some("remove") => match target {
                Value::Object(m) => {
                    m.remove(last).ok_or("remove: missing path")?;
                }
                Value::Array(a) => {
                    let i: usize = last.parse().map_err(|_| "bad index")?;
                    if i >= a.len() {
                        return Err("index out of range".into());
                    }
                    a.remove(i);
                }
                _ => return Err("cannot remove from a scalar".into()),
            },
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

fn method_not_allowed() -> Reply {
    Reply::Json(
        405,
        status(405, "MethodNotAllowed", "the server does not allow this method"),
    )
}

fn empty_list(kind: &str) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
}

fn api_groups(openshift: bool) -> Value {
    let group = |name: &str, version: &str| {
        let gv = format!("{name}/{version}");
        json!({"name": name, "versions": [{"groupVersion": gv, "version": version}], "preferredVersion": {"groupVersion": gv, "version": version}})
    };
    let mut groups = vec![
        group("apps", "v1"),
        group("authorization.k8s.io", "v1"),
        group("events.k8s.io", "v1"),
        group("coordination.k8s.io", "v1"),
    ];
    if openshift {
        groups.push(group("route.openshift.io", "v1"));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

// ---- the rest of the cluster: quotas, limits, nodes, the puller's Deployment, and Events ----

impl FakeApi {
    /// A ResourceQuota (`spec.hard`, `status.used` given as maps of quantities).
    pub fn add_quota(&self, namespace: &str, name: &str, hard: Value, used: Value) {
        let q = json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hard": hard}, "status": {"hard": hard, "used": used}});
        self.state().model.quotas.push((namespace.to_owned(), q));
    }

    /// A LimitRange with the given `spec.limits`.
    pub fn add_limit_range(&self, namespace: &str, name: &str, limits: Value) {
        let lr = json!({"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"limits": limits}});
        self.state().model.limit_ranges.push((namespace.to_owned(), lr));
    }

    /// `count` plain nodes (no labels, no taints).
    pub fn add_nodes(&self, count: usize) {
        let mut st = self.state();
        for i in 0..count {
            let n = st.model.nodes.len() + i;
            st.model
                .nodes
                .push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{n}")}}));
        }
    }

    /// Nodes as given (e.g. with labels, taints and a realistic `status.images`).
    pub fn add_node_objects(&self, nodes: impl IntoIterator<Item = Value>) {
        self.state().model.nodes.extend(nodes);
    }

    /// The puller's own Deployment; returns its uid.
    pub fn add_deployment(&self, namespace: &str, name: &str) -> String {
        let uid = format!("d0000000-0000-4000-8000-{:012}", name.len());
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "uid": uid}});
        self.state()
            .model
            .deployments
            .insert((namespace.to_owned(), name.to_owned()), d);
        uid
    }

    /// What the DaemonSet controller does after a sync: writes `.status` (a new resourceVersion, seen by
    /// watchers). Returns false when the DaemonSet does not exist.
    pub fn set_daemonset_status(&self, namespace: &str, name: &str, desired: i32, current: i32, ready: i32) -> bool {
        self.edit(namespace, name, |ds| {
            let generation = ds["metadata"]["generation"].clone();
            ds["status"] = json!({
                "desiredNumberScheduled": desired, "currentNumberScheduled": current,
                "numberReady": ready, "updatedNumberScheduled": current, "numberMisscheduled": 0,
                "observedGeneration": generation,
            });
        })
    }

    /// What the DaemonSet controller's recorder writes when the API refuses a pod: a core/v1 Warning Event
    /// regarding the DaemonSet (its current uid), reason `FailedCreate`.
    pub fn record_failed_create(&self, namespace: &str, daemonset: &str, message: &str) {
        let uid = self
            .daemonset(namespace, daemonset)
            .and_then(|d| d.metadata.uid)
            .unwrap_or_default();
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut st = self.state();
        let n = st.model.core_events.len();
        let event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{daemonset}.{n:016x}"), "namespace": namespace, "creationTimestamp": now},
            "involvedObject": {"kind": "DaemonSet", "namespace": namespace, "name": daemonset, "uid": uid,
                "apiVersion": "apps/v1"},
            "reason": "FailedCreate", "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "daemonset-controller"}, "reportingComponent": "daemonset-controller",
            "reportingInstance": ""});
        st.model.core_events.push((namespace.to_owned(), event));
    }

    /// Drops every accepted events.k8s.io Event, as their TTL (an hour by default) does.
    pub fn forget_events(&self) {
        self.state().model.api_events.clear();
    }

    /// Lists of Events get 403 Forbidden, as with a Role that lacks `list` on events.
    pub fn forbid_event_lists(&self) {
        self.state().model.events_list_forbidden = true;
    }

    /// events.k8s.io Events the server accepted (current state, after patches).
    pub fn accepted_events(&self) -> Vec<Value> {
        self.state().model.api_events.values().cloned().collect()
    }

    /// Events the server refused, with its message.
    pub fn refused_events(&self) -> Vec<(Value, String)> {
        self.state().model.refused_events.clone()
    }

    fn route_model(
        &self,
        method: &Method,
        segs: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Option<Reply> {
        let list = |kind: &str, items: Vec<Value>| json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items});
        let in_ns = |v: &[(String, Value)], ns: &str| -> Vec<Value> {
            v.iter().filter(|(n, _)| n == ns).map(|(_, o)| o.clone()).collect()
        };
        Some(match (method, segs) {
            (&Method::GET, ["api", "v1", "namespaces", ns, "resourcequotas"]) => {
                Reply::Json(200, list("ResourceQuotaList", in_ns(&self.state().model.quotas, ns)))
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "limitranges"]) => {
                Reply::Json(200, list("LimitRangeList", in_ns(&self.state().model.limit_ranges, ns)))
            }
            (&Method::GET, ["api", "v1", "nodes"]) => {
                // Paged by `limit` with `continue` tokens (the offset), as the real server does.
                let st = self.state();
                let all = &st.model.nodes;
                let start: usize = query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
                let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
                let end = start.saturating_add(limit).min(all.len());
                let mut page = list("NodeList", all[start.min(end)..end].to_vec());
                if end < all.len() {
                    page["metadata"]["continue"] = json!(end.to_string());
                }
                Reply::Json(200, page)
            }
            (&Method::PATCH, ["api", "v1", "nodes", name, "status"]) => self.patch_node_status(name, body),
            (&Method::PATCH, ["api", "v1", "nodes", name]) => self.patch_node(name, body),
            (&Method::GET, ["api", "v1", "nodes", name]) => {
                let st = self.state();
                match st.model.nodes.iter().find(|n| n["metadata"]["name"] == *name) {
                    Some(n) => Reply::Json(200, n.clone()),
                    None => node_not_found(name),
                }
            }
            (&Method::GET, ["apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
                let found = self
                    .state()
                    .model
                    .deployments
                    .get(&(ns.to_string(), name.to_string()))
                    .cloned();
                let found = found?;
                Reply::Json(200, found)
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "events"]) => self.list_core_events(ns, query),
            (&Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => self.create_event(ns, body),
            (&Method::PATCH, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", name]) => {
                self.patch_event(ns, name, body)
            }
            _ => return None,
        })
    }

    /// The nodes as stored now (after the controller's patches).
    pub fn nodes(&self) -> Vec<Value> {
        self.state().model.nodes.clone()
    }

    /// Changes a node as its kubelet or another controller would.
    pub fn edit_node(&self, name: &str, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.state();
        match st.model.nodes.iter_mut().find(|n| n["metadata"]["name"] == name) {
            Some(n) => {
                f(n);
                true
            }
            None => false,
        }
    }

    /// A strategic-merge patch of a node's status, as the kubelet and controllers write conditions: the
    /// `conditions` list merges by `type` (an entry replaces the same type's fields, others stay); other
    /// fields merge as a JSON merge patch.
    fn patch_node_status(&self, name: &str, patch: &Value) -> Reply {
        let mut st = self.state();
        st.rv += 1;
        let rv = st.rv;
        let Some(node) = st.model.nodes.iter_mut().find(|n| n["metadata"]["name"] == name) else {
            return node_not_found(name);
        };
        let mut patch = patch.clone();
        if let Some(given) = patch["status"].as_object_mut().and_then(|s| s.remove("conditions")) {
            if !node["status"]["conditions"].is_array() {
                node["status"]["conditions"] = json!([]);
            }
            let list = node["status"]["conditions"].as_array_mut().expect("array");
            for c in given.as_array().into_iter().flatten() {
                if c["$patch"] == "delete" {
                    list.retain(|x| x["type"] != c["type"]);
                    continue;
                }
                match list.iter_mut().find(|x| x["type"] == c["type"]) {
                    Some(existing) => merge(existing, c),
                    None => list.push(c.clone()),
                }
            }
        }
        if let Some(status) = patch
            .get("status")
            .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        {
            merge(&mut node["status"], status);
        }
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        Reply::Json(200, node.clone())
    }

    /// A patch of a node: a JSON patch (a list of ops: test, add, replace, remove; a failed test is the
    /// real server's 422) or a JSON merge patch (an object).
    fn patch_node(&self, name: &str, patch: &Value) -> Reply {
        let mut st = self.state();
        st.rv += 1;
        let rv = st.rv;
        let Some(node) = st.model.nodes.iter_mut().find(|n| n["metadata"]["name"] == name) else {
            return node_not_found(name);
        };
        let mut new = node.clone();
        match patch.as_array() {
            Some(ops) => {
                if let Err(e) = json_patch(&mut new, ops) {
                    return Reply::Json(422, status(422, "Invalid", &e));
                }
            }
            None => merge(&mut new, patch),
        }
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        *node = new.clone();
        Reply::Json(200, new)
    }

    /// core/v1 Events, filtered by a field selector (`a.b=v` terms, ANDed) and paged like pods.
    fn list_core_events(&self, ns: &str, query: &BTreeMap<String, String>) -> Reply {
        if self.state().model.events_list_forbidden {
            let message = format!(
                "events is forbidden: User \"system:serviceaccount:{ns}:kip\" cannot list resource \"events\" in API group \"\" in the namespace \"{ns}\""
            );
            return Reply::Json(403, status(403, "Forbidden", &message));
        }
        let terms: Vec<(String, String)> = query
            .get("fieldSelector")
            .map(|f| {
                f.split(',')
                    .filter_map(|t| t.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for (k, _) in &terms {
            let known = [
                "involvedObject.kind",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.namespace",
                "reason",
                "type",
            ];
            if !known.contains(&k.as_str()) {
                let message = format!("field label not supported: {k}");
                return Reply::Json(400, status(400, "BadRequest", &message));
            }
        }
        let st = self.state();
        let all: Vec<&Value> = st
            .model
            .core_events
            .iter()
            .filter(|(n, _)| n == ns)
            .map(|(_, e)| e)
            .filter(|e| {
                terms.iter().all(|(k, v)| {
                    let value = k.split('.').fold(*e, |at, part| &at[part]);
                    value.as_str() == Some(v.as_str())
                })
            })
            .collect();
        let start: usize = query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(all.len());
        let items: Vec<&Value> = all[start.min(end)..end].to_vec();
        let mut metadata = json!({"resourceVersion": st.rv.to_string()});
        if end < all.len() {
            metadata["continue"] = json!(end.to_string());
        }
        Reply::Json(
            200,
            json!({"kind": "EventList", "apiVersion": "v1", "metadata": metadata, "items": items}),
        )
    }

    fn create_event(&self, ns: &str, body: &Value) -> Reply {
        let mut event = body.clone();
        if event["metadata"]["namespace"].is_null() {
            event["metadata"]["namespace"] = json!(ns);
        }
        let name = event["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if let Err(field) = validate_event(ns, &event) {
            let message = format!("Event.events.k8s.io {name:?} is invalid: {field}");
            self.state().model.refused_events.push((event, message.clone()));
            return Reply::Json(422, status(422, "Invalid", &message));
        }
        let mut st = self.state();
        let key = (ns.to_owned(), name.clone());
        if st.model.api_events.contains_key(&key) {
            let message = format!("events.events.k8s.io {name:?} already exists");
            return Reply::Json(409, status(409, "AlreadyExists", &message));
        }
        st.model.api_events.insert(key, event.clone());
        st.events.push(event.clone());
        Reply::Json(201, event)
    }

    /// A merge patch of an Event: only the series may change (the note and the rest are immutable).
    fn patch_event(&self, ns: &str, name: &str, patch: &Value) -> Reply {
        let mut st = self.state();
        let Some(old) = st.model.api_events.get(&(ns.to_owned(), name.to_owned())).cloned() else {
            let message = format!("events.events.k8s.io {name:?} not found");
            return Reply::Json(404, status(404, "NotFound", &message));
        };
        let mut new = old.clone();
        merge(&mut new, patch);
        let changed: Vec<&String> = new
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| *k != "series" && *k != "metadata" && old.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        let invalid = if let Some(field) = changed.first() {
            Some(format!("{field}: Invalid value: field is immutable"))
        } else {
            validate_event(ns, &new).err()
        };
        if let Some(field) = invalid {
            let message = format!("Event.events.k8s.io {name:?} is invalid: {field}");
            st.model.refused_events.push((new, message.clone()));
            return Reply::Json(422, status(422, "Invalid", &message));
        }
        st.model
            .api_events
            .insert((ns.to_owned(), name.to_owned()), new.clone());
        st.events.push(new.clone());
        Reply::Json(200, new)
    }
}

/// The checks the real API server makes on a new events.k8s.io/v1 Event (ValidateEventCreate); the first
/// failing field, as the server names it.
fn validate_event(ns: &str, e: &Value) -> Result<(), String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let name = text(&e["metadata"]["name"]);
    let dns_subdomain = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if !dns_subdomain {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain"
        ));
    }
    let regarding_ns = text(&e["regarding"]["namespace"]);
    if !regarding_ns.is_empty() && regarding_ns != ns {
        return Err(format!(
            "regarding.namespace: Invalid value: {regarding_ns:?}: does not match event.namespace"
        ));
    }
    // An Event about a cluster-scoped object (a Node) may only live in `default`, as the real API says.
    if regarding_ns.is_empty() && !text(&e["regarding"]["kind"]).is_empty() && ns != "default" {
        return Err("involvedObject.namespace: Invalid value: \"\": does not match event.namespace".into());
    }
    if e["eventTime"].is_null() {
        return Err("eventTime: Required value".into());
    }
    if !e["series"].is_null() && e["series"]["count"].as_i64().is_none_or(|c| c < 2) {
        return Err("series.count: Invalid value: should be at least 2".into());
    }
    for field in ["reportingController", "reportingInstance", "action", "reason"] {
        let value = text(&e[field]);
        if value.is_empty() {
            return Err(format!("{field}: Required value"));
        }
        if field != "reportingController" && value.len() > 128 {
            return Err(format!("{field}: Too long: may not be more than 128 bytes"));
        }
    }
    // A qualified name: an optional DNS-subdomain prefix and a name of at most 63 alphanumerics, '-', '_', '.'.
    let controller = text(&e["reportingController"]);
    let local = controller.rsplit('/').next().unwrap_or_default();
    let qualified = local.len() <= 63
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && local.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && local.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if !qualified {
        return Err(format!(
            "reportingController: Invalid value: {controller:?}: must be a qualified name"
        ));
    }
    let kind = text(&e["type"]);
    if kind != "Normal" && kind != "Warning" {
        return Err(format!(
            "type: Unsupported value: {kind:?}: supported values: \"Normal\", \"Warning\""
        ));
    }
    if text(&e["note"]).len() > 1024 {
        return Err("note: Too long: may not be more than 1024 bytes".into());
    }
    if e["regarding"].is_null() {
        return Err("regarding: Required value".into());
    }
    Ok(())
}
