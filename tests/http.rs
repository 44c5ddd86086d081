//! The HTTP endpoints as a probe or Prometheus sees them, over a real socket.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kubernetes_image_puller::health::SetHealth;
use kubernetes_image_puller::http::{self, HttpState};
use kubernetes_image_puller::metrics::Metrics;

/// One HTTP/1.1 request; returns (status code, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let (addr, server) = http::serve("127.0.0.1:0".parse().unwrap(), state, async move {
        let _ = stopped.changed().await;
    })
    .await
    .unwrap();
    let server = tokio::spawn(server);

    let probe = |path: &'static str| tokio::task::spawn_blocking(move || get(addr, path));
    assert_eq!(probe("/healthz").await.unwrap().0, 200);
    let (code, body) = probe("/readyz").await.unwrap();
    assert_eq!(code, 503, "not ready before the first pass: {body}");
    ready.store(true, Ordering::Relaxed);
    assert_eq!(probe("/readyz").await.unwrap().0, 200);

    metrics.record_health(
        &SetHealth {
            set: "gpu".into(),
            present: true,
            up_to_date: true,
            desired: 3,
            ready: 2,
            ..SetHealth::default()
        },
        4,
    );
    metrics.reconciles.inc();
    let (code, body) = probe("/metrics").await.unwrap();
    assert_eq!(code, 200);
    for line in [
        "kip_set_nodes_desired{set=\"gpu\"} 3",
        "kip_set_nodes_ready{set=\"gpu\"} 2",
        "kip_set_images{set=\"gpu\"} 4",
        "kip_reconciles_total 1",
    ] {
        assert!(body.contains(line), "missing {line:?} in:\n{body}");
    }
    assert_eq!(probe("/nope").await.unwrap().0, 404);

    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(2), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_taken_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let state = HttpState {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let err = http::serve(addr, state, std::future::pending())
        .await
        .err()
        .expect("bind fails");
    assert!(err.to_string().contains(&format!("cannot listen on {addr}")), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile clients: idle, slow and piled-up connections, over a real socket on 127.0.0.1.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kubernetes_image_puller::http::Limits;

struct Server {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), http::HttpError>>,
}

async fn start(limits: Limits) -> Server {
    let state = HttpState {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(true)),
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (addr, server) = http::serve_with("127.0.0.1:0".parse().unwrap(), state, limits, async move {
        let _ = stopped.wait_for(|s| *s).await;
    })
    .await
    .unwrap();
    Server {
        addr,
        stop,
        task: tokio::spawn(server),
    }
}

/// Whether the server closes `stream` within `within` (EOF or reset), reading and discarding anything sent.
fn closed_within(mut stream: &TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(50))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true, // reset
        }
    }
}

/// A probe as the kubelet makes it: a fresh connection, one request, an answer within `within`.
fn probe_within(addr: SocketAddr, path: &str, within: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, within).ok()?;
    stream.set_read_timeout(Some(within)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// 1,000 open descriptors plus the server's: more than some default soft limits (1024) allow.
#[allow(unsafe_code)] // getrlimit/setrlimit have no safe std API; both get a valid, initialised struct.
fn raise_descriptor_limit(wanted: u64) {
    // SAFETY: `lim` is a plain struct fully written by getrlimit before it is read.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as u64) < wanted {
            lim.rlim_cur = (wanted as libc::rlim_t).min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The liveness probe must not fail because others hold connections: with 1,000 idle connections open
/// (more than the cap), /healthz and /readyz still answer at once, and the server holds no more than
/// MAX_CONNECTIONS of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_under_a_thousand_idle_connections() {
    raise_descriptor_limit(4096);
    let server = start(Limits::default()).await;
    let addr = server.addr;
    let result = tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..1000)
            .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
            .collect();
        // Probes while all of them are open.
        for path in ["/healthz", "/readyz", "/healthz", "/readyz"] {
            let started = Instant::now();
            assert_eq!(probe_within(addr, path, Duration::from_secs(2)), Some(200), "{path}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{path}: {:?}",
                started.elapsed()
            );
        }
        // The server closed the surplus: at most MAX_CONNECTIONS of the idle ones are still open.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut open_left = idle.len();
        while Instant::now() < deadline {
            let closed = idle
                .iter()
                .filter(|s| closed_within(s, Duration::from_millis(1)))
                .count();
            open_left = idle.len() - closed;
            if open_left <= http::MAX_CONNECTIONS {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            open_left <= http::MAX_CONNECTIONS,
            "{open_left} of 1000 idle connections still open; cap {}",
            http::MAX_CONNECTIONS
        );
        open_left
    })
    .await
    .unwrap();
    assert!(result > 0, "some idle connections are kept (the cap is not zero)");

    // Stopping closes them all and ends the server promptly.
    let started = Instant::now();
    server.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), server.task)
        .await
        .expect("server stops within 1 s with idle connections open")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Each bound over a real socket, with short values so the test is quick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_idle_and_connection_bounds() {
    // Header-read timeout: a request line and no end of headers (slowloris) is closed; idle is long here.
    let server = start(Limits {
        max_connections: 16,
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
    })
    .await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut slow = TcpStream::connect(addr).unwrap();
        write!(slow, "GET /healthz HTTP/1.1\r\nHost: slow\r\n").unwrap();
        let started = Instant::now();
        assert!(
            closed_within(&slow, Duration::from_secs(3)),
            "partial headers kept open"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        // Nothing sent at all: also bounded by the header-read timeout.
        let silent = TcpStream::connect(addr).unwrap();
        assert!(
            closed_within(&silent, Duration::from_secs(3)),
            "silent connection kept open"
        );
    })
    .await
    .unwrap();
    server.stop.send(true).unwrap();

    // Idle timeout: a keep-alive connection that stops sending after one request is closed.
    let server = start(Limits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_millis(300),
    })
    .await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut keep = TcpStream::connect(addr).unwrap();
        write!(keep, "GET /healthz HTTP/1.1\r\nHost: keep\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        keep.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = keep.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "answered first"
        );
        let started = Instant::now();
        assert!(
            closed_within(&keep, Duration::from_secs(3)),
            "idle keep-alive kept open"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        // A second request on the same connection within the idle time is still served.
        let mut again = TcpStream::connect(addr).unwrap();
        for _ in 0..2 {
            write!(again, "GET /healthz HTTP/1.1\r\nHost: keep\r\n\r\n").unwrap();
            again.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let n = again.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    server.stop.send(true).unwrap();

    // Connection cap: at the cap the longest-idle connection makes room for a probe.
    let server = start(Limits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
    })
    .await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut idle: Vec<TcpStream> = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).unwrap());
            std::thread::sleep(Duration::from_millis(30)); // distinct ages
        }
        assert_eq!(probe_within(addr, "/healthz", Duration::from_secs(2)), Some(200));
        assert!(
            closed_within(&idle[0], Duration::from_secs(2)),
            "the oldest idle connection is closed"
        );
        for stream in &idle[2..] {
            assert!(
                !closed_within(stream, Duration::from_millis(100)),
                "younger idle connections stay"
            );
        }
    })
    .await
    .unwrap();
    server.stop.send(true).unwrap();
}
