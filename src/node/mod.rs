//! A stratosdb node: a [`Backend`] served over the HTTP/JSON API. The
//! backend is the replicated cluster ([`cluster::ClusterBackend`]); the API
//! knows it only through the trait.

pub mod backend;
pub mod cluster;
pub mod http;
pub mod metrics;
pub mod traffic;

use std::future::Future;
use std::sync::Arc;

pub use backend::{Backend, BackendError, ErrorClass, PutOutcome, SqlOutcome};
pub use http::{ApiConfig, DEFAULT_BODY_LIMIT, router};

/// Serves the API on `listener` until `shutdown` completes, then lets the
/// requests under way finish and calls [`Backend::shutdown`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Arc<dyn Backend>,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = router(backend.clone(), config);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Io)?;
    let b = backend.clone();
    tokio::task::spawn_blocking(move || b.shutdown())
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serving HTTP: {0}")]
    Io(std::io::Error),
    #[error("stopping the database: {0}")]
    Backend(#[from] BackendError),
}
