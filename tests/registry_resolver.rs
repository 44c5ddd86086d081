//! `registry::Resolver` against real registries on loopback: Debian's `docker-registry` (distribution 2.8),
//! started by each test on a free port with its own config and storage (one open, one with htpasswd auth), and
//! killed when the test ends. Content is pushed through the registry's HTTP API (a config blob and an OCI
//! manifest with no layers). Requests are counted in the registry's own access log.
//!
//! Without `docker-registry` (or `htpasswd`, from apache2-utils) each test prints why and passes as skipped,
//! unless `KIP_E2E_REQUIRE_CLUSTER=1`, where that is a failure.

use std::fs::File;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kubernetes_image_puller::registry::{
    Credentials, Digest, ErrorKind, ImageRef, Resolver, ResolverConfig, credentials_for,
};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

const USER: &str = "kip";
const PASSWORD: &str = "s3cret:with-colon";

fn required() -> bool {
    std::env::var("KIP_E2E_REQUIRE_CLUSTER").is_ok_and(|v| v == "1")
}

/// `None` when the tools are there, else why not (a failure with `KIP_E2E_REQUIRE_CLUSTER=1`).
fn missing_tools(need_htpasswd: bool) -> Option<String> {
    let runs = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut why = Vec::new();
    if !runs("docker-registry", &["--version"]) {
        why.push("docker-registry is not installed (apt-get install -y docker-registry)");
    }
    if need_htpasswd && !runs("htpasswd", &["-Bbn", "a", "b"]) {
        why.push("htpasswd is not installed (apt-get install -y apache2-utils)");
    }
    if why.is_empty() {
        return None;
    }
    let why = why.join("; ");
    assert!(!required(), "registry_resolver: {why} (KIP_E2E_REQUIRE_CLUSTER=1)");
    println!("registry_resolver skipped: {why}");
    Some(why)
}

macro_rules! tools_or_skip {
    ($htpasswd:expr) => {
        if missing_tools($htpasswd).is_some() {
            return;
        }
    };
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().unwrap().port()
}

/// A `docker-registry serve` child on 127.0.0.1, killed on drop (and by `stop`).
struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
    auth: bool,
}

impl Registry {
    fn start(auth: bool) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\n\
             log: {{level: info, formatter: text}}\n\
             storage:\n  filesystem: {{rootdirectory: {storage}}}\n  delete: {{enabled: true}}\n  \
             maintenance: {{uploadpurging: {{enabled: false}}}}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage = dir.path().join("storage").display(),
        );
        if auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("run htpasswd");
            assert!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd: {{realm: kip-test, path: {}}}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let log = dir.path().join("registry.log");
        let mut registry = Registry {
            child: None,
            port,
            dir,
            log,
            auth,
        };
        registry.run();
        registry
    }

    fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("docker-registry exited ({status}) at start:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not listening on {} within 15 s:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Requests in the access log (`"HEAD /v2/… HTTP/1.1" 200 …`) whose method and path start as given.
    fn requests(&self, method: &str, path_prefix: &str) -> usize {
        let needle = format!("\"{method} {path_prefix}");
        self.log_text().lines().filter(|l| l.contains(&needle)).count()
    }

    fn all_requests(&self) -> usize {
        ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .map(|m| self.requests(m, "/v2/"))
            .sum()
    }

    /// Manifest requests (HEAD and GET) for `repo` since the log began.
    fn manifest_requests(&self, repo: &str) -> (usize, usize) {
        let path = format!("/v2/{repo}/manifests/");
        (self.requests("HEAD", &path), self.requests("GET", &path))
    }

    /// The access log is written as each response completes, so the count is read once it has settled.
    async fn settled<T: PartialEq + Copy>(&self, f: impl Fn(&Registry) -> T) -> T {
        let mut last = f(self);
        let mut stable_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(3);
        while stable_since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let now = f(self);
            if now != last {
                last = now;
                stable_since = Instant::now();
            }
        }
        last
    }

    /// Pushes a one-config, no-layer OCI image to `repo:tag`; returns the manifest's digest.
    async fn push(&self, repo: &str, tag: &str, version: &str) -> Digest {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::try_from(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        })
        .expect("push client");
        let reference: Reference = format!("{}/{repo}:{tag}", self.host()).parse().unwrap();
        let auth = if self.auth {
            RegistryAuth::Basic(USER.into(), PASSWORD.into())
        } else {
            RegistryAuth::Anonymous
        };
        client
            .auth(&reference, &auth, RegistryOperation::Push)
            .await
            .expect("auth for push");
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"kip.test/version":"{version}"}}}}}}"#
        );
        let config_digest = Digest::sha256_of(config.as_bytes());
        client
            .push_blob(&reference, config.clone().into_bytes(), config_digest.as_str())
            .await
            .expect("push the config blob");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{size}}},"layers":[]}}"#,
            size = config.len()
        );
        let digest = Digest::sha256_of(manifest.as_bytes());
        let location = client
            .push_manifest_raw(
                &reference,
                manifest.into_bytes(),
                "application/vnd.oci.image.manifest.v1+json".parse().unwrap(),
            )
            .await
            .expect("push the manifest");
        // The registry's own word for the digest: the Location of the manifest it stored.
        assert!(
            location.ends_with(&format!("/manifests/{digest}")),
            "registry stored {location}, expected the digest {digest}"
        );
        digest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn resolver_for(registry: &Registry, tweak: impl FnOnce(&mut ResolverConfig)) -> Resolver {
    let mut config = ResolverConfig {
        insecure_registries: vec![registry.host()],
        ..ResolverConfig::default()
    };
    tweak(&mut config);
    Resolver::new(config)
}

fn docker_config_json(host: &str, user: &str, password: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths": {{"https://{host}/v1/": {{"auth": "{auth}"}}}}}}"#).into_bytes()
}

#[tokio::test]
async fn a_tag_resolves_to_the_pushed_digest_once_per_check() {
    tools_or_skip!(false);
    let registry = Registry::start(false);
    let d1 = registry.push("kip/app", "latest", "v1").await;
    let resolver = resolver_for(&registry, |_| {});
    let image = format!("{}/kip/app", registry.host()); // default tag: latest

    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d1);
    assert_eq!(
        registry.settled(|r| r.manifest_requests("kip/app")).await,
        (1, 0),
        "one manifest HEAD, no GET"
    );
    let cached = resolver.cached(&image).expect("a kept result");
    assert_eq!(cached.result, Ok(d1.clone()));
    assert!(cached.resolved_at.elapsed().unwrap() < Duration::from_secs(60));

    // Kept until the next check: asked again, many times and concurrently, no request at all.
    let before = registry.settled(Registry::all_requests).await;
    for _ in 0..5 {
        assert_eq!(resolver.resolve(&image, None).await.unwrap(), d1);
    }
    assert_eq!(
        registry.settled(Registry::all_requests).await,
        before,
        "cached results make no request"
    );

    // New content under the same tag: the kept result stands until the check's invalidation, then the new
    // digest comes with one more HEAD.
    let d2 = registry.push("kip/app", "latest", "v2").await;
    assert_ne!(d1, d2);
    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d1);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/app")).await, (1, 0));
    resolver.invalidate_all();
    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d2);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/app")).await, (2, 0));

    // One check of several tags with concurrent askers: exactly one HEAD per tag.
    let d_other = registry.push("kip/other", "v1", "other").await;
    resolver.invalidate_all();
    let resolver = Arc::new(resolver);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let resolver = resolver.clone();
        let image = if i % 2 == 0 {
            image.clone()
        } else {
            format!("{}/kip/other:v1", registry.host())
        };
        tasks.push(tokio::spawn(async move { resolver.resolve(&image, None).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let want = if i % 2 == 0 { &d2 } else { &d_other };
        assert_eq!(&t.await.unwrap().unwrap(), want);
    }
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/app")).await, (3, 0));
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/other")).await, (1, 0));

    // The same content pinned by digest: never asked.
    let before = registry.settled(Registry::all_requests).await;
    let pinned = ImageRef::parse(&image).unwrap().pinned_to(&d2);
    assert_eq!(resolver.resolve(&pinned, None).await.unwrap(), d2);
    assert_eq!(
        registry.settled(Registry::all_requests).await,
        before,
        "a pinned image makes no request"
    );
}

#[tokio::test]
async fn results_older_than_max_age_are_resolved_again() {
    tools_or_skip!(false);
    let registry = Registry::start(false);
    let d1 = registry.push("kip/aged", "latest", "v1").await;
    let resolver = resolver_for(&registry, |c| c.max_age = Some(Duration::from_millis(300)));
    let image = format!("{}/kip/aged:latest", registry.host());
    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d1);
    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d1);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/aged")).await, (1, 0));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let d2 = registry.push("kip/aged", "latest", "v2").await;
    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d2);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/aged")).await, (2, 0));
}

#[tokio::test]
async fn a_missing_tag_or_repository_is_not_found_and_does_not_back_off() {
    tools_or_skip!(false);
    let registry = Registry::start(false);
    let d = registry.push("kip/app", "latest", "v1").await;
    let resolver = resolver_for(&registry, |_| {});

    for image in ["kip/app:no-such-tag", "kip/nothing-here:latest"] {
        let image = format!("{}/{image}", registry.host());
        let e = resolver.resolve(&image, None).await.unwrap_err();
        println!("{e}");
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert_eq!(e.kind.as_str(), "not_found");
        assert_eq!(e.registry, registry.host());
        let shown = e.to_string();
        assert!(shown.contains(&image) && shown.contains("not_found"), "{shown}");
        // oci-client reads the error from a GET once the HEAD answered no digest: two manifest requests for
        // a failure (one for a success).
        let repo = image.split_once('/').unwrap().1.split_once(':').unwrap().0.to_owned();
        assert_eq!(registry.settled(|r| r.manifest_requests(&repo)).await, (1, 1), "{repo}");
        // Kept like a digest: asked again in the same check, no request.
        let before = registry.settled(Registry::all_requests).await;
        assert_eq!(resolver.resolve(&image, None).await.unwrap_err(), e);
        assert_eq!(registry.settled(Registry::all_requests).await, before);
    }
    // A 404 is about one repository: the registry is still asked for the others.
    let image = format!("{}/kip/app:latest", registry.host());
    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/app")).await, (2, 1));
}

#[tokio::test]
async fn htpasswd_registry_needs_the_right_credentials() {
    tools_or_skip!(true);
    let registry = Registry::start(true);
    let d = registry.push("kip/private", "latest", "v1").await;
    let resolver = resolver_for(&registry, |_| {});
    let image = format!("{}/kip/private:latest", registry.host());
    let host = ImageRef::parse(&image).unwrap().registry().to_owned();

    let e = resolver.resolve(&image, None).await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}");
    assert!(e.to_string().contains("unauthorized"), "{e}");
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/private")).await, (1, 1));

    // Credentials from .dockerconfigjson payloads, matched by host (the key is written `https://host/v1/`).
    let payloads = vec![
        docker_config_json("other.example.com", "nobody", "x"),
        docker_config_json(&host, USER, PASSWORD),
    ];
    let credentials = credentials_for(&host, &payloads).expect("credentials for the registry");
    assert_eq!(credentials, Credentials::new(USER, PASSWORD));
    // A result kept with other credentials is not reused; with them, one HEAD per check.
    assert_eq!(resolver.resolve(&image, Some(&credentials)).await.unwrap(), d);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/private")).await, (2, 1));
    assert_eq!(resolver.resolve(&image, Some(&credentials)).await.unwrap(), d);
    resolver.invalidate_all();
    assert_eq!(resolver.resolve(&image, Some(&credentials)).await.unwrap(), d);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/private")).await, (3, 1));

    let wrong = Credentials::new(USER, "wrong-password");
    let e = resolver.resolve(&image, Some(&wrong)).await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}");
    assert!(!e.to_string().contains("wrong-password"), "{e}");
    // Unauthorized does not back off the registry: the right credentials still work at once.
    assert_eq!(resolver.resolve(&image, Some(&credentials)).await.unwrap(), d);
}

#[tokio::test]
async fn a_stopped_registry_is_unreachable_at_once_and_backs_off() {
    tools_or_skip!(false);
    let mut registry = Registry::start(false);
    let d = registry.push("kip/app", "latest", "v1").await;
    let resolver = resolver_for(&registry, |c| {
        c.timeout = Duration::from_secs(5);
        c.backoff_initial = Duration::from_secs(4);
        c.backoff_max = Duration::from_secs(16);
    });
    let image = format!("{}/kip/app:latest", registry.host());
    let other = format!("{}/kip/other:latest", registry.host());

    registry.stop();
    let started = Instant::now();
    let e = resolver.resolve(&image, None).await.unwrap_err();
    let failed_at = Instant::now();
    println!("{e}");
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains(&registry.host()), "{e}");

    // The registry is back, but within the backoff nothing asks it: the last error comes back at once, for
    // this image (next check) and for any other of that registry.
    registry.run();
    let before = registry.settled(Registry::all_requests).await;
    resolver.invalidate_all();
    for img in [&image, &other] {
        let started = Instant::now();
        let e = resolver.resolve(img, None).await.unwrap_err();
        println!("{e}");
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(e.cause.contains("not asked again"), "{e}");
        assert_eq!(&e.image, img);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        registry.settled(Registry::all_requests).await,
        before,
        "no request during the backoff"
    );
    assert!(
        failed_at.elapsed() < Duration::from_secs(4),
        "the checks above outlasted the backoff"
    );

    // After it: asked again, and a success ends the backoff.
    tokio::time::sleep_until((failed_at + Duration::from_millis(4100)).into()).await;
    resolver.invalidate_all();
    assert_eq!(resolver.resolve(&image, None).await.unwrap(), d);
    assert_eq!(registry.settled(|r| r.manifest_requests("kip/app")).await, (1, 0));
    let e = resolver.resolve(&other, None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

/// A listener that accepts and never answers: counts the connections it got.
fn silent_registry() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (host, accepted)
}

#[tokio::test]
async fn a_silent_registry_times_out_within_the_limit_per_registry() {
    // No registry needed: a socket that never answers.
    let (host, accepted) = silent_registry();
    let resolver = Arc::new(Resolver::new(ResolverConfig {
        insecure_registries: vec![host.clone()],
        timeout: Duration::from_millis(500),
        per_registry_concurrency: 2,
        backoff_initial: Duration::from_secs(30),
        ..ResolverConfig::default()
    }));

    // Five images at once: two requests run (the limit), time out, and the three that waited find the
    // registry backing off and never connect.
    let started = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let resolver = resolver.clone();
            let image = format!("{host}/kip/app{i}:latest");
            tokio::spawn(async move { resolver.resolve(&image, None).await })
        })
        .collect();
    let mut kinds = Vec::new();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        println!("{e}");
        kinds.push(e.kind);
        assert!(e.to_string().contains(&host), "{e}");
    }
    let elapsed = started.elapsed();
    assert!(kinds.iter().all(|k| *k == ErrorKind::Timeout), "{kinds:?}");
    // The kernel completes a handshake before the listener thread accepts it: let the count catch up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "took {elapsed:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "connections: at most 2 at once, none during the backoff"
    );

    // The next check, within the backoff: no connection.
    resolver.invalidate_all();
    let started = Instant::now();
    let e = resolver
        .resolve(&format!("{host}/kip/app0:latest"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
