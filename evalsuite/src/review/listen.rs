//! Serving the review router over TCP with the limits a shared address needs. `axum::serve`
//! sets no timeouts: one client that opens connections and never finishes a request holds
//! each open for ever, and a few hundred exhaust the process's file descriptors (and block
//! a graceful shutdown). Here each connection must send a request's headers within
//! [`ServeLimits::header_timeout`] (also while idle between keep-alive requests), a request
//! must be answered within [`ServeLimits::request_timeout`] (a body sent byte by byte
//! included), and at most [`ServeLimits::max_connections`] are open at once: more wait in
//! the listen queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long clients may take, and how many may be connected.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time to send a request's headers, counted from the connection's first byte or the
    /// end of its previous response.
    pub header_timeout: Duration,
    /// Time from a request's headers to its response (reading the body included).
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time open connections get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then lets open
/// connections finish their current request (for at most `shutdown_grace`).
pub async fn serve(listener: TcpListener, app: Router, limits: ServeLimits, shutdown: impl Future<Output = ()>) {
    let deadline = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(move |request: Request, next: Next| within(deadline, request, next)));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, a connection reset before accept: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (service, mut stopped, header_timeout) = (TowerToHyperService::new(app.clone()), stopped.clone(), limits.header_timeout);
        connections.spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(limits.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
}

/// `next` answered within `limit`, else 408.
async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, axum::Json(serde_json::json!({ "error": "the request took too long" }))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A client that sends half a request is disconnected once the header timeout passes,
    /// and others are still served meanwhile; a connection past the cap waits its turn.
    #[test]
    fn slow_clients_are_cut_off_and_do_not_block_others() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServeLimits { header_timeout: Duration::from_millis(300), max_connections: 2, ..ServeLimits::default() };
        let app = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(serve(listener, app, limits, async {
            let _ = stopped.await;
        }));
        let get = || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            reply
        };
        // Two slow clients take both places; the third waits until they are cut off.
        let slow: Vec<std::net::TcpStream> = (0..2)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
                s
            })
            .collect();
        assert!(get().ends_with("ok"), "served once the slow clients were cut off");
        for mut s in slow {
            let mut rest = Vec::new();
            // Closed by the server (EOF, perhaps after a 408), not by the 20 s read timeout.
            let read = s.read_to_end(&mut rest);
            assert!(read.is_ok(), "the half-sent request was never cut off: {read:?}");
        }
        stop.send(()).unwrap();
        runtime.block_on(server).unwrap();
    }
}
