//! Metering: the middleware on every paid route. It finds the payer
//! ([`Traffic::authenticate`]), takes an estimate of the fee from the payer's
//! hold before the request runs (so an unfunded account changes nothing),
//! and once the reply is known charges its real fee and returns it with a
//! signed receipt in the `x-stratos-receipt` header.
//!
//! A reply's fee is `ceil(bytes × wei_per_kib / 1024) + documents ×
//! wei_per_document`: `bytes` the reply body, `documents` what the handler
//! reports in [`Metered`] (rows returned by a read, documents changed by a
//! write). A read whose real fee the balance cannot cover is not served
//! (402), so reads never overspend. A write has already applied when its
//! real fee is known: it is charged in full even past the balance, which
//! bounds a payer's overspend by the writes in flight when its funds ran out
//! (see `docs/traffic.md`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stratosdb_verifier::traffic::{RECEIPT_VERSION, Receipt};

use super::{Payer, Traffic, blocking};
use crate::node::backend::BackendError;

/// The response header that carries the receipt (JSON).
pub const RECEIPT_HEADER: &str = "x-stratos-receipt";
/// The reply size a request is charged for before it runs.
const ESTIMATE_BYTES: u64 = 256;

/// What a reply carries, set by its handler as a response extension.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metered {
    pub documents: u64,
    /// A read: not served when its fee cannot be paid.
    pub read_only: bool,
}

/// Marks a response with what it carries.
pub fn metered(mut response: Response, documents: u64, read_only: bool) -> Response {
    response.extensions_mut().insert(Metered {
        documents,
        read_only,
    });
    response
}

/// The middleware; its state is the traffic service and the body limit.
pub async fn paid(
    State((traffic, limit)): State<(Arc<Traffic>, usize)>,
    request: Request,
    next: Next,
) -> Response {
    match charge(traffic, limit, request, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn charge(
    traffic: Arc<Traffic>,
    limit: usize,
    request: Request,
    next: Next,
) -> Result<Response, BackendError> {
    let (parts, body) = request.into_parts();
    // The outer layers enforce the body limit; an error here is that limit
    // (or a client that went away).
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| crate::node::http::too_large(limit))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let payer = traffic
        .authenticate(parts.method.as_str(), &path, &bytes, |name| {
            parts.headers.get(name).and_then(|v| v.to_str().ok())
        })
        .await?;
    let prices = traffic.prices()?;
    let epoch = traffic.epoch();
    let estimate = prices.fee(ESTIMATE_BYTES, 1).unwrap_or(u128::MAX);
    if !traffic.take_held(&payer.address, epoch, estimate) {
        blocking(&traffic, move |t| t.take(&payer.address, epoch, estimate)).await?;
    }

    let read_only_method = parts.method == Method::GET;
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED
        || status == StatusCode::PAYMENT_REQUIRED
        || status.is_server_error()
    {
        // Not served: the node's fault, or nothing to serve.
        traffic.give_back(&payer.address, epoch, estimate);
        return Ok(response);
    }
    let metered = response
        .extensions()
        .get::<Metered>()
        .copied()
        .unwrap_or(Metered {
            documents: 0,
            read_only: read_only_method,
        });
    let (mut head, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| BackendError::internal(format!("reading the reply: {e}")))?;
    let fee = prices
        .fee(body.len() as u64, metered.documents)
        .unwrap_or(u128::MAX);
    if fee > estimate {
        let extra = fee - estimate;
        let taken = if traffic.take_held(&payer.address, epoch, extra) {
            Ok(())
        } else {
            blocking(&traffic, move |t| t.take(&payer.address, epoch, extra)).await
        };
        if let Err(e) = taken {
            if metered.read_only {
                traffic.give_back(&payer.address, epoch, estimate);
                return Err(e);
            }
            tracing::warn!(payer = %payer.address, fee, "a write's fee is past its payer's balance");
        }
    } else {
        traffic.give_back(&payer.address, epoch, estimate - fee);
    }
    let (_, text) = issue(
        &traffic,
        &payer,
        epoch,
        prices,
        &body,
        metered.documents,
        fee,
    )
    .await?;
    if let Ok(value) = HeaderValue::from_str(&text) {
        head.headers.insert(RECEIPT_HEADER, value);
    }
    Ok(Response::from_parts(head, Body::from(body)))
}

/// Signs and logs the reply's receipt; returns it with its JSON as logged.
async fn issue(
    traffic: &Traffic,
    payer: &Payer,
    epoch: u64,
    prices: stratosdb_verifier::traffic::Prices,
    body: &Bytes,
    documents: u64,
    fee: u128,
) -> Result<(Receipt, String), BackendError> {
    let receipt = Receipt {
        version: RECEIPT_VERSION,
        cluster_id: traffic.cluster_id()?,
        node_key: [0; 32],
        sequence: 0,
        epoch,
        payer: payer.address,
        request_hash: payer.request_hash,
        bytes: body.len() as u64,
        documents,
        prices,
        fee,
        batch: Default::default(),
        signature: [0; 64],
    };
    traffic
        .receipts()
        .issue_gathered(receipt)
        .await
        .map_err(BackendError::internal)
}
