//! What the HTTP API needs from a database, as a trait: the replicated
//! cluster implements it ([`super::cluster`]). Nothing here assumes one process
//! holds the data: every call may fail with "not ready" or "no quorum", and
//! errors carry the stable code and the class the API turns into a status.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use stratosdb_engine::{EngineError, Value};
use stratosdb_query::{FindOptions, QueryError, ShardRead, StatementResult};

use crate::api::{
    AnchorsQuery, AnchorsReply, ClusterMap, Consistency, ExportQuery, JoinReply, JoinRequest,
    RemoveNodeReply, RemoveNodeRequest, ShardExport,
};

/// A backend call in progress (see [`Backend::put_async`]).
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send>>;

/// What a node serves requests from.
///
/// Calls block (they may wait for the disk or for a quorum): the API runs
/// them off its async executor.
pub trait Backend: Send + Sync + 'static {
    /// Whether the node can serve requests now; `Err` says why not.
    fn readiness(&self) -> Result<(), BackendError>;

    /// Runs exactly one statement of the SQL-like dialect.
    fn sql(&self, sql: &str, consistency: Consistency) -> Result<SqlOutcome, BackendError>;

    /// Stores `doc` under `id` (its `_id` is set to `id`), creating or
    /// replacing it.
    fn put(&self, collection: &str, id: &str, doc: Value) -> Result<PutOutcome, BackendError>;

    /// [`Backend::put`] for the async API: the default runs it on the
    /// blocking pool; a backend that can wait without a thread overrides it.
    fn put_async(
        self: Arc<Self>,
        collection: String,
        id: String,
        doc: Value,
    ) -> BackendFuture<PutOutcome> {
        Box::pin(put_blocking(self, collection, id, doc))
    }

    /// The document, or a `document_not_found` error.
    fn get(
        &self,
        collection: &str,
        id: &str,
        consistency: Consistency,
    ) -> Result<Value, BackendError>;

    /// [`Backend::get`] for the async API: the default runs it on the
    /// blocking pool; a backend that can wait without a thread overrides it.
    fn get_async(
        self: Arc<Self>,
        collection: String,
        id: String,
        consistency: Consistency,
    ) -> BackendFuture<Value> {
        Box::pin(on_blocking_pool(self, move |b| {
            b.get(&collection, &id, consistency)
        }))
    }

    /// Deletes the document, or fails with `document_not_found`.
    fn delete(&self, collection: &str, id: &str) -> Result<(), BackendError>;

    /// Documents matching a MongoDB-style filter.
    fn find(
        &self,
        collection: &str,
        filter: &serde_json::Value,
        options: &FindOptions,
        consistency: Consistency,
    ) -> Result<Vec<Value>, BackendError>;

    /// Runs a query with proofs of every returned document and of the
    /// looked-up `_id`s that are absent (`docs/chain.md`, "Verifiable reads").
    fn query_proven(
        &self,
        query: &stratosdb_query::ast::Query,
        consistency: Consistency,
    ) -> Result<stratosdb_query::ProvenRows, BackendError> {
        let _ = (query, consistency);
        Err(BackendError::bad_request(
            "proof_unsupported",
            "this node does not prove its reads",
        ))
    }

    /// Admits a new node into the cluster (`--join`): checks the token,
    /// adds the node to the map, and names the members it should reach.
    fn join(&self, request: &JoinRequest) -> Result<JoinReply, BackendError> {
        let _ = request;
        Err(BackendError::bad_request(
            "unsupported",
            "this node does not admit new members",
        ))
    }

    /// Starts removing a member (`cluster remove-node`) or says how far its
    /// removal got.
    fn remove_node(&self, request: &RemoveNodeRequest) -> Result<RemoveNodeReply, BackendError> {
        let _ = request;
        Err(BackendError::bad_request(
            "unsupported",
            "this node has no cluster to remove members from",
        ))
    }

    /// The cluster map as this node sees it (exact for its own replicas).
    fn cluster(&self) -> Result<ClusterMap, BackendError>;

    /// The cluster's epochs and their anchors, newest first.
    fn anchors(&self, query: &AnchorsQuery) -> Result<AnchorsReply, BackendError> {
        let _ = query;
        Err(BackendError::bad_request(
            "unsupported",
            "this node does not anchor epochs",
        ))
    }

    /// One page of the export of shard `shard` of `collection` from this
    /// node's own replica (never forwarded: an auditor chooses the replica
    /// it checks by the node it asks).
    fn export_shard(
        &self,
        collection: &str,
        shard: u32,
        query: &ExportQuery,
    ) -> Result<ShardExport, BackendError> {
        let _ = (collection, shard, query);
        Err(BackendError::bad_request(
            "unsupported",
            "this node does not export shards",
        ))
    }

    /// Prometheus text (with HELP and TYPE lines) of the backend's own
    /// gauges and counters, appended to the API's at `GET /metrics`.
    fn metrics_text(&self) -> String {
        String::new()
    }

    /// Makes every acknowledged write durable and releases what the backend
    /// holds; called once when the node stops.
    fn shutdown(&self) -> Result<(), BackendError>;
}

/// [`Backend::put`] run on tokio's blocking pool.
pub async fn put_blocking<B: Backend + ?Sized>(
    backend: Arc<B>,
    collection: String,
    id: String,
    doc: Value,
) -> Result<PutOutcome, BackendError> {
    on_blocking_pool(backend, move |b| b.put(&collection, &id, doc)).await
}

/// A blocking backend call run on tokio's blocking pool.
pub async fn on_blocking_pool<B: Backend + ?Sized, T: Send + 'static>(
    backend: Arc<B>,
    call: impl FnOnce(&B) -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(move || call(&backend))
        .await
        .map_err(|e| BackendError::internal(format!("the request's task failed: {e}")))?
}

/// A statement's result, and where its reads were served (shard and
/// applied index), which a follower read reports.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlOutcome {
    pub result: StatementResult,
    pub reads: Vec<ShardRead>,
}

/// Whether a PUT created the document or replaced one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// The class of an error: what the API's status code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Malformed JSON or SQL, a bad value, an invalid name: 400.
    BadRequest,
    /// An unknown collection, index or document: 404.
    NotFound,
    /// A unique violation, a duplicate `_id`, something that exists already,
    /// a write that lost to concurrent writers every time: 409.
    Conflict,
    /// A request body over the limit: 413.
    TooLarge,
    /// A missing or wrong credential (a join token): 401.
    Unauthorized,
    /// The paying account cannot cover the request: 402.
    PaymentRequired,
    /// Not ready, or no quorum: 503; retrying later may succeed.
    Unavailable,
    /// A fault of the node (storage, corrupt data): 500.
    Internal,
}

/// An error with its stable code, its class and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
}

impl BackendError {
    pub fn new(class: ErrorClass, code: &str, message: impl Into<String>) -> Self {
        BackendError {
            class,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::BadRequest, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::NotFound, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Internal, "internal", message)
    }

    pub fn document_not_found(collection: &str, id: &str) -> Self {
        EngineError::DocumentNotFound {
            collection: collection.into(),
            id: id.into(),
        }
        .into()
    }
}

/// The class of an error code of the query layer or the engine.
pub fn class_of_code(code: &str) -> ErrorClass {
    match code {
        "collection_not_found" | "index_not_found" | "document_not_found" => ErrorClass::NotFound,
        "duplicate_id" | "unique_violation" | "collection_exists" | "index_exists"
        | "write_conflict" | "contention" => ErrorClass::Conflict,
        "storage" | "corruption" | "unsupported_layout" | "snapshot_rejected" | "internal" => {
            ErrorClass::Internal
        }
        // The cluster: no leader within the bound, a node not yet serving,
        // a write whose outcome is unknown. Retrying later may succeed.
        "no_quorum" | "unavailable" | "unreachable" | "not_ready" => ErrorClass::Unavailable,
        "bad_token" => ErrorClass::Unauthorized,
        "data_dir_in_use" | "not_a_data_dir" => ErrorClass::Internal,
        // Everything else is the request's fault: bad SQL, JSON, values,
        // names, paths, documents over a limit.
        _ => ErrorClass::BadRequest,
    }
}

impl From<QueryError> for BackendError {
    fn from(e: QueryError) -> Self {
        let code = e.code();
        BackendError::new(class_of_code(code), code, e.to_string())
    }
}

impl From<EngineError> for BackendError {
    fn from(e: EngineError) -> Self {
        let code = e.code();
        BackendError::new(class_of_code(code), code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_choose_the_class() {
        let e: BackendError = QueryError::Syntax("x".into()).into();
        assert_eq!(
            (e.class, e.code.as_str()),
            (ErrorClass::BadRequest, "syntax_error")
        );
        let e: BackendError = EngineError::CollectionNotFound("c".into()).into();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.message, r#"collection "c" does not exist"#);
        let e: BackendError = EngineError::UniqueViolation {
            collection: "c".into(),
            index: "i".into(),
            key: "1".into(),
            existing_id: "a".into(),
        }
        .into();
        assert_eq!(e.class, ErrorClass::Conflict);
        let e: BackendError = EngineError::Storage("disk".into()).into();
        assert_eq!(e.class, ErrorClass::Internal);
    }
}
