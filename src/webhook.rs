//! The validating admission webhook: a broken config ConfigMap is refused at `kubectl apply`, with every
//! problem and its line:col, exactly as `check` reports them.
//!
//! Three parts:
//! - [`review`] (pure): an `admission.k8s.io/v1` AdmissionReview in, the AdmissionReview answer out. Only
//!   the config ConfigMap is looked at (label [`CONFIG_LABEL`]=`true`, or the name given with
//!   `--config-map`, in the webhook's namespace); anything else is allowed. No side effects, so dry-run
//!   requests are answered the same way (`sideEffects: None`).
//! - [`serve`]: `POST /validate` over TLS (rustls with ring), with a certificate that can be swapped while
//!   serving ([`CertStore`]).
//! - [`run`]: the self-managed certificates (a CA and a serving certificate, kept in one Secret, reused
//!   while valid, renewed when less than a third of their validity is left) and the
//!   ValidatingWebhookConfiguration (created if missing, patched if labelled ours, never touched otherwise),
//!   whose `caBundle` follows the CA. Without permission for either (a 403 at start or at a later look):
//!   `kip_permission_denied{verb,resource}` set, one warning, no webhook; the controller runs on. Or, with
//!   `--webhook-cert-dir`, the pair in a directory managed outside ([`CertFiles`]: cert-manager, OpenShift's
//!   service CA), read again when it changes, with no API call at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize as _;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::{self, VarSource};
use crate::metrics::PermissionLabel;
use crate::{k8s, labels, rbac};

/// The label the chart puts on the config ConfigMap; the webhook configuration's `objectSelector` matches it.
pub const CONFIG_LABEL: &str = "kubernetes-image-puller.io/config";
/// The path the API server posts AdmissionReviews to.
pub const PATH: &str = "/validate";
/// The name of the one webhook in the configuration (a fully qualified name, as the API requires).
pub const WEBHOOK_NAME: &str = "config.kubernetes-image-puller.io";
/// Default name of the Secret holding the CA and the serving certificate.
pub const DEFAULT_SECRET: &str = "kubernetes-image-puller-webhook-tls";
/// Default name of the ValidatingWebhookConfiguration.
pub const DEFAULT_CONFIGURATION: &str = "kubernetes-image-puller";
/// Default validity of the CA and the serving certificate.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest AdmissionReview read: a ConfigMap holds at most 1 MiB, an UPDATE carries it twice, JSON escapes it.
pub const MAX_REVIEW_BYTES: usize = 6 * 1024 * 1024;
/// The API server waits this long for an answer, then applies `failurePolicy: Ignore`.
pub const TIMEOUT_SECONDS: i32 = 5;

const NOT_BEFORE_ANNOTATION: &str = "kubernetes-image-puller.io/not-before";
const NOT_AFTER_ANNOTATION: &str = "kubernetes-image-puller.io/not-after";
const NAMES_ANNOTATION: &str = "kubernetes-image-puller.io/dns-names";

/// Which object is the config: a ConfigMap in `namespace` labelled [`CONFIG_LABEL`]=`true` or named
/// `config_map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub config_map: Option<String>,
}

impl Target {
    fn is_config(&self, request: &Request, object: &Value) -> bool {
        let kind = &request.kind;
        if !kind["group"].as_str().unwrap_or("").is_empty() || kind["kind"].as_str() != Some("ConfigMap") {
            return false;
        }
        let meta = &object["metadata"];
        let namespace = request.namespace.as_str().or(meta["namespace"].as_str());
        if namespace != Some(self.namespace.as_str()) {
            return false;
        }
        let labelled = meta["labels"][CONFIG_LABEL].as_str() == Some("true");
        let named = self.config_map.is_some() && meta["name"].as_str() == self.config_map.as_deref();
        labelled || named
    }
}

/// The parts of an AdmissionReview the answer looks at, each as loosely typed as JSON indexing would take it.
/// Everything else is skipped unbuilt: above all the `oldObject` of an UPDATE, a second copy of the config.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Review {
    request: Request,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Request {
    uid: Value,
    kind: Value,
    name: Value,
    namespace: Value,
    object: Value,
}

/// Why a body is not an AdmissionReview (answered with 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an admission.k8s.io/v1 AdmissionReview with a request")]
    NoRequest,
}

/// Answers one AdmissionReview: allowed, or refused with the config's problems (the `check` command's text:
/// `configmap/NAME:config.toml: N problems:` then one `- ...:LINE:COL: field: message` line each). Pure.
pub fn review(body: &[u8], target: &Target, env: &dyn VarSource) -> Result<Value, ReviewError> {
    let Review { mut request } = serde_json::from_slice(body)?;
    let Some(uid) = request.uid.as_str() else {
        return Err(ReviewError::NoRequest);
    };
    let refusal = if request.object.is_object() && target.is_config(&request, &request.object) {
        let object = std::mem::take(&mut request.object);
        problems_of(&request, object, env)
    } else {
        None
    };
    let response = match refusal {
        None => json!({"uid": uid, "allowed": true}),
        Some(message) => json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 422, "reason": "Invalid", "message": message},
        }),
    };
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// The problems of the ConfigMap's data as `check` words them, or `None` when the config is valid.
fn problems_of(request: &Request, mut object: Value, env: &dyn VarSource) -> Option<String> {
    let data = object.get_mut("data").map(Value::take);
    let name = object["metadata"]["name"]
        .as_str()
        .or(request.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("(new)");
    let data: BTreeMap<String, String> = match data {
        None | Some(Value::Null) => BTreeMap::new(),
        // Taken out of the parsed body: its strings move into the map, the config is not copied again.
        Some(data) => match BTreeMap::<String, String>::deserialize(data) {
            Ok(data) => data,
            Err(e) => return Some(format!("configmap/{name}: data is not a map of strings: {e}")),
        },
    };
    config::load_config_map(name, &data, env).err().map(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------------------
// Certificates

/// A CA and a serving certificate signed by it, PEM-encoded, with the validity and names they were made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The serving certificate's DNS names (or IP addresses), sorted.
    pub names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot use the webhook certificate: {0}")]
    Use(String),
}

fn offset_date_time(unix: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| TlsError::Use(e.to_string()))
}

impl Tls {
    /// A new CA and serving certificate for `names`, valid from a minute before `now` (clock skew) for
    /// `validity`.
    pub fn generate(names: &[String], validity: Duration, now: i64) -> Result<Self, TlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let not_before = now - 60;
        let not_after = now.saturating_add(i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 2));
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "kubernetes-image-puller webhook CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = offset_date_time(not_before)?;
        ca.not_after = offset_date_time(not_after)?;
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        let mut leaf = CertificateParams::new(names.clone())?;
        leaf.distinguished_name.push(
            DnType::CommonName,
            names
                .first()
                .cloned()
                .unwrap_or_else(|| "kubernetes-image-puller".into()),
        );
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf.not_before = offset_date_time(not_before)?;
        leaf.not_after = offset_date_time(not_after)?;
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
            not_before,
            not_after,
            names,
        })
    }

    /// Whether these certificates should be replaced at `now`: made for other names, not yet valid, or with
    /// less than a third of their validity left.
    pub fn needs_renewal(&self, names: &[String], now: i64) -> bool {
        let mut wanted = names.to_vec();
        wanted.sort();
        wanted.dedup();
        let total = self.not_after - self.not_before;
        wanted != self.names || now < self.not_before || total <= 0 || (self.not_after - now) * 3 < total
    }

    /// When [`Tls::needs_renewal`] turns true (unix seconds).
    pub fn renew_at(&self) -> i64 {
        self.not_after - (self.not_after - self.not_before) / 3
    }

    /// The serving certificate and key as rustls uses them.
    pub fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        certified_key(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }

    /// The Secret holding these certificates (type `kubernetes.io/tls`, plus `ca.crt`).
    pub fn to_secret(&self, name: &str, namespace: &str) -> Secret {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGER.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([
                    (NOT_BEFORE_ANNOTATION.to_owned(), self.not_before.to_string()),
                    (NOT_AFTER_ANNOTATION.to_owned(), self.not_after.to_string()),
                    (NAMES_ANNOTATION.to_owned(), self.names.join(",")),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("ca.crt".to_owned(), bytes(&self.ca_pem)),
                ("tls.crt".to_owned(), bytes(&self.cert_pem)),
                ("tls.key".to_owned(), bytes(&self.key_pem)),
            ])),
            ..Secret::default()
        }
    }

    /// The certificates a Secret written by [`Tls::to_secret`] holds, or `None` when it holds none (or
    /// something else).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let annotations = secret.metadata.annotations.as_ref()?;
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        let tls = Self {
            ca_pem: text("ca.crt")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
            not_before: annotations.get(NOT_BEFORE_ANNOTATION)?.parse().ok()?,
            not_after: annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?,
            names: annotations
                .get(NAMES_ANNOTATION)?
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        // Unusable data (edited by hand) is replaced rather than served.
        tls.certified_key().ok().map(|_| tls)
    }
}

/// A PEM certificate chain and its PEM private key as rustls serves them; refused when the key is not the
/// certificate's.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let use_err = |e: &dyn std::fmt::Display| TlsError::Use(e.to_string());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| use_err(&e))?;
    if chain.is_empty() {
        return Err(TlsError::Use("no certificate in the PEM data".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| use_err(&e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| use_err(&e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Use(format!("the key is not the certificate's: {e}")))?;
    Ok(certified)
}

/// The serving certificate and key in a directory managed outside (`--webhook-cert-dir`: a mounted Secret
/// of type `kubernetes.io/tls`, issued by cert-manager or OpenShift's service CA). Read again by
/// [`CertFiles::reload`]; the kubelet swaps a mounted Secret's files at once (its `..data` symlink), and a
/// pair read while it changes is read again.
#[derive(Debug)]
pub struct CertFiles {
    dir: std::path::PathBuf,
    last: Option<Read>,
}

/// What one read of the directory found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Pair(Vec<u8>, Vec<u8>),
    Failed(String),
}

/// The certificate (chain) and key file names of a `kubernetes.io/tls` Secret.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
/// How often `--webhook-cert-dir` is read again.
pub const CERT_DIR_POLL: Duration = Duration::from_secs(30);

impl CertFiles {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            last: None,
        }
    }

    fn read(&self) -> Read {
        let file = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        // The certificate and the key, or None when read across a swap.
        type Attempt = Result<Option<(Vec<u8>, Vec<u8>)>, String>;
        let attempt = || -> Attempt {
            let cert = file(CERT_FILE)?;
            let key = file(KEY_FILE)?;
            // The same certificate after the key: not read across a swap.
            Ok((file(CERT_FILE)? == cert).then_some((cert, key)))
        };
        for _ in 0..3 {
            match attempt() {
                Ok(Some((cert, key))) => return Read::Pair(cert, key),
                Ok(None) => {} // swapped while read: read the new pair
                Err(e) => return Read::Failed(e),
            }
        }
        Read::Failed(format!("{} keeps changing while read", self.dir.display()))
    }

    /// Reads the directory again. `Ok(Some)`: a new usable pair, to be served; `Ok(None)`: nothing new since
    /// the last call; `Err`: something new that cannot be served (missing or unreadable files, a key that is
    /// not the certificate's), returned once until the files change again.
    pub fn reload(&mut self) -> Result<Option<CertifiedKey>, TlsError> {
        let read = self.read();
        if self.last.as_ref() == Some(&read) {
            return Ok(None);
        }
        self.last = Some(read.clone());
        match read {
            Read::Pair(cert, key) => certified_key(&cert, &key)
                .map(Some)
                .map_err(|e| TlsError::Use(format!("{} in {}: {e}", CERT_FILE, self.dir.display()))),
            Read::Failed(e) => Err(TlsError::Use(e)),
        }
    }
}

/// The serving certificate, swapped in place on renewal (new connections get the new one).
#[derive(Debug)]
pub struct CertStore(RwLock<Arc<CertifiedKey>>);

impl CertStore {
    pub fn new(key: CertifiedKey) -> Self {
        Self(RwLock::new(Arc::new(key)))
    }

    pub fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Server

/// Longest time a client may take for the TLS handshake, and for a whole connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Most connections at once; more are closed at once (the API server retries, then ignores).
const MAX_CONNECTIONS: usize = 64;

#[derive(Clone)]
struct WebhookState {
    target: Arc<Target>,
}

fn router(target: Arc<Target>) -> Router {
    Router::new()
        .route(PATH, post(validate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(WebhookState { target })
}

async fn validate(State(state): State<WebhookState>, body: Bytes) -> Response {
    match review(&body, &state.target, &config::Env) {
        Ok(answer) => {
            if answer["response"]["allowed"] == Value::Bool(false) {
                tracing::info!("webhook refused a config ConfigMap");
            }
            ([(header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// Binds `addr` (so a taken port is reported at once) and returns the bound address and the server future,
/// which serves `POST /validate` over TLS with `certs` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    certs: Arc<CertStore>,
    target: Arc<Target>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()> + Send + 'static)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let router = router(target);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(addr = %bound, path = PATH, "serving the admission webhook");
    let server = async move {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "webhook accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // every slot busy: closed at once
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                    return;
                };
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(crate::http::HEADER_READ_TIMEOUT);
                let service = hyper_util::service::TowerToHyperService::new(router);
                let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            });
        }
    };
    Ok((bound, server))
}

// ---------------------------------------------------------------------------------------------------------
// Registration and certificate management

/// How the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `clientConfig.url` (development and tests outside a cluster).
    Url(String),
    /// `clientConfig.service`: this Service in the webhook's namespace, port 443 unless given.
    Service { name: String, port: Option<i32> },
}

/// The webhook's settings (see `--webhook-*` in `cli.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub addr: SocketAddr,
    /// How the API server reaches it; `None` only with `cert_dir` (registration is then managed outside).
    pub endpoint: Option<Endpoint>,
    /// `--webhook-cert-dir`: serve `tls.crt`/`tls.key` from here (cert-manager, OpenShift's service CA),
    /// read again every [`CERT_DIR_POLL`]; the Secret and the configuration (its `caBundle`) are then
    /// managed outside and never touched, so no permission is needed.
    pub cert_dir: Option<std::path::PathBuf>,
    pub secret: String,
    pub configuration: String,
    pub validity: Duration,
    pub config_map: Option<String>,
    /// `POD_NAMESPACE`; else the client's default namespace.
    pub namespace: Option<String>,
}

/// The DNS names (or IP addresses) the serving certificate is for.
pub fn dns_names(endpoint: &Endpoint, namespace: &str) -> Vec<String> {
    match endpoint {
        Endpoint::Url(url) => url_host(url).into_iter().collect(),
        Endpoint::Service { name, .. } => vec![
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
        ],
    }
}

/// The host of an `https://HOST[:PORT]/...` URL (brackets of an IPv6 address removed).
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// The ValidatingWebhookConfiguration the controller keeps, as a JSON object (created as is, or sent as a
/// merge patch).
pub fn configuration(name: &str, endpoint: &Endpoint, namespace: &str, ca_bundle_pem: &str) -> Value {
    use base64::Engine;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_bundle_pem);
    let client_config = match endpoint {
        Endpoint::Url(url) => json!({"url": url, "caBundle": ca_bundle}),
        Endpoint::Service { name, port } => json!({
            "service": {"name": name, "namespace": namespace, "path": PATH, "port": port.unwrap_or(443)},
            "caBundle": ca_bundle,
        }),
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {labels::MANAGED_BY: labels::MANAGER}},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": client_config,
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["configmaps"],
                "scope": "Namespaced",
            }],
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1"],
            "objectSelector": {"matchLabels": {CONFIG_LABEL: "true"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        }],
    })
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The RBAC group and resource of the webhook's two kinds of objects.
const SECRETS: (&str, &str) = ("", "secrets");
const CONFIGURATIONS: (&str, &str) = ("admissionregistration.k8s.io", "validatingwebhookconfigurations");

/// Why the certificates or the registration could not be set up.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    /// An API call failed; `verb` on `group`/`resource` is what RBAC must grant for it.
    #[error("{verb} {resource}: {source}")]
    Api {
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot build the ValidatingWebhookConfiguration: {0}")]
    Json(#[from] serde_json::Error),
}

impl SetupError {
    /// Wraps the error of `verb` on `what` ([`SECRETS`] or [`CONFIGURATIONS`]).
    fn api(verb: &'static str, what: (&'static str, &'static str)) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Api {
            verb,
            group: what.0,
            resource: what.1,
            source,
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { source: kube::Error::Api(s), .. } if s.code == 409)
    }
}

/// Loads the certificates from the Secret, or makes and stores new ones. `previous` is kept in the
/// `caBundle` during a renewal so that the old serving certificate stays trusted until the switch.
async fn ensure_certificates(
    client: &Client,
    settings: &WebhookSettings,
    namespace: &str,
    names: &[String],
) -> Result<(Tls, Option<Tls>), SetupError> {
    let live = k8s::webhook::get_secret(client, namespace, &settings.secret)
        .await
        .map_err(SetupError::api("get", SECRETS))?;
    let current = live.as_ref().and_then(Tls::from_secret);
    if let Some(tls) = &current
        && !tls.needs_renewal(names, now())
    {
        return Ok((tls.clone(), None));
    }
    let fresh = Tls::generate(names, settings.validity, now())?;
    let mut secret = fresh.to_secret(&settings.secret, namespace);
    match live {
        None => {
            k8s::webhook::create_secret(client, namespace, &secret)
                .await
                .map_err(SetupError::api("create", SECRETS))?;
        }
        Some(live) => {
            secret.metadata.resource_version = live.metadata.resource_version.clone();
            k8s::webhook::update_secret(client, namespace, &secret)
                .await
                .map_err(SetupError::api("update", SECRETS))?;
        }
    }
    tracing::info!(secret = %settings.secret, names = ?fresh.names, "webhook certificates made");
    Ok((fresh, current))
}

/// Creates the configuration if missing, or patches it if it is ours; a configuration not labelled ours
/// is left alone (with a warning). Returns whether it is registered with our CA.
async fn ensure_configuration(
    client: &Client,
    settings: &WebhookSettings,
    endpoint: &Endpoint,
    namespace: &str,
    ca_bundle_pem: &str,
) -> Result<bool, SetupError> {
    let desired = configuration(&settings.configuration, endpoint, namespace, ca_bundle_pem);
    let live = k8s::webhook::get_configuration(client, &settings.configuration)
        .await
        .map_err(SetupError::api("get", CONFIGURATIONS))?;
    match live {
        None => {
            let vwc: ValidatingWebhookConfiguration = serde_json::from_value(desired)?;
            k8s::webhook::create_configuration(client, &vwc)
                .await
                .map_err(SetupError::api("create", CONFIGURATIONS))?;
            tracing::info!(name = %settings.configuration, "ValidatingWebhookConfiguration created");
            Ok(true)
        }
        Some(live) => {
            let ours = live
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::MANAGED_BY))
                .map(String::as_str)
                == Some(labels::MANAGER);
            if !ours {
                tracing::warn!(
                    name = %settings.configuration,
                    "ValidatingWebhookConfiguration {} exists without the label {}={}: left alone; the webhook serves but may not be registered",
                    settings.configuration, labels::MANAGED_BY, labels::MANAGER
                );
                return Ok(false);
            }
            let mut patch = desired;
            if let Some(object) = patch.as_object_mut() {
                object.remove("apiVersion");
                object.remove("kind");
            }
            k8s::webhook::patch_configuration(client, &settings.configuration, &patch)
                .await
                .map_err(SetupError::api("patch", CONFIGURATIONS))?;
            Ok(true)
        }
    }
}

/// A 403: sets `kip_permission_denied{verb,resource}` (the label scheme of [`crate::rbac`]) and says once that
/// the webhook is off. Returns false (and does nothing) for any other error.
fn permission_denied(denied: &Family<PermissionLabel, Gauge>, e: &SetupError) -> bool {
    let SetupError::Api {
        verb,
        group,
        resource,
        source,
    } = e
    else {
        return false;
    };
    if !k8s::is_forbidden(source) {
        return false;
    }
    let label = rbac::permission_label(verb, group, resource);
    denied.get_or_create(&label).set(1);
    tracing::warn!(
        verb = %label.verb,
        resource = %label.resource,
        error = %source,
        "no permission to {verb} {}: the admission webhook is off; everything else works (grant the optional rows of `kubernetes-image-puller rbac` and restart to enable it)",
        label.resource
    );
    true
}

/// Shortest and longest wait before looking again after a failed look (doubling in between).
const RETRY_MIN: u64 = 60;
const LOOK_MAX: u64 = 3600;

/// Seconds until the next look: at the renewal time, and at least hourly; after `failures` failed looks in
/// a row, a minute doubling up to an hour instead (an overdue renewal that keeps failing is never retried
/// in a loop). A short `validity` (seconds, tests) retries after a sixth of it at first, so that a renewal
/// failing once still lands before the old certificate expires.
fn next_look(renew_at: i64, now: i64, failures: u32, validity: u64) -> u64 {
    if failures == 0 {
        u64::try_from(renew_at - now).unwrap_or(0).clamp(1, LOOK_MAX)
    } else {
        (validity / 6)
            .clamp(1, RETRY_MIN)
            .saturating_mul(1 << (failures - 1).min(16))
            .min(LOOK_MAX)
    }
}

/// One look: the Secret (renewed when due, here or by another replica) and the configuration. A renewed
/// CA is trusted (beside the old one) before the new certificate is served; a failed registration keeps the
/// old certificate served, and the next look tries again.
async fn look(
    client: &Client,
    settings: &WebhookSettings,
    endpoint: &Endpoint,
    namespace: &str,
    names: &[String],
    tls: &Tls,
    certs: &CertStore,
) -> Result<Tls, SetupError> {
    let (fresh, previous) = ensure_certificates(client, settings, namespace, names).await?;
    if previous.is_some() || fresh != *tls {
        let bundle = format!("{}{}", fresh.ca_pem, tls.ca_pem);
        ensure_configuration(client, settings, endpoint, namespace, &bundle).await?;
        certs.set(fresh.certified_key()?);
        tracing::info!(not_after = fresh.not_after, "webhook certificate renewed");
    } else {
        ensure_configuration(client, settings, endpoint, namespace, &fresh.ca_pem).await?;
    }
    Ok(fresh)
}

/// Runs the webhook until `stop` turns true: certificates, registration, the server and renewals. A 403 on
/// any of its calls (the Secret: get, create, update; the configuration: get, create, patch), at start or
/// later, sets `kip_permission_denied` for that verb and resource and turns the webhook off with one warning
/// (the controller runs on); so does a port that is taken. Other failures are retried at the next look.
/// With `settings.cert_dir`, the pair in that directory is served instead and no API call is made.
pub async fn run(
    client: Client,
    settings: WebhookSettings,
    denied: Family<PermissionLabel, Gauge>,
    mut stop: watch::Receiver<bool>,
) {
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    if let Some(dir) = &settings.cert_dir {
        return run_with_cert_dir(&settings, &namespace, dir, CERT_DIR_POLL, stop).await;
    }
    let Some(endpoint) = settings.endpoint.clone() else {
        tracing::warn!(
            "the admission webhook needs --webhook-url, --webhook-service or --webhook-cert-dir: the webhook is off"
        );
        return;
    };
    let names = dns_names(&endpoint, &namespace);
    // Replicas starting together race to create the Secret: the loser (409) reads the winner's.
    let mut attempt = ensure_certificates(&client, &settings, &namespace, &names).await;
    for _ in 0..2 {
        match &attempt {
            Err(e) if e.is_conflict() => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                attempt = ensure_certificates(&client, &settings, &namespace, &names).await;
            }
            _ => break,
        }
    }
    let (tls, previous) = match attempt {
        Ok(t) => t,
        Err(e) => {
            if !permission_denied(&denied, &e) {
                tracing::warn!(error = %e, "cannot set up the admission webhook's certificates: the webhook is off");
            }
            return;
        }
    };
    let key = match tls.certified_key() {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "the admission webhook is off");
            return;
        }
    };
    let certs = Arc::new(CertStore::new(key));
    let target = Arc::new(Target {
        namespace: namespace.clone(),
        config_map: settings.config_map.clone(),
    });
    let mut server_stop = stop.clone();
    let served = serve(settings.addr, certs.clone(), target, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    })
    .await;
    let server = match served {
        Ok((_, server)) => tokio::spawn(server),
        Err(e) => {
            tracing::warn!(addr = %settings.addr, error = %e, "cannot listen for the admission webhook: the webhook is off");
            return;
        }
    };
    let bundle = match &previous {
        Some(p) => format!("{}{}", tls.ca_pem, p.ca_pem),
        None => tls.ca_pem.clone(),
    };
    let mut failures = 0u32;
    let validity = settings.validity.as_secs();
    match ensure_configuration(&client, &settings, &endpoint, &namespace, &bundle).await {
        Ok(_) => {}
        Err(e) if permission_denied(&denied, &e) => {
            server.abort();
            return;
        }
        Err(e) => {
            failures = 1;
            tracing::warn!(error = %e, retry_in_seconds = next_look(0, 0, failures, validity), "cannot register the admission webhook; trying again later");
        }
    }
    let mut tls = tls;
    loop {
        // Look again at the renewal time, and at least hourly (a renewal by another replica, a deleted
        // configuration).
        let wait = next_look(tls.renew_at(), now(), failures, validity);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
        match look(&client, &settings, &endpoint, &namespace, &names, &tls, &certs).await {
            Ok(fresh) => {
                tls = fresh;
                failures = 0;
            }
            Err(e) if permission_denied(&denied, &e) => {
                server.abort();
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in_seconds = next_look(0, 0, failures, validity), "cannot renew the webhook certificate or its registration; trying again later");
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), server).await;
}

/// `--webhook-cert-dir`: serves the pair in `dir`, read again every `poll` (a changed pair is served to new
/// connections at once; one that cannot be used is reported once and the previous one kept). Waits for a
/// first usable pair (the Secret may not be issued yet). Makes no API call: the Secret and the
/// ValidatingWebhookConfiguration with its `caBundle` are managed outside.
async fn run_with_cert_dir(
    settings: &WebhookSettings,
    namespace: &str,
    dir: &std::path::Path,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut files = CertFiles::new(dir);
    let key = loop {
        match files.reload() {
            Ok(Some(key)) => break key,
            Ok(None) => {}
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "no usable admission webhook certificate yet (managed outside: cert-manager or the service CA); the webhook starts when there is one"
            ),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(poll) => {}
        }
    };
    let certs = Arc::new(CertStore::new(key));
    let target = Arc::new(Target {
        namespace: namespace.to_owned(),
        config_map: settings.config_map.clone(),
    });
    let mut server_stop = stop.clone();
    let served = serve(settings.addr, certs.clone(), target, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    })
    .await;
    let server = match served {
        Ok((_, server)) => tokio::spawn(server),
        Err(e) => {
            tracing::warn!(addr = %settings.addr, error = %e, "cannot listen for the admission webhook: the webhook is off");
            return;
        }
    };
    tracing::info!(
        dir = %dir.display(),
        "admission webhook certificate from a directory (reloaded when it changes); its Secret and registration are managed outside"
    );
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(poll) => {}
        }
        match files.reload() {
            Ok(Some(key)) => {
                certs.set(key);
                tracing::info!(dir = %dir.display(), "admission webhook certificate reloaded");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "the admission webhook certificate changed but cannot be used: still serving the previous one"
            ),
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), server).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl VarSource for NoEnv {
        fn get(&self, _name: &str) -> Option<String> {
            None
        }
        fn label(&self, name: &str) -> String {
            name.to_owned()
        }
    }

    fn target() -> Target {
        Target {
            namespace: "kip".into(),
            config_map: None,
        }
    }

    fn review_of(data: Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "kip-config",
                "namespace": "kip",
                "operation": "UPDATE",
                "dryRun": true,
                "object": {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "kip-config", "namespace": "kip", "labels": {CONFIG_LABEL: "true"}},
                    "data": data,
                },
            },
        })
        .to_string()
        .into_bytes()
    }

    fn answer(body: &[u8]) -> (bool, String) {
        let out = review(body, &target(), &NoEnv).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        let allowed = out["response"]["allowed"].as_bool().unwrap();
        let message = out["response"]["status"]["message"].as_str().unwrap_or("").to_owned();
        (allowed, message)
    }

    const VALID: &str = "namespace = \"kip\"\n\n[[sets]]\nname = \"web\"\nimages = { nginx = \"nginx:1.27\" }\n";

    #[test]
    fn a_valid_config_is_allowed() {
        let (allowed, message) = answer(&review_of(json!({"config.toml": VALID})));
        assert!(allowed, "{message}");
        assert!(message.is_empty());
    }

    #[test]
    fn a_toml_syntax_error_is_refused_with_line_and_column() {
        let text = "namespace = \"kip\"\n[[sets]\nname = \"web\"\n";
        let (allowed, message) = answer(&review_of(json!({"config.toml": text})));
        assert!(!allowed);
        assert!(message.contains("configmap/kip-config:config.toml:2:"), "{message}");
    }

    #[test]
    fn an_unknown_key_is_refused_with_line_and_column() {
        let text = format!("{VALID}colour = \"red\"\n");
        let (allowed, message) = answer(&review_of(json!({"config.toml": text})));
        assert!(!allowed);
        assert!(message.contains("configmap/kip-config:config.toml:6:1"), "{message}");
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn a_bad_quantity_is_refused_with_line_and_column_and_every_problem_is_listed() {
        let text = format!("{VALID}memory_limit = \"lots\"\ncpu_limit = \"fast\"\n");
        let (allowed, message) = answer(&review_of(json!({"config.toml": text})));
        assert!(!allowed);
        assert!(message.contains("2 problems"), "{message}");
        assert!(message.contains("config.toml:6:"), "{message}");
        assert!(message.contains("config.toml:7:"), "{message}");
        // The same text as `check`.
        let data = BTreeMap::from([("config.toml".to_owned(), text.clone())]);
        let check = config::load_config_map("kip-config", &data, &NoEnv)
            .unwrap_err()
            .to_string();
        assert_eq!(message, check);
    }

    #[test]
    fn env_style_keys_are_checked() {
        let (allowed, message) = answer(&review_of(json!({"IMAGES": "nginx=nginx:1.27", "NAMESPACE": "kip"})));
        assert!(allowed, "{message}");
        let (allowed, message) = answer(&review_of(
            json!({"IMAGES": "nginx=nginx:1.27", "NAMESPACE": "kip", "CACHING_MEMORY_LIMIT": "lots"}),
        ));
        assert!(!allowed);
        assert!(
            message.contains("configmap/kip-config:CACHING_MEMORY_LIMIT"),
            "{message}"
        );
    }

    #[test]
    fn other_objects_are_allowed() {
        let broken = json!({"config.toml": "[[sets]"});
        let mut other: Value = serde_json::from_slice(&review_of(broken.clone())).unwrap();
        other["request"]["object"]["metadata"]["labels"] = json!({});
        let (allowed, _) = answer(other.to_string().as_bytes());
        assert!(allowed, "a ConfigMap without the label");
        let mut elsewhere: Value = serde_json::from_slice(&review_of(broken.clone())).unwrap();
        elsewhere["request"]["namespace"] = json!("default");
        elsewhere["request"]["object"]["metadata"]["namespace"] = json!("default");
        assert!(answer(elsewhere.to_string().as_bytes()).0, "another namespace");
        let mut secret: Value = serde_json::from_slice(&review_of(broken.clone())).unwrap();
        secret["request"]["kind"]["kind"] = json!("Secret");
        assert!(answer(secret.to_string().as_bytes()).0, "not a ConfigMap");
        let mut delete: Value = serde_json::from_slice(&review_of(broken)).unwrap();
        delete["request"]["object"] = Value::Null;
        assert!(answer(delete.to_string().as_bytes()).0, "no object");
        assert!(review(b"{}", &target(), &NoEnv).is_err());
        assert!(review(b"not json", &target(), &NoEnv).is_err());
    }

    #[test]
    fn an_update_is_judged_by_its_new_object_alone() {
        // The API server sends the object before the edit as `oldObject`; the answer never looks at it.
        let with_old = |new: &str, old: &str| {
            let mut body: Value = serde_json::from_slice(&review_of(json!({"config.toml": new}))).unwrap();
            let mut old_object = body["request"]["object"].clone();
            old_object["data"] = json!({"config.toml": old});
            body["request"]["oldObject"] = old_object;
            answer(body.to_string().as_bytes())
        };
        let (allowed, message) = with_old(VALID, "[[sets]");
        assert!(allowed, "a fix of a broken config: {message}");
        let (allowed, message) = with_old("[[sets]", VALID);
        assert!(!allowed);
        assert!(message.contains("configmap/kip-config:config.toml:1:"), "{message}");
        let (allowed, message) = answer(&review_of(json!({"config.toml": 3})));
        assert!(!allowed);
        assert!(
            message.starts_with("configmap/kip-config: data is not a map of strings: "),
            "{message}"
        );
    }

    #[test]
    fn the_configured_name_is_checked_without_the_label() {
        let mut body: Value = serde_json::from_slice(&review_of(json!({"config.toml": "[[sets]"}))).unwrap();
        body["request"]["object"]["metadata"]["labels"] = json!({});
        let target = Target {
            namespace: "kip".into(),
            config_map: Some("kip-config".into()),
        };
        let out = review(body.to_string().as_bytes(), &target, &NoEnv).unwrap();
        assert_eq!(out["response"]["allowed"], false);
    }

    #[test]
    fn certificates_round_trip_through_the_secret_and_renew_at_two_thirds() {
        let names = vec!["kip.ns.svc".to_owned(), "kip.ns.svc.cluster.local".to_owned()];
        let tls = Tls::generate(&names, Duration::from_secs(3000), 1_000_000).unwrap();
        assert!(tls.certified_key().is_ok());
        let back = Tls::from_secret(&tls.to_secret("s", "ns")).unwrap();
        assert_eq!(back, tls);
        assert!(!tls.needs_renewal(&names, 1_000_000));
        assert!(!tls.needs_renewal(&names, 1_001_900));
        assert!(tls.needs_renewal(&names, 1_002_100));
        assert!(tls.needs_renewal(&["other.ns.svc".to_owned()], 1_000_000));
    }

    #[tokio::test]
    async fn serves_reviews_over_tls_with_its_own_ca() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = Tls::generate(&["127.0.0.1".to_owned()], Duration::from_secs(3600), now()).unwrap();
        let certs = Arc::new(CertStore::new(tls.certified_key().unwrap()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = serve("127.0.0.1:0".parse().unwrap(), certs, Arc::new(target()), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let server = tokio::spawn(server);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut stream = connector.connect(name, tcp).await.unwrap();
        let body = review_of(json!({"config.toml": "[[sets]"}));
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(r#""allowed":false"#), "{text}");
        assert!(text.contains("config.toml:1:"), "{text}");
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// Writes a pair into `dir` as the kubelet lays out a mounted Secret: the files in a directory of their
    /// own, `..data` pointing at it (swapped by a rename), `tls.crt` and `tls.key` linked through `..data`.
    fn kubelet_write(dir: &std::path::Path, version: &str, cert: &str, key: &str) {
        use std::os::unix::fs::symlink;
        let versioned = dir.join(version);
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join(CERT_FILE), cert).unwrap();
        std::fs::write(versioned.join(KEY_FILE), key).unwrap();
        let tmp = dir.join("..data_tmp");
        symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for name in [CERT_FILE, KEY_FILE] {
            if std::fs::symlink_metadata(dir.join(name)).is_err() {
                symlink(format!("..data/{name}"), dir.join(name)).unwrap();
            }
        }
    }

    fn leaf_der(tls: &Tls) -> Vec<u8> {
        CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_cert_dir_is_read_again_when_the_kubelet_swaps_it_and_a_bad_pair_is_reported_once() {
        let names = ["127.0.0.1".to_owned()];
        let one = Tls::generate(&names, Duration::from_secs(3600), now()).unwrap();
        let two = Tls::generate(&names, Duration::from_secs(3600), now()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut files = CertFiles::new(dir.path());
        // Not issued yet: said once.
        let missing = files.reload().unwrap_err().to_string();
        assert!(missing.contains("tls.crt"), "{missing}");
        assert!(files.reload().unwrap().is_none(), "reported once");
        kubelet_write(dir.path(), "..2026_12_02_10_00_00.1", &one.cert_pem, &one.key_pem);
        let key = files.reload().unwrap().expect("the first pair");
        assert_eq!(key.cert[0].as_ref(), leaf_der(&one));
        assert!(files.reload().unwrap().is_none(), "unchanged");
        // The kubelet swaps `..data`: the new pair at the next read.
        kubelet_write(dir.path(), "..2026_12_02_11_00_00.2", &two.cert_pem, &two.key_pem);
        let key = files.reload().unwrap().expect("the swapped pair");
        assert_eq!(key.cert[0].as_ref(), leaf_der(&two));
        // Unusable: reported once, nothing to serve (the caller keeps the previous pair).
        kubelet_write(dir.path(), "..3", "not a certificate", &two.key_pem);
        assert!(files.reload().is_err());
        assert!(files.reload().unwrap().is_none(), "reported once");
        kubelet_write(dir.path(), "..4", &one.cert_pem, &two.key_pem);
        let mismatch = files.reload().unwrap_err().to_string();
        assert!(mismatch.contains("not the certificate's"), "{mismatch}");
        kubelet_write(dir.path(), "..5", &one.cert_pem, &one.key_pem);
        assert_eq!(
            files.reload().unwrap().expect("usable again").cert[0].as_ref(),
            leaf_der(&one)
        );
    }

    /// POSTs a broken config's review to `addr` over TLS, trusting only `ca_pem`: the answer, or the error.
    async fn post_review(addr: SocketAddr, ca_pem: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut stream = connector.connect(name, tcp).await?;
        let body = review_of(json!({"config.toml": "[[sets]"}));
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn a_cert_dir_is_served_and_a_swapped_certificate_is_served_to_new_connections() {
        let names = ["127.0.0.1".to_owned()];
        let one = Tls::generate(&names, Duration::from_secs(3600), now()).unwrap();
        let two = Tls::generate(&names, Duration::from_secs(3600), now()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        kubelet_write(dir.path(), "..1", &one.cert_pem, &one.key_pem);
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let settings = WebhookSettings {
            addr,
            endpoint: None,
            cert_dir: Some(dir.path().to_owned()),
            secret: DEFAULT_SECRET.into(),
            configuration: DEFAULT_CONFIGURATION.into(),
            validity: DEFAULT_VALIDITY,
            config_map: None,
            namespace: Some("kip".into()),
        };
        let (stop_tx, stop) = watch::channel(false);
        let path = dir.path().to_owned();
        let running = tokio::spawn(async move {
            run_with_cert_dir(&settings, "kip", &path, Duration::from_millis(50), stop).await;
        });
        let mut answer = Err(std::io::Error::other("not tried"));
        for _ in 0..50 {
            answer = post_review(addr, &one.ca_pem).await;
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = answer.unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains(r#""allowed":false"#),
            "{text}"
        );
        kubelet_write(dir.path(), "..2", &two.cert_pem, &two.key_pem);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = post_review(addr, &two.ca_pem).await.expect("the new certificate");
        assert!(text.contains(r#""allowed":false"#), "{text}");
        assert!(post_review(addr, &one.ca_pem).await.is_err(), "the old one is gone");
        // A bad pair keeps the current one served.
        kubelet_write(dir.path(), "..3", &one.cert_pem, &two.key_pem);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(post_review(addr, &two.ca_pem).await.is_ok());
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), running)
            .await
            .unwrap()
            .unwrap();
    }

    /// The webhook entry the chart (cert-manager mode) and the OpenShift template render beside their own
    /// ValidatingWebhookConfiguration: ci/deploy-checks.sh compares theirs with the same fixture.
    #[test]
    fn the_configuration_rendered_outside_is_the_controllers_own() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhook/validating-webhook.json"
        );
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let endpoint = Endpoint::Service {
            name: "kubernetes-image-puller-metrics".into(),
            port: None,
        };
        let mut ours = configuration("kip", &endpoint, "k8s-image-puller", "PEM")["webhooks"][0].clone();
        ours["clientConfig"].as_object_mut().unwrap().remove("caBundle");
        assert_eq!(
            ours, fixture,
            "update {path} (and the chart and deploy/openshift/webhook.yaml) with it"
        );
    }

    #[test]
    fn failed_looks_back_off_from_a_minute_to_an_hour_instead_of_retrying_an_overdue_renewal_each_second() {
        // Healthy: at the renewal time, at least hourly, never sooner than a second.
        let year = DEFAULT_VALIDITY.as_secs();
        assert_eq!(next_look(1_000, 900, 0, year), 100);
        assert_eq!(next_look(100_000, 0, 0, year), 3600);
        assert_eq!(next_look(0, 900, 0, year), 1, "overdue");
        // Failing, even when overdue: 60, 120, 240 ... 3600 seconds.
        let waits: Vec<u64> = (1..=8).map(|n| next_look(0, 900, n, year)).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(next_look(0, 900, u32::MAX, year), 3600);
        // A 60 s validity (renewed at 40 s): retried after 10 s, well before the old certificate expires.
        assert_eq!(next_look(0, 900, 1, 60), 10);
        assert_eq!(next_look(0, 900, 2, 60), 20);
    }

    #[test]
    fn url_hosts_and_service_names() {
        assert_eq!(
            dns_names(&Endpoint::Url("https://127.0.0.1:8443/validate".into()), "ns"),
            ["127.0.0.1"]
        );
        assert_eq!(
            dns_names(&Endpoint::Url("https://[::1]:8443/validate".into()), "ns"),
            ["::1"]
        );
        assert_eq!(
            dns_names(
                &Endpoint::Service {
                    name: "kip".into(),
                    port: None
                },
                "ns"
            ),
            ["kip.ns.svc", "kip.ns.svc.cluster.local"]
        );
        let vwc = configuration("kip", &Endpoint::Url("https://h/validate".into()), "ns", "PEM");
        let hook = &vwc["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(
            hook["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ns"
        );
        assert_eq!(hook["objectSelector"]["matchLabels"][CONFIG_LABEL], "true");
        let parsed: ValidatingWebhookConfiguration = serde_json::from_value(vwc).unwrap();
        assert_eq!(parsed.metadata.labels.unwrap()[labels::MANAGED_BY], labels::MANAGER);
    }
}
