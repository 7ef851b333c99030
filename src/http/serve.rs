//! The connection loop: hyper's HTTP/1 served directly (not `axum::serve`), so that a client that sends
//! its headers slowly is cut off and the number of open connections is capped; and the start-up in the
//! loading state, with the services handed over once loaded.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::metrics::Metrics;
use super::state::{AppState, ServerConfig, Services, Shared};
use super::{openai, router};

const HYPER_MAX_BUF_BYTES: usize = 256 * 1024;
const HYPER_MAX_HEADERS: usize = 1000;

/// A server that is accepting connections.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Makes the loaded services available: `/health` turns 200 and the API answers.
    pub fn set_ready(&self, services: Services) {
        let _ = self.state.services.set(services);
    }

    /// Enables the knowledge-base management routes (documents, reindex).
    pub fn set_documents(&self, documents: Arc<crate::assistant::documents::Documents>) {
        let _ = self.state.documents.set(documents);
    }

    /// Stops accepting, lets in-flight requests finish for up to the shutdown timeout.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let timeout = self.state.config.shutdown_timeout;
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(_) => tracing::info!("server stopped"),
            Err(_) => {
                tracing::warn!(
                    ?timeout,
                    "in-flight requests did not finish in time; stopping"
                );
                self.task.abort();
            }
        }
    }

    /// Waits until the server stops by itself (it only does on an I/O error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Starts serving on `listener` in the loading state.
pub fn start(listener: TcpListener, config: ServerConfig) -> Result<RunningServer, std::io::Error> {
    let addr = listener.local_addr()?;
    let metrics = Metrics::new().map_err(std::io::Error::other)?;
    let limits = ConnectionLimits {
        max_connections: config.max_connections.max(1),
        header_read_timeout: config.header_read_timeout,
    };
    let loopback_only =
        config.api_keys.is_empty() && config.admin_keys.is_empty() && addr.ip().is_loopback();
    let state = Arc::new(AppState {
        loopback_only,
        config,
        services: OnceLock::new(),
        embeddings: Arc::new(Semaphore::new(openai::EMBEDDINGS_IN_PROGRESS)),
        metrics,
        documents: OnceLock::new(),
    });
    let app = router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_connections(listener, app, rx, limits));
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}

#[derive(Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    header_read_timeout: Duration,
}

/// Accepts connections until `stop`, at most `max_connections` at a time, each served by hyper's
/// HTTP/1 with a header read timeout; then lets the open ones finish their requests.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    mut stop: oneshot::Receiver<()>,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    // Every connection task holds a sender: `recv` returns `None` once all of them have finished.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_headers(HYPER_MAX_HEADERS)
                .max_buf_size(HYPER_MAX_BUF_BYTES);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = closing.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(open_tx);
    let _ = open_rx.recv().await;
    Ok(())
}
