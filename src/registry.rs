//! Moving image tags → their current digest, over the OCI distribution API. No Kubernetes here: credentials
//! come in as plain data (the bytes of a Secret's `.dockerconfigjson` key), read by `src/k8s/`.
//!
//! - [`ImageRef`]: a parsed reference, Docker's defaults (`busybox` is `docker.io/library/busybox:latest`).
//!   One pinned by digest (`@sha256:…`) is never resolved: its digest is the answer, without a request.
//! - [`credentials_for`]: the user and password for a registry host from `.dockerconfigjson` payloads, with
//!   Docker's host matching.
//! - [`Resolver`]: one manifest `HEAD` per moving tag and check (`oci-client`: the Accept headers of the OCI
//!   index and manifest and of the Docker manifest list and v2 manifest; a `GET` only where the `HEAD` answer
//!   carries no `Docker-Content-Digest`, then the digest of the body; bearer tokens or basic auth as the
//!   registry asks). Each result, error or digest, is kept until [`Resolver::invalidate_all`] (the next check);
//!   at most a few requests run at once per registry, each within a timeout, and a registry that failed
//!   (unreachable, timeout, 5xx) is not asked again before a growing delay, its error returned meanwhile.
//! - [`RegistryError`]: what failed, classified ([`ErrorKind`], a metric label) and said plainly (Display, a
//!   status line).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::Digest as _;
use tokio::sync::Semaphore;

// ---------------------------------------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------------------------------------

/// A parsed image reference, normalised as Docker does: no registry means `docker.io`, a Docker Hub name without
/// a namespace is under `library/`, no tag and no digest means `:latest`. `index.docker.io` is `docker.io`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef(Reference);

/// An image reference that cannot be parsed; Display says why (the config's own message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ImageRefError {
    pub image: String,
    pub message: String,
}

impl ImageRef {
    /// Parses as the config's checks do ([`crate::config::rules::check_image_reference`]: ASCII, a lowercase
    /// repository), so an image the config accepts is one this accepts.
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        let error = |message: String| ImageRefError {
            image: image.to_owned(),
            message,
        };
        crate::config::rules::check_image_reference(image).map_err(error)?;
        image
            .parse::<Reference>()
            .map(Self)
            .map_err(|e| error(format!("{image:?} is not an image reference: {e}")))
    }

    /// The registry as named (`docker.io` for Docker Hub): what credentials are looked up by.
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The host requests go to (`index.docker.io` for Docker Hub, else [`Self::registry`]).
    pub fn host(&self) -> &str {
        self.0.resolve_registry()
    }

    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    /// The tag (`latest` when neither a tag nor a digest was given); `None` for `repo@digest`.
    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    /// The digest the reference is pinned to, if any (`repo@sha256:…` or `repo:tag@sha256:…`).
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// Pinned by digest: the content never changes, so it is never resolved.
    pub fn is_pinned(&self) -> bool {
        self.0.digest().is_some()
    }

    /// The same repository pinned to `digest`: `registry/repository@digest` (the tag dropped).
    pub fn pinned_to(&self, digest: &Digest) -> String {
        format!("{}/{}@{}", self.registry(), self.repository(), digest)
    }
}

/// The normalised form: `docker.io/library/busybox:latest`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A content digest as registries report it: `sha256:` and 64 lowercase hex digits (or `sha512:` and 128).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// `None` unless `s` is `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase, as the OCI spec requires).
    pub fn parse(s: &str) -> Option<Self> {
        let (algorithm, hex) = s.split_once(':')?;
        let len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return None,
        };
        let hex_ok = hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        hex_ok.then(|| Self(s.to_owned()))
    }

    /// The sha256 digest of `bytes`, as a registry computes a manifest's.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let hash = sha2::Sha256::digest(bytes);
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in hash {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Credentials from .dockerconfigjson
// ---------------------------------------------------------------------------------------------------------

/// A user and password for a registry. Debug does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Who these credentials are, without keeping the password: what cached results are tied to.
    fn fingerprint(&self) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.username.as_bytes());
        h.update([0]);
        h.update(self.password.as_bytes());
        h.finalize().into()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A `.dockerconfigjson` payload that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    #[error("not a .dockerconfigjson payload: {0}")]
    Json(String),
    #[error("auths.{key:?}.auth: {reason}")]
    Auth { key: String, reason: String },
}

/// The `auths` of one `.dockerconfigjson` payload (the JSON bytes of a `kubernetes.io/dockerconfigjson`
/// Secret's `.dockerconfigjson` key): `{"auths": {"HOST": {"auth": base64("user:pass")}}}`, or
/// `{"username": …, "password": …}` in place of `auth` (`auth` wins when both are there, as in Docker).
/// Other fields (`email`, `identitytoken`, `credHelpers`) are ignored; an entry with no credentials is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    /// (key as written, credentials), in key order.
    auths: Vec<(String, Credentials)>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl DockerConfig {
    /// Reads a payload. A bad `auth` (not base64, not UTF-8, no `:`) fails the whole payload, as in the kubelet.
    pub fn parse(json: &[u8]) -> Result<Self, DockerConfigError> {
        let parsed: DockerConfigJson =
            serde_json::from_slice(json).map_err(|e| DockerConfigError::Json(e.to_string()))?;
        let mut auths = Vec::with_capacity(parsed.auths.len());
        for (key, entry) in parsed.auths {
            let credentials = match entry.auth.as_deref().filter(|a| !a.is_empty()) {
                Some(auth) => Some(decode_auth(auth).map_err(|reason| DockerConfigError::Auth {
                    key: key.clone(),
                    reason,
                })?),
                None => match (entry.username, entry.password) {
                    (Some(u), p) if !u.is_empty() => Some(Credentials::new(u, p.unwrap_or_default())),
                    _ => None,
                },
            };
            if let Some(c) = credentials {
                auths.push((key, c));
            }
        }
        Ok(Self { auths })
    }

    /// The credentials for registry `host` (as in an image reference: `quay.io`, `127.0.0.1:5000`, `docker.io`),
    /// matched as Docker does: a key equal to the host first, else a key naming the same host once its scheme
    /// and path are dropped (`https://quay.io`, `quay.io/v1/`), case-insensitively; `docker.io`,
    /// `index.docker.io` and `registry-1.docker.io` are one host.
    pub fn credentials_for(&self, host: &str) -> Option<&Credentials> {
        if let Some((_, c)) = self.auths.iter().find(|(key, _)| key == host) {
            return Some(c);
        }
        let want = normalize_host(host);
        self.auths
            .iter()
            .find(|(key, _)| normalize_host(key) == want)
            .map(|(_, c)| c)
    }
}

/// The credentials for registry `host` from the first of `payloads` (`.dockerconfigjson` bytes, in the order of
/// the pull secrets) that has any; a payload that cannot be read is skipped (see [`DockerConfig::parse`] to
/// report it).
pub fn credentials_for<P: AsRef<[u8]>>(host: &str, payloads: &[P]) -> Option<Credentials> {
    payloads
        .iter()
        .filter_map(|p| DockerConfig::parse(p.as_ref()).ok())
        .find_map(|config| config.credentials_for(host).cloned())
}

fn decode_auth(auth: &str) -> Result<Credentials, String> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(auth.trim()).map_err(|e| format!("not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 once decoded".to_owned())?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| "decoded, it is not \"user:password\"".to_owned())?;
    Ok(Credentials::new(user, pass))
}

/// Docker's `ConvertToHostname`, lowercased, with Docker Hub's names made one.
fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let lower = key.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let host = rest.split('/').next().unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        h => h.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/// What kind of failure: [`ErrorKind::as_str`] is a metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No complete answer within the resolver's timeout.
    Timeout,
    /// 401 or 403: credentials missing, wrong, or not allowed to pull.
    Unauthorized,
    /// 404: no such repository or tag.
    NotFound,
    /// A 5xx answer.
    Server,
    /// No connection (refused, no route, name not resolved).
    Unreachable,
    /// Anything else (a malformed answer, a 429, a TLS failure, an unparsable reference).
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        Self::Timeout,
        Self::Unauthorized,
        Self::NotFound,
        Self::Server,
        Self::Unreachable,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Server => "server",
            Self::Unreachable => "unreachable",
            Self::Other => "other",
        }
    }

    /// Whether the failure is the registry's as a whole, so that it backs off: a 404 or 401 is an answer
    /// about one repository and does not.
    pub fn backs_off(self) -> bool {
        !matches!(self, Self::NotFound | Self::Unauthorized)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed resolution. Display is a status line naming the image, the registry and the cause:
/// `cannot resolve quay.io/eclipse/che-theia:next at quay.io: unauthorized: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot resolve {image} at {registry}: {kind}: {cause}")]
pub struct RegistryError {
    pub kind: ErrorKind,
    /// The host asked (`index.docker.io` for Docker Hub).
    pub registry: String,
    /// The image as given to [`Resolver::resolve`].
    pub image: String,
    pub cause: String,
}

impl RegistryError {
    fn new(kind: ErrorKind, image: &ImageRef, cause: impl Into<String>) -> Self {
        Self {
            kind,
            registry: image.host().to_owned(),
            image: image.to_string(),
            // A registry's body may end in a newline: one status line each.
            cause: cause.into().trim().replace('\n', " "),
        }
    }

    fn from_oci(image: &ImageRef, e: &OciDistributionError) -> Self {
        let kind = classify(e);
        let cause = match e {
            OciDistributionError::RegistryError { envelope, url } => {
                let messages: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect();
                format!("{url}: {}", messages.join("; "))
            }
            _ => error_chain(e),
        };
        Self::new(kind, image, cause)
    }
}

fn classify(e: &OciDistributionError) -> ErrorKind {
    use OciDistributionError as E;
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => ErrorKind::Unauthorized,
        E::ImageManifestNotFoundError(_) => ErrorKind::NotFound,
        E::RegistryError { envelope, .. } => {
            let codes = || envelope.errors.iter().map(|e| &e.code);
            if codes().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                ErrorKind::Unauthorized
            } else if codes().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
                )
            }) {
                ErrorKind::NotFound
            } else {
                ErrorKind::Other
            }
        }
        E::ServerError { code, .. } => match code {
            401 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::NotFound,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::Other,
        },
        E::RequestError(r) if r.is_timeout() => ErrorKind::Timeout,
        E::RequestError(r) if r.is_connect() => ErrorKind::Unreachable,
        E::RequestError(r) => match r.status().map(|s| s.as_u16()) {
            Some(401 | 403) => ErrorKind::Unauthorized,
            Some(404) => ErrorKind::NotFound,
            Some(500..=599) => ErrorKind::Server,
            _ => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    }
}

/// An error and its sources, `: `-joined, each said once (reqwest repeats its source in its own text).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// The resolver
// ---------------------------------------------------------------------------------------------------------

/// How a [`Resolver`] asks registries.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Requests to one registry host at once (the others wait their turn).
    pub per_registry_concurrency: usize,
    /// The limit of one resolution (token and manifest requests together), after which it is a `timeout`.
    pub timeout: Duration,
    /// After a failure of a registry as a whole ([`ErrorKind::backs_off`]) it is not asked for this long; the
    /// delay doubles at each further failure up to `backoff_max`, and a success ends it.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Registry hosts (`127.0.0.1:5000`, as in image references) asked over plain HTTP; all others over HTTPS.
    pub insecure_registries: Vec<String>,
    /// Results older than this are resolved again; `None`: kept until [`Resolver::invalidate_all`] (or
    /// [`Resolver::invalidate`]), i.e. until the next check.
    pub max_age: Option<Duration>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            per_registry_concurrency: 4,
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(5 * 60),
            insecure_registries: Vec::new(),
            max_age: None,
        }
    }
}

/// A result kept by the resolver, with when it was had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub result: Result<Digest, RegistryError>,
    pub resolved_at: SystemTime,
}

/// Resolves moving tags to digests; shared (`&self`, `Send + Sync`) by every task that asks.
pub struct Resolver {
    config: ResolverConfig,
    /// One `oci-client` per set of credentials (none: anonymous): a client keeps the first credentials it is
    /// given for a registry, and the tokens it gets with them.
    clients: Mutex<HashMap<Option<[u8; 32]>, oci_client::Client>>,
    registries: Mutex<HashMap<String, Arc<RegistryState>>>,
    /// Normalised reference → its slot. A slot's lock is held while it is resolved, so that concurrent asks of
    /// one reference make one request.
    cache: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Entry>>>>>,
}

/// The most clients kept; past it they are all dropped (a credentials rotation adds one per rotation).
const MAX_CLIENTS: usize = 64;

struct RegistryState {
    permits: Semaphore,
    backoff: Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    /// Failures in a row.
    failures: u32,
    until: Option<Instant>,
    last: Option<RegistryError>,
}

#[derive(Clone)]
struct Entry {
    credentials: Option<[u8; 32]>,
    result: Result<Digest, RegistryError>,
    at: Instant,
    resolved_at: SystemTime,
}

impl Resolver {
    /// Also installs ring as the process's default rustls crypto provider, unless one is installed already:
    /// `oci-client`'s reqwest is built without a provider of its own (so no aws-lc and no OpenSSL), and uses
    /// the default one.
    pub fn new(config: ResolverConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            config,
            clients: Mutex::default(),
            registries: Mutex::default(),
            cache: Mutex::default(),
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The digest `image` points to now. A pinned image returns its own digest without a request. A result
    /// had before (digest or error, with the same credentials) is returned without a request until
    /// [`Self::invalidate_all`] or `max_age`. During a registry's backoff, its last error is returned without a
    /// request.
    pub async fn resolve(&self, image: &str, credentials: Option<&Credentials>) -> Result<Digest, RegistryError> {
        let image = ImageRef::parse(image).map_err(|e| RegistryError {
            kind: ErrorKind::Other,
            registry: "(none)".to_owned(),
            image: e.image.clone(),
            cause: e.to_string(),
        })?;
        self.resolve_ref(&image, credentials).await
    }

    /// [`Self::resolve`] for a parsed reference.
    pub async fn resolve_ref(
        &self,
        image: &ImageRef,
        credentials: Option<&Credentials>,
    ) -> Result<Digest, RegistryError> {
        if let Some(pinned) = image.digest() {
            return Digest::parse(pinned)
                .ok_or_else(|| RegistryError::new(ErrorKind::Other, image, format!("unsupported digest {pinned}")));
        }
        let fingerprint = credentials.map(Credentials::fingerprint);
        let slot = {
            let mut cache = self.cache.lock().expect("registry cache lock");
            cache.entry(image.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(entry) = slot.as_ref()
            && entry.credentials == fingerprint
            && self.config.max_age.is_none_or(|age| entry.at.elapsed() < age)
        {
            return entry.result.clone();
        }
        let result = self.fetch(image, credentials, fingerprint).await;
        match &result {
            Ok(d) => tracing::debug!(image = %image, digest = %d, "resolved"),
            Err(e) => tracing::debug!(image = %image, kind = e.kind.as_str(), error = %e, "not resolved"),
        }
        *slot = Some(Entry {
            credentials: fingerprint,
            result: result.clone(),
            at: Instant::now(),
            resolved_at: SystemTime::now(),
        });
        result
    }

    /// The result kept for `image`, if any (none while it is being resolved).
    pub fn cached(&self, image: &str) -> Option<Cached> {
        let key = ImageRef::parse(image).ok()?.to_string();
        let slot = self.cache.lock().expect("registry cache lock").get(&key)?.clone();
        let slot = slot.try_lock().ok()?;
        slot.as_ref().map(|e| Cached {
            result: e.result.clone(),
            resolved_at: e.resolved_at,
        })
    }

    /// Forgets the result kept for `image`: the next [`Self::resolve`] asks the registry again.
    pub fn invalidate(&self, image: &str) {
        if let Ok(image) = ImageRef::parse(image) {
            self.cache
                .lock()
                .expect("registry cache lock")
                .remove(&image.to_string());
        }
    }

    /// Forgets every result kept (at the start of a check). Backoffs stay.
    pub fn invalidate_all(&self) {
        self.cache.lock().expect("registry cache lock").clear();
    }

    /// The registry's last error, re-addressed to `image`, while it backs off.
    fn backoff_error(state: &RegistryState, image: &ImageRef) -> Option<RegistryError> {
        let backoff = state.backoff.lock().expect("registry backoff lock");
        let until = backoff.until?;
        let left = until.checked_duration_since(Instant::now())?;
        let last = backoff.last.as_ref()?;
        Some(RegistryError::new(
            last.kind,
            image,
            format!(
                "not asked again for {:.1}s after {} failure(s) in a row; last error: {}",
                left.as_secs_f64(),
                backoff.failures,
                last.cause,
            ),
        ))
    }

    fn record(&self, state: &RegistryState, result: &Result<Digest, RegistryError>) {
        let mut backoff = state.backoff.lock().expect("registry backoff lock");
        match result {
            Ok(_) => *backoff = Backoff::default(),
            Err(e) if e.kind.backs_off() => {
                let now = Instant::now();
                // Failures of requests that were already under way when the backoff began do not lengthen it.
                if backoff.until.is_none_or(|until| now >= until) {
                    backoff.failures = backoff.failures.saturating_add(1);
                    let factor = 2u32.saturating_pow(backoff.failures - 1);
                    let delay = self
                        .config
                        .backoff_initial
                        .saturating_mul(factor)
                        .min(self.config.backoff_max);
                    backoff.until = Some(now + delay);
                    tracing::debug!(registry = %e.registry, failures = backoff.failures, ?delay, "registry backs off");
                }
                backoff.last = Some(e.clone());
            }
            Err(_) => {}
        }
    }

    fn registry_state(&self, host: &str) -> Arc<RegistryState> {
        let mut registries = self.registries.lock().expect("registry state lock");
        registries
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(RegistryState {
                    permits: Semaphore::new(self.config.per_registry_concurrency.max(1)),
                    backoff: Mutex::default(),
                })
            })
            .clone()
    }

    fn client(&self, fingerprint: Option<[u8; 32]>) -> Result<oci_client::Client, String> {
        let mut clients = self.clients.lock().expect("registry clients lock");
        if let Some(c) = clients.get(&fingerprint) {
            return Ok(c.clone());
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.config.insecure_registries.clone()),
            platform_resolver: None,
            // The whole resolution is bounded by `timeout` (around it); no read timeout of reqwest's own,
            // which would end the token request early and let the manifest request start within the same limit.
            connect_timeout: Some(self.config.timeout),
            user_agent: concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config)
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(fingerprint, client.clone());
        Ok(client)
    }

    async fn fetch(
        &self,
        image: &ImageRef,
        credentials: Option<&Credentials>,
        fingerprint: Option<[u8; 32]>,
    ) -> Result<Digest, RegistryError> {
        let state = self.registry_state(image.host());
        if let Some(e) = Self::backoff_error(&state, image) {
            return Err(e);
        }
        let _permit = state.permits.acquire().await.expect("the semaphore is never closed");
        // Another request may have failed while this one waited.
        if let Some(e) = Self::backoff_error(&state, image) {
            return Err(e);
        }
        let client = self
            .client(fingerprint)
            .map_err(|cause| RegistryError::new(ErrorKind::Other, image, cause))?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let timeout = self.config.timeout;
        let result = match tokio::time::timeout(timeout, client.fetch_manifest_digest(&image.0, &auth)).await {
            Err(_) => Err(RegistryError::new(
                ErrorKind::Timeout,
                image,
                format!("no answer within {:.1}s", timeout.as_secs_f64()),
            )),
            Ok(Err(e)) => Err(RegistryError::from_oci(image, &e)),
            Ok(Ok(digest)) => Digest::parse(&digest).ok_or_else(|| {
                RegistryError::new(
                    ErrorKind::Other,
                    image,
                    format!("the registry answered a malformed digest {digest:?}"),
                )
            }),
        };
        self.record(&state, &result);
        result
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn references_take_dockers_defaults() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (r.registry(), r.host(), r.repository(), r.tag(), r.digest()),
            ("docker.io", "index.docker.io", "library/busybox", Some("latest"), None)
        );
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert!(!r.is_pinned());

        let r = ImageRef::parse("eclipse/che-theia:next").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("docker.io", "eclipse/che-theia", Some("next"))
        );

        let r = ImageRef::parse("index.docker.io/library/alpine:3").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:3");

        let r = ImageRef::parse("quay.io/eclipse/che-java11-maven:next").unwrap();
        assert_eq!(
            (r.registry(), r.host(), r.repository()),
            ("quay.io", "quay.io", "eclipse/che-java11-maven")
        );

        let r = ImageRef::parse("127.0.0.1:5000/kip/busybox").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "kip/busybox", Some("latest"))
        );

        let r = ImageRef::parse("localhost/app:v1").unwrap();
        assert_eq!((r.registry(), r.repository()), ("localhost", "app"));

        // A first component without '.', ':' or "localhost" is a Docker Hub namespace.
        let r = ImageRef::parse("myorg/app:v1").unwrap();
        assert_eq!((r.registry(), r.repository()), ("docker.io", "myorg/app"));
    }

    #[test]
    fn digest_pinned_references_are_recognised() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("quay.io/x/y@{d}")).unwrap();
        assert!(r.is_pinned());
        assert_eq!((r.tag(), r.digest()), (None, Some(d.as_str())));

        let r = ImageRef::parse(&format!("quay.io/x/y:tag@{d}")).unwrap();
        assert!(r.is_pinned());
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.pinned_to(&Digest::parse(&d).unwrap()), format!("quay.io/x/y@{d}"));

        // A "digest" of the wrong length or algorithm is not a reference at all.
        assert!(ImageRef::parse("quay.io/x/y@sha256:abc").is_err());
        assert!(ImageRef::parse("quay.io/x/y@md5:0123456789abcdef0123456789abcdef").is_err());
    }

    #[test]
    fn bad_references_are_errors_that_name_them() {
        for bad in ["", "UPPER/case", "a b", "quay.io/x:"] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert_eq!(e.image, bad);
            assert!(e.to_string().contains("is not an image reference"), "{e}");
        }
    }

    #[tokio::test]
    async fn pinned_images_are_never_resolved() {
        let resolver = Resolver::new(ResolverConfig::default());
        let d = format!("sha256:{}", "b".repeat(64));
        // An unreachable (reserved, unrouted) registry: a request would fail, so Ok proves none was made.
        let got = resolver
            .resolve(&format!("registry.invalid/x@{d}"), None)
            .await
            .unwrap();
        assert_eq!(got.as_str(), d);
        assert!(resolver.cached(&format!("registry.invalid/x@{d}")).is_none());
    }

    #[tokio::test]
    async fn unparsable_images_are_other_errors() {
        let resolver = Resolver::new(ResolverConfig::default());
        let e = resolver.resolve("Not A Reference", None).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(e.to_string().contains("\"Not A Reference\""), "{e}");
    }

    #[test]
    fn digests_are_checked() {
        assert!(Digest::parse(&format!("sha256:{}", "0".repeat(64))).is_some());
        assert!(Digest::parse(&format!("sha512:{}", "f".repeat(128))).is_some());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Digest::parse(&format!("sha256:{}", "0".repeat(63))).is_none());
        assert!(Digest::parse("sha256").is_none());
        assert_eq!(
            Digest::sha256_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn credentials_from_auth_and_from_username_password() {
        let json = format!(
            r#"{{"auths": {{
                "quay.io": {{"auth": "{}", "email": "x@example.com"}},
                "ghcr.io": {{"username": "bob", "password": "s3:cr:et"}},
                "empty.example.com": {{}}
            }}}}"#,
            b64("alice:pa:ss")
        );
        let config = DockerConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(
            config.credentials_for("quay.io"),
            Some(&Credentials::new("alice", "pa:ss"))
        );
        assert_eq!(
            config.credentials_for("ghcr.io"),
            Some(&Credentials::new("bob", "s3:cr:et"))
        );
        assert_eq!(config.credentials_for("empty.example.com"), None);
        assert_eq!(config.credentials_for("docker.io"), None);

        // `auth` wins over username/password; unpadded base64 is accepted.
        let json = format!(
            r#"{{"auths": {{"r.example.com": {{"auth": "{}", "username": "u2", "password": "p2"}}}}}}"#,
            b64("u1:p1").trim_end_matches('=')
        );
        let config = DockerConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(
            config.credentials_for("r.example.com"),
            Some(&Credentials::new("u1", "p1"))
        );
    }

    #[test]
    fn credentials_match_hosts_as_docker_does() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "https://Registry.Example.com": {{"auth": "{}"}},
                "mirror.example.com:5000/v1/": {{"auth": "{}"}},
                "http://plain.example.com/v2/": {{"auth": "{}"}}
            }}}}"#,
            b64("hub:1"),
            b64("reg:2"),
            b64("mirror:3"),
            b64("plain:4")
        );
        let config = DockerConfig::parse(json.as_bytes()).unwrap();
        let user = |host: &str| config.credentials_for(host).map(|c| c.username.clone());
        for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(user(hub).as_deref(), Some("hub"), "{hub}");
        }
        assert_eq!(user("registry.example.com").as_deref(), Some("reg"));
        assert_eq!(user("mirror.example.com:5000").as_deref(), Some("mirror"));
        assert_eq!(user("plain.example.com").as_deref(), Some("plain"));
        // A port is part of the host; a suffix or prefix is not a match.
        assert_eq!(user("mirror.example.com"), None);
        assert_eq!(user("example.com"), None);
        assert_eq!(user("other.registry.example.com"), None);
        assert_eq!(user("quay.io"), None);
    }

    #[test]
    fn an_exact_key_wins_over_a_normalised_one() {
        let json = format!(
            r#"{{"auths": {{"https://quay.io/v1/": {{"auth": "{}"}}, "quay.io": {{"auth": "{}"}}}}}}"#,
            b64("normalised:x"),
            b64("exact:y")
        );
        let config = DockerConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(config.credentials_for("quay.io").unwrap().username, "exact");
    }

    #[test]
    fn credentials_for_takes_the_first_payload_that_matches_and_skips_bad_ones() {
        let first = format!(r#"{{"auths": {{"quay.io": {{"auth": "{}"}}}}}}"#, b64("one:1"));
        let second = format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "docker.io": {{"auth": "{}"}}}}}}"#,
            b64("two:2"),
            b64("hub:3")
        );
        let bad = b"{not json".to_vec();
        let payloads = vec![bad, first.into_bytes(), second.into_bytes()];
        assert_eq!(
            credentials_for("quay.io", &payloads),
            Some(Credentials::new("one", "1"))
        );
        assert_eq!(
            credentials_for("index.docker.io", &payloads),
            Some(Credentials::new("hub", "3"))
        );
        assert_eq!(credentials_for("ghcr.io", &payloads), None);
        assert_eq!(credentials_for::<Vec<u8>>("quay.io", &[]), None);
    }

    #[test]
    fn bad_payloads_are_errors_naming_the_key() {
        assert!(matches!(
            DockerConfig::parse(b"\"text\""),
            Err(DockerConfigError::Json(_))
        ));
        assert!(matches!(
            DockerConfig::parse(br#"{"auths": []}"#),
            Err(DockerConfigError::Json(_))
        ));
        assert_eq!(DockerConfig::parse(b"{}").unwrap(), DockerConfig::default());
        let e = DockerConfig::parse(br#"{"auths": {"quay.io": {"auth": "!!!"}}}"#).unwrap_err();
        assert!(
            matches!(&e, DockerConfigError::Auth { key, .. } if key == "quay.io"),
            "{e}"
        );
        let no_colon = format!(r#"{{"auths": {{"quay.io": {{"auth": "{}"}}}}}}"#, b64("nocolon"));
        let e = DockerConfig::parse(no_colon.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("user:password"), "{e}");
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials::new("alice", "hunter2");
        let shown = format!("{c:?}");
        assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn error_kinds_are_metric_labels_and_status_lines() {
        let labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            ["timeout", "unauthorized", "not_found", "server", "unreachable", "other"]
        );
        let image = ImageRef::parse("quay.io/eclipse/che-theia:next").unwrap();
        let e = RegistryError::new(
            ErrorKind::Unauthorized,
            &image,
            "Not authorized: url https://quay.io/v2/…",
        );
        assert_eq!(
            e.to_string(),
            "cannot resolve quay.io/eclipse/che-theia:next at quay.io: unauthorized: Not authorized: url https://quay.io/v2/…"
        );
        assert!(!ErrorKind::NotFound.backs_off() && !ErrorKind::Unauthorized.backs_off());
        assert!(ErrorKind::Unreachable.backs_off() && ErrorKind::Timeout.backs_off() && ErrorKind::Server.backs_off());
    }

    #[test]
    fn oci_errors_are_classified() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: String::new(),
        };
        assert_eq!(classify(&server(503)), ErrorKind::Server);
        assert_eq!(classify(&server(403)), ErrorKind::Unauthorized);
        assert_eq!(classify(&server(404)), ErrorKind::NotFound);
        assert_eq!(classify(&server(429)), ErrorKind::Other);
        assert_eq!(
            classify(&OciDistributionError::UnauthorizedError { url: "u".into() }),
            ErrorKind::Unauthorized
        );
        let envelope = |json: &str| OciDistributionError::RegistryError {
            envelope: serde_json::from_str(json).unwrap(),
            url: "u".into(),
        };
        assert_eq!(
            classify(&envelope(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"m"}]}"#)),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(&envelope(r#"{"errors":[{"code":"NAME_UNKNOWN","message":"m"}]}"#)),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(&envelope(r#"{"errors":[{"code":"DENIED","message":"m"}]}"#)),
            ErrorKind::Unauthorized
        );
        assert_eq!(
            classify(&envelope(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"m"}]}"#)),
            ErrorKind::Other
        );
    }
}
