//! Tier 1: the controller-rs `ApiServerVerifier` pattern. A `kube::Client` over a tower-test mock; the test
//! takes each request the code under test sends, checks verb, path, query and body, and answers it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kubernetes_image_puller::k8s::Cluster;
use serde_json::{Value, json};
use tower_test::mock::{self, SendResponse};

pub type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// One request as the API server would see it.
#[derive(Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The JSON body; `Value::Null` when empty.
    pub body: Value,
}

impl Seen {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// Panics unless this is a forced server-side apply with the puller's field manager.
    pub fn assert_apply(&self, path: &str) {
        assert_eq!(self.method, Method::PATCH, "{self:?}");
        assert_eq!(self.path, path);
        assert_eq!(self.q("fieldManager"), Some("kubernetes-image-puller"), "{self:?}");
        assert_eq!(self.q("force"), Some("true"), "{self:?}");
        assert_eq!(self.content_type.as_deref(), Some("application/apply-patch+yaml"));
    }
}

pub struct Verifier(pub Handle);

/// A cluster view over a mock service, and the verifier that answers for the API server.
pub fn mock_cluster(namespace: &str) -> (Cluster, Verifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, namespace);
    (Cluster::new(client, namespace), Verifier(handle))
}

/// A client over a mock service (for code that takes a `kube::Client`), and the verifier.
pub fn mock_client(namespace: &str) -> (Client, Verifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, namespace), Verifier(handle))
}

impl Verifier {
    /// The next request; fails the test if none arrives within a second.
    pub async fn next(&mut self) -> (Seen, SendResponse<Response<Body>>) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(1), self.0.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("the client is gone");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        let seen = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: super::parse_query(parts.uri.query().unwrap_or("")),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        };
        (seen, send)
    }

    /// The next request, checked for verb and path.
    pub async fn expect(&mut self, method: Method, path: &str) -> (Seen, SendResponse<Response<Body>>) {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&method, path),
            "unexpected request {seen:?}"
        );
        (seen, send)
    }

    /// Nothing was sent and nothing is waiting.
    pub fn assert_idle(&mut self) {
        if let Some(Some((req, _))) = self.0.next_request().now_or_never() {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

pub fn respond(send: SendResponse<Response<Body>>, code: u16, body: &Value) {
    let response = Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response");
    send.send_response(response);
}

/// A `Status` object as the API server sends with an error.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}
