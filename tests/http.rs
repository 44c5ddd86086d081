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
