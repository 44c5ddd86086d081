//! The fake API server on a real socket, for benches and tests that run the binary as a child process
//! (a kubeconfig with `server: http://127.0.0.1:PORT`). Each HTTP request goes through the in-process
//! client's service to the same store, so the test can still inspect and edit state directly.

use std::net::SocketAddr;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::client::Body;

use super::FakeApi;

impl FakeApi {
    /// A new empty server, its in-process client, and the loopback address where it also serves HTTP/1.1
    /// (watches stream as chunked responses). Connections are served until the runtime ends.
    pub async fn start_http() -> (FakeApi, Client, SocketAddr) {
        let (api, client) = FakeApi::start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let bridge = client.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let client = bridge.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let client = client.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let bytes = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
                            // A fault injected as a connection error ends the connection, as a real one would.
                            let response: Response<Body> = client
                                .send(Request::from_parts(parts, Body::from(bytes)))
                                .await
                                .map_err(std::io::Error::other)?;
                            Ok::<_, std::io::Error>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (api, client, addr)
    }
}
