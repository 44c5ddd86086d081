//! The HTTP endpoints on one port: /healthz (alive), /readyz (a config loaded and a pass done), /metrics.
//!
//! Served with hyper directly (not `axum::serve`) to bound what a client can hold: header-read time, idle
//! time and the number of connections (see the constants), so that idle, slow or piled-up connections can
//! never make the liveness probe fail and get a healthy controller killed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use tokio::sync::Notify;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("http server failed: {0}")]
    Serve(#[source] std::io::Error),
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no valid config applied yet\n",
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
}

/// Most connections held open at once. Far below the usual 1024 descriptors of a process, so a flood of
/// connections can never starve the API client or the probes of descriptors. At the cap, the connection
/// idle the longest (no request being handled) is closed to make room, so a probe still gets in while
/// others hold idle connections; when every connection is busy, the new one is closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest time a client may take to send a request's headers (hyper closes the connection after it).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no request in flight for this long is closed: one that never sends a request, a
/// keep-alive connection between requests, or one that stops reading its response.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The bounds of [`serve_with`]; [`Limits::default`] holds the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Binds first (so a taken port is reported at start), then serves until `shutdown` resolves. Returns the
/// address bound (port 0 picks a free one) and the server future.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = Result<(), HttpError>>), HttpError> {
    serve_with(addr, state, Limits::default(), shutdown).await
}

/// [`serve`] with explicit bounds.
pub async fn serve_with(
    addr: SocketAddr,
    state: HttpState,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl std::future::Future<Output = Result<(), HttpError>>), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "serving /healthz, /readyz, /metrics");
    let server = accept_loop(listener, router(state), limits, shutdown);
    Ok((bound, server))
}

/// One open connection as the accept loop sees it.
struct Conn {
    /// Milliseconds since the server started, at the last request start or response end.
    last_active: AtomicU64,
    /// Requests being handled now; a busy connection is never closed for idleness.
    in_flight: AtomicUsize,
    /// Told to close: evicted to make room, or the server stops.
    close: Notify,
}

impl Conn {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Marks a request in flight on its connection until dropped (the response returned or the request
/// abandoned).
struct InFlight(Arc<Conn>, Instant);

impl InFlight {
    fn start(conn: &Arc<Conn>, epoch: Instant) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.last_active.store(millis_since(epoch), Ordering::Release);
        Self(conn.clone(), epoch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_active.store(millis_since(self.1), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

type Open = Arc<Mutex<HashMap<u64, Arc<Conn>>>>;

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let epoch = Instant::now();
    let open: Open = Arc::default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut next_id = 0u64;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept: wait a moment
                    // rather than spin; the backlog keeps the client waiting meanwhile.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let conn = Arc::new(Conn {
            last_active: AtomicU64::new(millis_since(epoch)),
            in_flight: AtomicUsize::new(0),
            close: Notify::new(),
        });
        next_id += 1;
        let id = next_id;
        {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            if open.len() >= limits.max_connections {
                let victim = open
                    .iter()
                    .filter(|(_, c)| c.is_idle())
                    .min_by_key(|(_, c)| c.last_active.load(Ordering::Acquire))
                    .map(|(id, _)| *id);
                match victim.and_then(|v| open.remove(&v)) {
                    Some(c) => c.close.notify_one(),
                    None => {
                        tracing::debug!(
                            limit = limits.max_connections,
                            "every connection busy; closing a new one"
                        );
                        continue; // drops the stream: closed at once
                    }
                }
            }
            open.insert(id, conn.clone());
        }
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(&builder, stream, router.clone(), conn, epoch, limits.idle_timeout);
        let open = open.clone();
        tokio::spawn(async move {
            connection.await;
            open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
    }
    // Close every connection at once: probes and scrapes just retry against the next process.
    for conn in open.lock().unwrap_or_else(|e| e.into_inner()).values() {
        conn.close.notify_one();
    }
    Ok(())
}

fn serve_connection(
    builder: &hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    router: Router,
    conn: Arc<Conn>,
    epoch: Instant,
    idle_timeout: Duration,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let counted = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let guard = InFlight::start(&conn, epoch);
            let response = hyper::service::Service::call(&service, request);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        })
    };
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), counted);
    async move {
        let mut connection = std::pin::pin!(connection);
        loop {
            // While a request is in flight, look again after a full period rather than spin.
            let check_at = if conn.is_idle() {
                epoch + Duration::from_millis(conn.last_active.load(Ordering::Acquire)) + idle_timeout
            } else {
                Instant::now() + idle_timeout
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "http connection ended with an error");
                    }
                    return;
                }
                () = conn.close.notified() => return,
                () = tokio::time::sleep_until(check_at.into()) => {
                    let idle_for = Duration::from_millis(millis_since(epoch).saturating_sub(conn.last_active.load(Ordering::Acquire)));
                    if conn.is_idle() && idle_for >= idle_timeout {
                        return; // dropping the connection closes it
                    }
                }
            }
        }
    }
}
