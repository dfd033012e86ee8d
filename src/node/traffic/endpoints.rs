//! The traffic endpoints (`docs/traffic.md`): prices, balances and the
//! node's receipts, readable without a signature.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use stratosdb_verifier::traffic::{Address, Prices, Receipt, wei};

use stratosdb_chain_anchor::{ChainRef, DepositAuthorization, DepositRecord};

use super::{Traffic, blocking};
use crate::node::backend::BackendError;
use crate::node::http::{query_params, request_body};

/// `GET /v1/prices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricesReply {
    #[serde(with = "stratosdb_verifier::hex_serde::hash")]
    pub cluster_id: [u8; 32],
    #[serde(flatten)]
    pub prices: Prices,
    pub settlement_address: Option<Address>,
    #[serde(with = "wei::string")]
    pub wei_per_stos: u128,
    /// The epoch this node serves receipts in.
    pub epoch: u64,
}

/// `GET /v1/accounts/{address}`: amounts in wei, as decimal strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountReply {
    pub address: Address,
    pub stratos_address: String,
    #[serde(with = "wei::string")]
    pub deposited: u128,
    #[serde(with = "wei::string")]
    pub spent: u128,
    #[serde(with = "wei::string")]
    pub withdrawn: u128,
    #[serde(with = "wei::string")]
    pub earned: u128,
    #[serde(with = "wei::string")]
    pub reserved: u128,
    #[serde(with = "wei::string")]
    pub available: u128,
}

/// `GET /v1/receipts?from=N&limit=M`: this node's receipts from sequence N.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiptsReply {
    /// The node's newest sequence.
    pub last: u64,
    pub receipts: Vec<Receipt>,
}

/// `POST /v1/accounts/{address}/deposits`' body: a deposit the account
/// signed (local ledger), or the reference of its transfer to the
/// settlement address (Stratos).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DepositRequest {
    Signed(DepositAuthorization),
    Transfer { reference: String },
}

/// The deposit's reply: what was credited, and the account after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepositReply {
    pub reference: String,
    #[serde(with = "wei::string")]
    pub amount: u128,
    pub account: AccountReply,
}

/// `GET /v1/settlements?from=E&limit=N`: settlement records from epoch E on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SettlementsReply {
    pub settlements: Vec<super::settle::SettlementRecord>,
}

#[derive(Deserialize)]
struct SettlementsQuery {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

/// `POST /v1/accounts/{address}/withdrawals`' body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    #[serde(with = "wei::string")]
    pub amount: u128,
}

/// The withdrawal's reply: its payout (pending until paid on the chain)
/// and the account after the debit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WithdrawalReply {
    pub payout: super::payouts::PayoutRecord,
    pub account: AccountReply,
}

/// `GET /v1/payouts?account=0x…`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PayoutsReply {
    pub payouts: Vec<super::payouts::PayoutRecord>,
}

#[derive(Deserialize)]
struct PayoutsQuery {
    #[serde(default)]
    account: Option<String>,
}

#[derive(Deserialize)]
struct ReceiptsQuery {
    #[serde(default = "one")]
    from: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn one() -> u64 {
    1
}

/// Most receipts one `GET /v1/receipts` returns.
pub const MAX_RECEIPTS: u64 = 10_000;

fn default_limit() -> u64 {
    1000
}

/// The routes, for the API's router.
pub fn routes<S: Clone + Send + Sync + 'static>(
    traffic: Arc<Traffic>,
    body_limit: usize,
) -> Router<S> {
    Router::new()
        .route("/v1/prices", get(prices))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/receipts", get(receipts))
        .route("/v1/accounts/{address}/deposits", post(deposit))
        .route("/v1/settlements", get(settlements))
        .route("/v1/accounts/{address}/withdrawals", post(withdraw))
        .route("/v1/payouts", get(payouts))
        .with_state(Endpoints {
            traffic,
            body_limit: BodyLimit(body_limit),
        })
}

/// The routes' state: the service, and the API's body limit (for the 413
/// of a chunked body past it).
#[derive(Clone)]
struct Endpoints {
    traffic: Arc<Traffic>,
    body_limit: BodyLimit,
}

#[derive(Clone, Copy)]
struct BodyLimit(usize);

impl FromRef<Endpoints> for Arc<Traffic> {
    fn from_ref(state: &Endpoints) -> Arc<Traffic> {
        state.traffic.clone()
    }
}

impl FromRef<Endpoints> for BodyLimit {
    fn from_ref(state: &Endpoints) -> BodyLimit {
        state.body_limit
    }
}

fn json<T: Serialize>(value: &T) -> Result<Response, BackendError> {
    let text = serde_json::to_string(value)
        .map_err(|e| BackendError::internal(format!("encoding the reply: {e}")))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

pub fn parse_address(text: &str) -> Result<Address, BackendError> {
    text.parse::<Address>().map_err(|e| {
        BackendError::bad_request(
            "invalid_address",
            format!("{text:?} is not an account address (0x… or st1…): {e}"),
        )
    })
}

async fn prices(State(traffic): State<Arc<Traffic>>) -> Result<Response, BackendError> {
    let reply = blocking(&traffic, |t| {
        Ok(PricesReply {
            cluster_id: t.cluster_id()?,
            prices: t.prices()?,
            settlement_address: t.config.chain.settlement_address(),
            wei_per_stos: wei::WEI_PER_STOS,
            epoch: t.epoch(),
        })
    })
    .await?;
    json(&reply)
}

async fn account(
    State(traffic): State<Arc<Traffic>>,
    Path(address): Path<String>,
) -> Result<Response, BackendError> {
    let address = parse_address(&address)?;
    let state = blocking(&traffic, move |t| t.account(&address)).await?;
    json(&AccountReply::new(address, &state))
}

impl AccountReply {
    pub fn new(address: Address, state: &super::accounts::AccountState) -> AccountReply {
        AccountReply {
            address,
            stratos_address: address.to_stratos(),
            deposited: state.deposited,
            spent: state.spent,
            withdrawn: state.withdrawn,
            earned: state.earned,
            reserved: state.reserved(),
            available: state.available(),
        }
    }
}

/// A deposit needs no request signature: the deposit proves itself (the
/// account's signature on a ledger deposit, its own transfer on Stratos).
async fn deposit(
    State(traffic): State<Arc<Traffic>>,
    State(BodyLimit(limit)): State<BodyLimit>,
    Path(address): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, BackendError> {
    let address = parse_address(&address)?;
    let raw = request_body(limit, raw)?;
    let request: DepositRequest = serde_json::from_slice(&raw).map_err(|e| {
        BackendError::bad_request(
            "invalid_request",
            format!(
                "a deposit is {{\"cluster_id\", \"account\", \"amount\", \"nonce\", \"signature\"}} \
                 (local ledger) or {{\"reference\": \"evm:…\"}} (Stratos): {e}"
            ),
        )
    })?;
    let reply = blocking(&traffic, move |t| {
        let record = t.record_deposit(&address, &request)?;
        // What names the deposit wherever it is posted: the account and
        // nonce of a signed one (each node may keep its own ledger), the
        // chain reference of a transfer.
        let key = match &request {
            DepositRequest::Signed(a) => format!("signed:{}:{}", a.account, a.nonce.to_lowercase()),
            DepositRequest::Transfer { .. } => record.reference.to_string(),
        };
        let state = t.credit(&record, &key)?;
        Ok(DepositReply {
            reference: record.reference.to_string(),
            amount: record.amount,
            account: AccountReply::new(address, &state),
        })
    })
    .await?;
    json(&reply)
}

impl Traffic {
    /// The deposit on the chain: recorded (a signed ledger deposit) or read
    /// back (a transfer), and checked to be `address`'s, to this cluster.
    fn record_deposit(
        &self,
        address: &Address,
        request: &DepositRequest,
    ) -> Result<DepositRecord, BackendError> {
        let cluster_id = self.cluster_id()?;
        let record = match request {
            DepositRequest::Signed(authorization) => {
                if &authorization.account != address {
                    return Err(BackendError::bad_request(
                        "invalid_deposit",
                        format!(
                            "the deposit is signed for {}, not for {address}",
                            authorization.account
                        ),
                    ));
                }
                if authorization.cluster_id != cluster_id {
                    return Err(BackendError::bad_request(
                        "invalid_deposit",
                        "the deposit names another cluster (see GET /v1/prices for this one's id)",
                    ));
                }
                let chain = self.config.chain.clone();
                let authorization = authorization.clone();
                off_runtime(move || chain.record_deposit(&authorization))?.map_err(chain_error)?
            }
            DepositRequest::Transfer { reference } => {
                let reference: ChainRef = reference.parse().map_err(|e| {
                    BackendError::bad_request("invalid_deposit", format!("reference: {e}"))
                })?;
                let chain = self.config.chain.clone();
                off_runtime(move || chain.read_deposit(&cluster_id, &reference))?
                    .map_err(chain_error)?
            }
        };
        if &record.account != address {
            return Err(BackendError::bad_request(
                "invalid_deposit",
                format!(
                    "{} is a deposit by {}, not by {address}",
                    record.reference, record.account
                ),
            ));
        }
        Ok(record)
    }
}

/// Runs a chain call on a plain thread: the Stratos backend blocks on its
/// own runtime and refuses to run inside tokio's (the blocking pool
/// included).
fn off_runtime<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackendError> {
    std::thread::Builder::new()
        .name("chain-call".into())
        .spawn(call)
        .map_err(|e| BackendError::internal(format!("cannot start a thread: {e}")))?
        .join()
        .map_err(|_| BackendError::internal("a chain call panicked"))
}

fn chain_error(e: stratosdb_chain_anchor::ChainError) -> BackendError {
    use stratosdb_chain_anchor::ChainError as E;
    match e {
        E::Unavailable(_) => BackendError::new(
            crate::node::ErrorClass::Unavailable,
            "chain_unavailable",
            e.to_string(),
        ),
        E::NotFound(_) | E::Refused(_) => {
            BackendError::bad_request("invalid_deposit", e.to_string())
        }
        other => BackendError::internal(other.to_string()),
    }
}

async fn settlements(
    State(traffic): State<Arc<Traffic>>,
    query: Result<Query<SettlementsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, BackendError> {
    let query = query_params(query)?;
    let limit = query.limit.clamp(1, 1000) as usize;
    let reply = blocking(&traffic, move |t| {
        let meta = t.node.metadata(true).map_err(super::node_error)?;
        let settlements =
            super::settle::list(&meta, query.from, limit).map_err(super::node_error)?;
        Ok(SettlementsReply { settlements })
    })
    .await?;
    json(&reply)
}

/// A withdrawal must be signed by its account (a request signature; on a
/// `--dev` cluster an unsigned one speaks for the dev account only).
async fn withdraw(
    State(traffic): State<Arc<Traffic>>,
    State(BodyLimit(limit)): State<BodyLimit>,
    Path(address): Path<String>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, BackendError> {
    let address = parse_address(&address)?;
    let raw = request_body(limit, raw)?;
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let payer = traffic
        .authenticate("POST", &path, &raw, |name| {
            headers.get(name).and_then(|v| v.to_str().ok())
        })
        .await?;
    if payer.address != address {
        return Err(BackendError::new(
            crate::node::ErrorClass::Unauthorized,
            "not_the_account",
            format!(
                "a withdrawal from {address} must be signed by that account, not {}",
                payer.address
            ),
        ));
    }
    let request: WithdrawalRequest = serde_json::from_slice(&raw).map_err(|e| {
        BackendError::bad_request(
            "invalid_request",
            format!("a withdrawal is {{\"amount\": \"WEI\"}}: {e}"),
        )
    })?;
    // The signed request names the payout: a replay is refused as such.
    let id = u64::from_be_bytes(payer.request_hash[..8].try_into().unwrap_or_default());
    let reply = blocking(&traffic, move |t| {
        let (payout, state) = t.withdraw(&address, request.amount, id)?;
        Ok(WithdrawalReply {
            payout,
            account: AccountReply::new(address, &state),
        })
    })
    .await?;
    json(&reply)
}

async fn payouts(
    State(traffic): State<Arc<Traffic>>,
    query: Result<Query<PayoutsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, BackendError> {
    let query = query_params(query)?;
    let account = query.account.as_deref().map(parse_address).transpose()?;
    let reply = blocking(&traffic, move |t| {
        let meta = t.node.metadata(true).map_err(super::node_error)?;
        let payouts = super::payouts::list(&meta, account.as_ref()).map_err(super::node_error)?;
        Ok(PayoutsReply { payouts })
    })
    .await?;
    json(&reply)
}

async fn receipts(
    State(traffic): State<Arc<Traffic>>,
    query: Result<Query<ReceiptsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, BackendError> {
    let query = query_params(query)?;
    let from = query.from.max(1);
    let limit = query.limit.clamp(1, MAX_RECEIPTS);
    let reply = blocking(&traffic, move |t| {
        let log = t.receipts();
        let last = log.last_sequence();
        let to = from.saturating_add(limit - 1).min(last);
        let receipts = if from > to {
            Vec::new()
        } else {
            log.read(from, to)
                .map_err(|e| BackendError::internal(e.to_string()))?
        };
        Ok(ReceiptsReply { last, receipts })
    })
    .await?;
    json(&reply)
}
