//! The HTTP/JSON API (axum): routes, request parsing, error replies, the
//! body limit and request metrics. Database calls block, so each runs on
//! tokio's blocking pool ([`tokio::task::spawn_blocking`]), except a
//! document PUT and GET, which await their raft answer (the write applied,
//! the read index) on the worker ([`Backend::put_async`],
//! [`Backend::get_async`]): no blocking-pool thread to wake per request.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use stratosdb_engine::Value;
use stratosdb_query::{FindOptions, Order, ShardRead, StatementResult};
use stratosdb_replication::p2p::FaultSwitch;
use tower_http::limit::RequestBodyLimitLayer;

use super::backend::{Backend, BackendError, ErrorClass, PutOutcome, on_blocking_pool};
use super::metrics::Metrics;
use super::traffic::{self, Traffic, meter::metered};
use crate::api::{
    AnchorsQuery, Consistency, ErrorBody, ErrorDetail, ExportQuery, JoinRequest, RemoveNodeRequest,
    SqlRequest,
};
use crate::rows::{json_row, json_rows, json_string};

/// The default request body limit: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;

/// Settings of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit: usize,
    /// Test-only fault injection (`--fault-injection`): when set, the API
    /// has `GET`/`POST /v1/admin/faults`; when not, those routes do not
    /// exist (404 `no_route`, like any other unknown path).
    pub faults: Option<FaultSwitch>,
    /// Proof of Traffic: when set, data routes are signed and metered, and
    /// the traffic endpoints exist.
    pub traffic: Option<Arc<Traffic>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit: DEFAULT_BODY_LIMIT,
            faults: None,
            traffic: None,
        }
    }
}

#[derive(Clone)]
struct AppState {
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    body_limit: usize,
    faults: Option<FaultSwitch>,
}

/// The API's routes over a backend.
pub fn router(backend: Arc<dyn Backend>, config: &ApiConfig) -> Router {
    let state = AppState {
        backend,
        metrics: Arc::new(Metrics::default()),
        body_limit: config.body_limit,
        faults: config.faults.clone(),
    };
    // The data routes: signed by their payer and metered, when traffic is on.
    let mut paid = Router::new()
        .route("/v1/sql", post(sql))
        .route(
            "/v1/collections/{c}/docs/{id}",
            put(put_doc).get(get_doc).delete(delete_doc),
        )
        .route("/v1/collections/{c}/find", post(find))
        .route("/v1/cluster/remove-node", post(remove_node))
        .route("/v1/anchors", get(anchors))
        .route("/v1/collections/{c}/shards/{n}/export", get(export_shard));
    let mut routes = Router::new();
    if let Some(traffic) = &config.traffic {
        paid = paid.route_layer(middleware::from_fn_with_state(
            (traffic.clone(), config.body_limit),
            traffic::meter::paid,
        ));
        routes = routes.merge(traffic::endpoints::routes(
            traffic.clone(),
            config.body_limit,
        ));
    }
    if config.faults.is_some() {
        routes = routes.route("/v1/admin/faults", get(get_faults).post(set_faults));
    }
    routes
        .merge(paid)
        .route("/v1/health", get(health))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/join", post(join))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Innermost first: the limit tower-http enforces while a body is
        // read (chunked bodies), the check of a declared Content-Length
        // (answered at once, in the API's error shape), then metrics.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            declared_length,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), measure))
        .with_state(state)
}

// ---- replies ----------------------------------------------------------------

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorClass::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for BackendError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let text = serde_json::to_string(&body).unwrap_or_default();
        json(status_of(self.class), text)
    }
}

pub(crate) fn too_large(limit: usize) -> BackendError {
    BackendError::new(
        ErrorClass::TooLarge,
        "body_too_large",
        format!(
            "the request body is over the limit of {limit} bytes ({})",
            human_bytes(limit)
        ),
    )
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

type Reply = Result<Response, BackendError>;

/// Runs a blocking backend call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&dyn Backend) -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    let backend = state.backend.clone();
    // A node that is not serving yet (founding, joining) says so first.
    backend.readiness()?;
    on_blocking_pool(backend, |b| call(b)).await
}

/// The body, or the API's error: 413 past the limit.
fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, BackendError> {
    request_body(state.body_limit, body)
}

/// The body, or the API's error: 413 past `limit`.
pub(crate) fn request_body(
    limit: usize,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, BackendError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            BackendError::bad_request("bad_body", rejection.body_text())
        }
    })
}

/// A route's query parameters, or 400 `invalid_request`.
pub(crate) fn query_params<T>(
    params: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, BackendError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| BackendError::bad_request("invalid_request", e.body_text()))
}

/// Parses a JSON body into `T`: malformed JSON and JSON of the wrong shape
/// are both 400, with different codes.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BackendError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "malformed_json"
        };
        BackendError::bad_request(code, format!("request body: {e}"))
    })
}

// ---- middleware -------------------------------------------------------------

/// A body whose declared length is over the limit is refused before it is read.
async fn declared_length(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > state.body_limit as u64
    {
        return too_large(state.body_limit).into_response();
    }
    next.run(request).await
}

async fn measure(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let response = next.run(request).await;
    state.metrics.record(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

// ---- handlers ---------------------------------------------------------------

async fn no_route() -> BackendError {
    BackendError::not_found("no_route", "no such API route; see the README's HTTP API")
}

async fn method_not_allowed() -> Response {
    let e = BackendError::bad_request("method_not_allowed", "this route does not take that method");
    let mut response = e.into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// `POST /v1/admin/faults`'s body and both routes' reply: the node ids
/// (as `/v1/cluster` shows them) whose traffic the transport drops.
#[derive(Deserialize)]
struct FaultsRequest {
    drop: Vec<String>,
}

fn faults_reply(switch: &FaultSwitch) -> Response {
    let mut ids: Vec<String> = switch
        .dropped()
        .into_iter()
        .map(super::cluster::show_id)
        .collect();
    ids.sort();
    json(
        StatusCode::OK,
        serde_json::json!({ "drop": ids }).to_string(),
    )
}

/// The switch; only routed when it exists, so this is a guard, not a path.
fn fault_switch(state: &AppState) -> Result<&FaultSwitch, BackendError> {
    state
        .faults
        .as_ref()
        .ok_or_else(|| BackendError::not_found("no_route", "fault injection is off"))
}

async fn get_faults(State(state): State<AppState>) -> Reply {
    Ok(faults_reply(fault_switch(&state)?))
}

async fn set_faults(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Reply {
    let switch = fault_switch(&state)?;
    let request: FaultsRequest = parse(&body(&state, raw)?)?;
    let ids = request
        .drop
        .iter()
        .map(|id| {
            u64::from_str_radix(id, 16).map_err(|_| {
                BackendError::bad_request(
                    "invalid_node_id",
                    format!("{} is not a node id (16 hex digits)", json_string(id)),
                )
            })
        })
        .collect::<Result<HashSet<u64>, BackendError>>()?;
    tracing::warn!(drop = ?request.drop, "fault injection: dropping traffic to and from these nodes");
    switch.set_dropped(ids);
    Ok(faults_reply(switch))
}

async fn health(State(state): State<AppState>) -> Reply {
    blocking(&state, |b| b.readiness()).await?;
    Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.to_string()))
}

async fn sql(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Reply {
    let request: SqlRequest = parse(&body(&state, raw)?)?;
    let detail = request.detail;
    let follower = request.consistency == Consistency::Follower;
    if request.proof {
        let query = match stratosdb_query::parse_statement(&request.sql)? {
            stratosdb_query::ast::Statement::Select(q) => q,
            _ => {
                return Err(BackendError::bad_request(
                    "proof_unsupported",
                    "only a SELECT can be proven: a write or DDL returns no stored documents",
                ));
            }
        };
        let consistency = request.consistency;
        let proven = blocking(&state, move |b| b.query_proven(&query, consistency)).await?;
        let documents = proven.rows.rows.len() as u64;
        return Ok(metered(
            json(StatusCode::OK, proven_reply(&proven, detail, follower)),
            documents,
            true,
        ));
    }
    let outcome = blocking(&state, move |b| b.sql(&request.sql, request.consistency)).await?;
    let mut text = sql_reply(&outcome.result, detail);
    if follower && !outcome.reads.is_empty() {
        text = with_applied(text, &outcome.reads);
    }
    let (documents, read_only) = match &outcome.result {
        StatementResult::Rows { rows, .. } => (rows.len() as u64, true),
        StatementResult::Affected(n) => (*n, false),
        StatementResult::Message(_) => (0, false),
    };
    Ok(metered(json(StatusCode::OK, text), documents, read_only))
}

/// Adds `"applied": [{"collection", "shard", "index"}]` to a reply: the
/// applied index of each replica a follower read was served from.
fn with_applied(mut text: String, reads: &[ShardRead]) -> String {
    let entries: Vec<String> = reads
        .iter()
        .map(|r| {
            format!(
                r#"{{"collection":{},"shard":{},"index":{}}}"#,
                json_string(&r.collection),
                r.shard,
                r.applied
            )
        })
        .collect();
    text.pop(); // the closing brace
    text.push_str(&format!(r#","applied":[{}]}}"#, entries.join(",")));
    text
}

/// `{"rows": [...], "affected": N}`, rows with their keys in SELECT order;
/// with `detail`, also `columns` (row results) or `message` (DDL).
fn sql_reply(result: &StatementResult, detail: bool) -> String {
    match result {
        StatementResult::Rows { columns, rows } => {
            let mut text = format!(r#"{{"rows":{},"affected":0"#, json_rows(columns, rows));
            if detail {
                let names: Vec<String> = columns.iter().map(|c| json_string(c)).collect();
                text.push_str(&format!(r#","columns":[{}]"#, names.join(",")));
            }
            text.push('}');
            text
        }
        StatementResult::Affected(n) => format!(r#"{{"rows":[],"affected":{n}}}"#),
        StatementResult::Message(message) if detail => format!(
            r#"{{"rows":[],"affected":0,"message":{}}}"#,
            json_string(message)
        ),
        StatementResult::Message(_) => r#"{"rows":[],"affected":0}"#.to_string(),
    }
}

/// A proven read's reply: `{"rows", "affected": 0, "proofs", "absent"}`
/// (`proofs[i]` proves `rows[i]`'s document; `absent`, the looked-up `_id`s
/// that are not there), with `columns` on `detail` and `applied` on
/// follower reads.
fn proven_reply(proven: &stratosdb_query::ProvenRows, detail: bool, follower: bool) -> String {
    let mut text = sql_reply(
        &StatementResult::Rows {
            columns: proven.rows.columns.clone(),
            rows: proven.rows.rows.clone(),
        },
        detail,
    );
    text.pop(); // the closing brace
    let list = |proofs: &[stratosdb_verifier::ReadProof]| {
        serde_json::to_string(proofs).unwrap_or_else(|_| "[]".into())
    };
    text.push_str(&format!(
        r#","proofs":{},"absent":{}}}"#,
        list(&proven.proofs),
        list(&proven.absent)
    ));
    if follower && !proven.reads.is_empty() {
        text = with_applied(text, &proven.reads);
    }
    text
}

/// `?consistency=linearizable|follower&proof=true` on document reads.
#[derive(Deserialize)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
    /// Reply `{"rows": [doc], "proofs": [...], "absent": []}`; a 404 carries
    /// the non-inclusion proof in `absent` beside `error`.
    #[serde(default)]
    proof: bool,
}

async fn put_doc(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Reply {
    let bytes = body(&state, raw)?;
    let doc = Value::from_json_slice(&bytes)
        .map_err(|e| BackendError::bad_request("malformed_json", format!("request body: {e}")))?;
    let Value::Object(mut fields) = doc else {
        return Err(BackendError::bad_request(
            "invalid_document",
            "a document must be a JSON object",
        ));
    };
    match fields.get("_id") {
        None => {}
        Some(Value::String(given)) if *given == id => {}
        Some(other) => {
            return Err(BackendError::bad_request(
                "id_mismatch",
                format!(
                    "the document's _id {} is not the _id in the path {}",
                    other.to_json_string(),
                    json_string(&id)
                ),
            ));
        }
    }
    fields.insert("_id".to_string(), Value::String(id.clone()));
    let doc = Value::Object(fields);
    let reply_id = id.clone();
    // A node that is not serving yet (founding, joining) says so first.
    state.backend.readiness()?;
    let outcome = state.backend.clone().put_async(collection, id, doc).await?;
    let (status, created) = match outcome {
        PutOutcome::Created => (StatusCode::CREATED, true),
        PutOutcome::Replaced => (StatusCode::OK, false),
    };
    let reply = json(
        status,
        format!(
            r#"{{"_id":{},"created":{created}}}"#,
            json_string(&reply_id)
        ),
    );
    Ok(metered(reply, 1, false))
}

async fn get_doc(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    params: Result<Query<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    let params = query_params(params)?;
    if params.proof {
        return get_doc_proven(state, collection, id, params.consistency).await;
    }
    // A node that is not serving yet (founding, joining) says so first.
    state.backend.readiness()?;
    let doc = state
        .backend
        .clone()
        .get_async(collection, id, params.consistency)
        .await?;
    Ok(metered(
        json(StatusCode::OK, json_row(&["_id".to_string()], &doc)),
        1,
        true,
    ))
}

async fn get_doc_proven(
    state: AppState,
    collection: String,
    id: String,
    consistency: Consistency,
) -> Reply {
    let mut query = stratosdb_query::ast::Query::all(&collection);
    query.filter = Some(stratosdb_query::ast::Expr::cmp(
        stratosdb_query::ast::CmpOp::Eq,
        stratosdb_query::ast::Expr::path("_id"),
        stratosdb_query::ast::Expr::lit(id.as_str()),
    ));
    let follower = consistency == Consistency::Follower;
    let proven = blocking(&state, move |b| b.query_proven(&query, consistency)).await?;
    let text = proven_reply(&proven, false, follower);
    if !proven.rows.rows.is_empty() {
        return Ok(metered(json(StatusCode::OK, text), 1, true));
    }
    // 404 with the error and the non-inclusion proof side by side.
    let error = BackendError::document_not_found(&collection, &id);
    let body = serde_json::to_string(&ErrorBody {
        error: ErrorDetail {
            code: error.code,
            message: error.message,
        },
    })
    .unwrap_or_default();
    let mut merged = body;
    merged.pop();
    merged.push(',');
    merged.push_str(&text[1..]);
    Ok(json(StatusCode::NOT_FOUND, merged))
}

async fn delete_doc(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Reply {
    blocking(&state, move |b| b.delete(&collection, &id)).await?;
    Ok(metered(
        json(StatusCode::OK, r#"{"affected":1}"#.to_string()),
        1,
        false,
    ))
}

/// `POST /v1/collections/{c}/find`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindRequest {
    #[serde(default)]
    filter: Option<serde_json::Value>,
    #[serde(default)]
    sort: Option<serde_json::Value>,
    #[serde(default)]
    skip: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    projection: Option<Vec<String>>,
    #[serde(default)]
    consistency: Consistency,
    /// Ask for proofs, as `"proof": true` on `/v1/sql`.
    #[serde(default)]
    proof: bool,
}

async fn find(
    State(state): State<AppState>,
    Path(collection): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Reply {
    let request: FindRequest = parse(&body(&state, raw)?)?;
    let filter = request
        .filter
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let options = FindOptions {
        projection: request.projection,
        sort: match &request.sort {
            None => Vec::new(),
            Some(sort) => sort_keys(sort)?,
        },
        skip: request.skip.unwrap_or(0),
        limit: request.limit,
    };
    let columns = options
        .projection
        .clone()
        .unwrap_or_else(|| vec!["_id".to_string()]);
    let consistency = request.consistency;
    if request.proof {
        let query = stratosdb_query::filter::find_query(&collection, &filter, &options)?;
        let proven = blocking(&state, move |b| b.query_proven(&query, consistency)).await?;
        let mut proven = proven;
        proven.rows.columns = columns;
        let documents = proven.rows.rows.len() as u64;
        return Ok(metered(
            json(StatusCode::OK, proven_reply(&proven, false, false)),
            documents,
            true,
        ));
    }
    let rows = blocking(&state, move |b| {
        b.find(&collection, &filter, &options, consistency)
    })
    .await?;
    Ok(metered(
        json(
            StatusCode::OK,
            format!(r#"{{"rows":{}}}"#, json_rows(&columns, &rows)),
        ),
        rows.len() as u64,
        true,
    ))
}

/// Sort keys, most significant first: `"age"` or `"-age"`, `{"age": -1}`
/// (one key), or an array of these.
fn sort_keys(sort: &serde_json::Value) -> Result<Vec<(String, Order)>, BackendError> {
    use serde_json::Value as J;
    let bad = || {
        BackendError::bad_request(
            "invalid_request",
            r#"sort is a path ("age", "-age" for descending), {"path": 1 or -1}, or an array of these"#,
        )
    };
    let one = |key: &J| -> Result<(String, Order), BackendError> {
        match key {
            J::String(s) => Ok(match s.strip_prefix('-') {
                Some(path) => (path.to_string(), Order::Desc),
                None => (s.clone(), Order::Asc),
            }),
            J::Object(m) if m.len() == 1 => {
                let (path, direction) = m.iter().next().ok_or_else(bad)?;
                let order = match direction {
                    J::Number(n) if n.as_i64() == Some(1) => Order::Asc,
                    J::Number(n) if n.as_i64() == Some(-1) => Order::Desc,
                    J::String(s) if s.eq_ignore_ascii_case("asc") => Order::Asc,
                    J::String(s) if s.eq_ignore_ascii_case("desc") => Order::Desc,
                    _ => return Err(bad()),
                };
                Ok((path.clone(), order))
            }
            _ => Err(bad()),
        }
    };
    match sort {
        J::Array(keys) => keys.iter().map(one).collect(),
        key => Ok(vec![one(key)?]),
    }
}

async fn cluster(State(state): State<AppState>) -> Reply {
    let map = blocking(&state, |b| b.cluster()).await?;
    let text = serde_json::to_string(&map)
        .map_err(|e| BackendError::internal(format!("encoding the cluster map: {e}")))?;
    Ok(json(StatusCode::OK, text))
}

async fn join(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Reply {
    let request: JoinRequest = parse(&body(&state, raw)?)?;
    let reply = blocking(&state, move |b| b.join(&request)).await?;
    let text = serde_json::to_string(&reply)
        .map_err(|e| BackendError::internal(format!("encoding the join reply: {e}")))?;
    Ok(json(StatusCode::OK, text))
}

async fn remove_node(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Reply {
    let request: RemoveNodeRequest = parse(&body(&state, raw)?)?;
    let reply = blocking(&state, move |b| b.remove_node(&request)).await?;
    let text = serde_json::to_string(&reply)
        .map_err(|e| BackendError::internal(format!("encoding the reply: {e}")))?;
    Ok(json(StatusCode::OK, text))
}

async fn anchors(
    State(state): State<AppState>,
    params: Result<Query<AnchorsQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    let query = query_params(params)?;
    let reply = blocking(&state, move |b| b.anchors(&query)).await?;
    let text = serde_json::to_string(&reply)
        .map_err(|e| BackendError::internal(format!("encoding the anchors: {e}")))?;
    Ok(json(StatusCode::OK, text))
}

async fn export_shard(
    State(state): State<AppState>,
    Path((collection, shard)): Path<(String, String)>,
    params: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    let query = query_params(params)?;
    let shard: u32 = shard.parse().map_err(|_| {
        BackendError::bad_request(
            "invalid_request",
            format!("{} is not a shard number", json_string(&shard)),
        )
    })?;
    let page = blocking(&state, move |b| b.export_shard(&collection, shard, &query)).await?;
    let documents = page.documents.len() as u64;
    let text = serde_json::to_string(&page)
        .map_err(|e| BackendError::internal(format!("encoding the export: {e}")))?;
    Ok(metered(json(StatusCode::OK, text), documents, true))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let backend = state.backend.clone();
    let extra = tokio::task::spawn_blocking(move || backend.metrics_text())
        .await
        .unwrap_or_default();
    let mut text = state.metrics.render();
    text.push_str(&extra);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_forms() {
        let keys = sort_keys(&serde_json::json!(["-age", {"name": 1}, "x"])).unwrap();
        assert_eq!(
            keys,
            [
                ("age".to_string(), Order::Desc),
                ("name".to_string(), Order::Asc),
                ("x".to_string(), Order::Asc)
            ]
        );
        assert!(sort_keys(&serde_json::json!({"a": 1, "b": 1})).is_err());
        assert!(sort_keys(&serde_json::json!(3)).is_err());
    }

    #[test]
    fn sql_reply_shapes() {
        let rows = StatementResult::Rows {
            columns: vec!["z".into(), "a".into()],
            rows: vec![Value::from_json_str(r#"{"a":1,"z":2}"#).unwrap()],
        };
        assert_eq!(
            sql_reply(&rows, false),
            r#"{"rows":[{"z":2,"a":1}],"affected":0}"#
        );
        assert_eq!(
            sql_reply(&rows, true),
            r#"{"rows":[{"z":2,"a":1}],"affected":0,"columns":["z","a"]}"#
        );
        assert_eq!(
            sql_reply(&StatementResult::Affected(3), false),
            r#"{"rows":[],"affected":3}"#
        );
        assert_eq!(human_bytes(16 << 20), "16 MiB");
    }
}
