//! A stratosdb node: a [`Backend`] served over the HTTP/JSON API.
//!
//! Today a node is single: the embedded database ([`EmbeddedBackend`]), one
//! shard, one replica. The replicated cluster plugs in by implementing
//! [`Backend`]; the API does not change.

pub mod backend;
pub mod cluster;
pub mod embedded;
pub mod http;
pub mod metrics;

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub use backend::{Backend, BackendError, ErrorClass, PutOutcome, SqlOutcome};
pub use embedded::{EmbeddedBackend, NodeIdentity};
pub use http::{ApiConfig, DEFAULT_BODY_LIMIT, router};

/// The file in the data folder that keeps a single node's id.
pub const NODE_ID_FILE: &str = "node-id";

/// The node's id: read from the data folder, or made (random, 16 hex digits
/// after `node-`) and kept there on first start.
pub fn node_id(data: &Path) -> std::io::Result<String> {
    let path = data.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("node-{:016x}", rand::random::<u64>());
    // Written aside and renamed: a crash leaves the old state or the new one.
    let temporary = data.join(format!("{NODE_ID_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    Ok(id)
}

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
