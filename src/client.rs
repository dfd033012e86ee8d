//! A small blocking client of the node's HTTP/JSON API (ureq, no TLS), used
//! by `stratosdb shell --connect`, `stratosdb cluster status` and the tests.
//!
//! ```no_run
//! use stratosdb::client::Client;
//! let client = Client::new("http://127.0.0.1:7070").unwrap();
//! client.sql("CREATE COLLECTION users").unwrap();
//! client.put("users", "u1", &serde_json::json!({"name": "Ann"})).unwrap();
//! let doc = client.get("users", "u1").unwrap();
//! assert_eq!(doc.to_json_string(), r#"{"_id":"u1","name":"Ann"}"#);
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use stratosdb_verifier::traffic::{Address, Receipt, RequestAuth, RequestSigner};

use stratosdb_chain_anchor::Chain;
use stratosdb_engine::Value;
use stratosdb_query::StatementResult;
use stratosdb_verifier::Verified;

use crate::verified::{Anchors, Policy, ProvenReply, Rejection, projection_of, verify_reply};

use crate::node::traffic::endpoints::{
    AccountReply, DepositReply, DepositRequest, PayoutsReply, PricesReply, ReceiptsReply,
    SettlementsReply, WithdrawalReply, WithdrawalRequest,
};
use crate::node::traffic::meter::RECEIPT_HEADER;
use crate::node::traffic::payouts::PayoutRecord;
use crate::node::traffic::settle::SettlementRecord;
use stratosdb_chain_anchor::DepositAuthorization;
use stratosdb_verifier::traffic::DepositEntry;

use crate::api::{
    AnchorsQuery, AnchorsReply, ClusterMap, Consistency, ErrorBody, ExportPart, ExportQuery,
    JoinReply, JoinRequest, RemoveNodeReply, RemoveNodeRequest, ShardExport, SqlRequest,
};

/// Largest reply body read (rows of a big SELECT).
const MAX_REPLY: u64 = 1 << 30;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error: its status, code and message.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached, or the connection failed.
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    /// The reply is not what the API promises.
    #[error("unexpected reply from {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The base URL is not `http://HOST:PORT`.
    #[error("invalid server URL {0:?}: expected http://HOST:PORT")]
    InvalidUrl(String),
    /// With a verifier: the reply's proofs do not check out against the
    /// chain (forged, damaged, unanchored or stale: see [`Rejection`]).
    #[error("reply from {url} rejected: {reason}")]
    Rejected { url: String, reason: Rejection },
    /// The receipt that came with a reply does not hold (a bad signature, a
    /// fee its prices do not give, another request's or another payer's, a
    /// byte count that is not the reply's).
    #[error("receipt from {url} refused: {reason}")]
    Receipt { url: String, reason: String },
    /// Keeping a receipt in the receipts file failed.
    #[error("keeping a receipt in {path}: {reason}")]
    ReceiptFile { path: String, reason: String },
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A reply of `POST /v1/sql`, with the detail the shell needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlReply {
    /// The rows' column names in order (for a statement that returns rows).
    pub columns: Option<Vec<String>>,
    pub rows: Vec<Value>,
    pub affected: u64,
    /// What a DDL statement did.
    pub message: Option<String>,
}

impl SqlReply {
    /// The reply as the query layer's result, as the embedded database gives it.
    pub fn into_statement_result(self) -> StatementResult {
        match (self.columns, self.message) {
            (Some(columns), _) => StatementResult::Rows {
                columns,
                rows: self.rows,
            },
            (None, Some(message)) => StatementResult::Message(message),
            (None, None) => StatementResult::Affected(self.affected),
        }
    }
}

#[derive(serde::Deserialize)]
struct SqlReplyBody {
    rows: Vec<Value>,
    affected: u64,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(serde::Deserialize)]
struct RowsBody {
    rows: Vec<Value>,
}

/// A client of one node. Cheap to clone; connections are kept and reused.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    verifier: Option<Verifier>,
    payment: Option<Arc<Payment>>,
    receipts: Option<Arc<Mutex<ReceiptBook>>>,
}

/// The paying account's key, and the cluster id its signatures name (read
/// once from `GET /v1/prices`).
struct Payment {
    signer: RequestSigner,
    cluster_id: OnceLock<[u8; 32]>,
}

/// The receipts a client keeps: appended to a file (one JSON per line), and
/// the newest in memory.
#[derive(Default)]
struct ReceiptBook {
    file: Option<(std::fs::File, String)>,
    last: Option<Receipt>,
    /// Fees of the receipts kept, in wei.
    total_fees: u128,
    count: u64,
}

/// The chain a verifying client trusts, and what it requires of proofs.
#[derive(Clone)]
struct Verifier {
    chain: Option<Arc<dyn Chain>>,
    policy: Policy,
}

impl Client {
    /// A client of the node at `url` (`http://HOST:PORT`, or `HOST:PORT`).
    pub fn new(url: &str) -> Result<Client, ClientError> {
        let base = url.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        let Some(host) = base.strip_prefix("http://") else {
            return Err(ClientError::InvalidUrl(url.to_string()));
        };
        if host.is_empty() || host.contains('/') {
            return Err(ClientError::InvalidUrl(url.to_string()));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Ok(Client {
            base,
            agent,
            verifier: None,
            payment: None,
            receipts: None,
        })
    }

    /// This client, signing every request with `signer`'s account, which
    /// pays for it (`docs/traffic.md`).
    pub fn signing(mut self, signer: RequestSigner) -> Client {
        self.payment = Some(Arc::new(Payment {
            signer,
            cluster_id: OnceLock::new(),
        }));
        self.receipts.get_or_insert_with(Default::default);
        self
    }

    /// This client, checking and keeping the receipt of every metered
    /// reply, appended to `file` (one JSON receipt per line) when given.
    pub fn keeping_receipts(
        mut self,
        file: Option<&std::path::Path>,
    ) -> Result<Client, ClientError> {
        let mut book = ReceiptBook::default();
        if let Some(path) = file {
            let shown = path.display().to_string();
            let opened = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| ClientError::ReceiptFile {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
            book.file = Some((opened, shown));
        }
        self.receipts = Some(Arc::new(Mutex::new(book)));
        Ok(self)
    }

    /// The paying account, when this client signs.
    pub fn payer(&self) -> Option<Address> {
        self.payment.as_ref().map(|p| p.signer.address())
    }

    /// The newest receipt kept.
    pub fn last_receipt(&self) -> Option<Receipt> {
        self.receipts.as_ref().and_then(|b| b.lock().last.clone())
    }

    /// How many receipts were kept, and their fees in wei.
    pub fn receipt_totals(&self) -> (u64, u128) {
        self.receipts.as_ref().map_or((0, 0), |b| {
            let b = b.lock();
            (b.count, b.total_fees)
        })
    }

    /// `GET /v1/prices`: the cluster id, prices and settlement address.
    pub fn prices(&self) -> Result<PricesReply, ClientError> {
        let text = self.call("GET", "/v1/prices", None)?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// `GET /v1/accounts/{address}`.
    pub fn account(&self, address: &Address) -> Result<AccountReply, ClientError> {
        let text = self.call("GET", &format!("/v1/accounts/{address}"), None)?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// `GET /v1/settlements`: every settlement record from epoch `from` on.
    pub fn settlements(&self, from: u64) -> Result<Vec<SettlementRecord>, ClientError> {
        let mut out: Vec<SettlementRecord> = Vec::new();
        let mut next = from;
        loop {
            let text = self.call(
                "GET",
                &format!("/v1/settlements?from={next}&limit=1000"),
                None,
            )?;
            let page: SettlementsReply =
                serde_json::from_str(&text).map_err(|e| self.protocol(e))?;
            let Some(last) = page.settlements.last().map(|r| r.epoch) else {
                return Ok(out);
            };
            let full = page.settlements.len() == 1000;
            out.extend(page.settlements);
            if !full {
                return Ok(out);
            }
            next = last + 1;
        }
    }

    /// Withdraws `amount` wei of this client's (signing) account: debited at
    /// once, paid out on the chain shortly after (see [`Client::payouts`]).
    pub fn withdraw(&self, amount: u128) -> Result<WithdrawalReply, ClientError> {
        let account = self.payer().ok_or_else(|| ClientError::Protocol {
            url: self.base.clone(),
            reason: "a withdrawal needs a signing client (Client::signing)".into(),
        })?;
        let body =
            serde_json::to_string(&WithdrawalRequest { amount }).map_err(|e| self.protocol(e))?;
        let text = self.call(
            "POST",
            &format!("/v1/accounts/{account}/withdrawals"),
            Some(body),
        )?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// `GET /v1/payouts?account=…`: the account's withdrawals and their state.
    pub fn payouts(&self, account: &Address) -> Result<Vec<PayoutRecord>, ClientError> {
        let text = self.call("GET", &format!("/v1/payouts?account={account}"), None)?;
        let reply: PayoutsReply = serde_json::from_str(&text).map_err(|e| self.protocol(e))?;
        Ok(reply.payouts)
    }

    /// Deposits `amount` wei for `signer`'s account on a cluster on the local
    /// ledger: a deposit the account signs, which the node records on the
    /// ledger and credits.
    pub fn deposit_signed(
        &self,
        signer: &RequestSigner,
        amount: u128,
    ) -> Result<DepositReply, ClientError> {
        let cluster_id = self.prices()?.cluster_id;
        let nonce: [u8; 16] = rand::random();
        let entry = DepositEntry::sign(signer, cluster_id, amount, nonce);
        let request = DepositRequest::Signed(DepositAuthorization {
            cluster_id,
            account: entry.account,
            amount,
            nonce: hex::encode(nonce),
            signature: format!("0x{}", hex::encode(entry.signature)),
        });
        self.post_deposit(&entry.account, &request)
    }

    /// Credits the account with its transfer `reference` (`evm:…`) to the
    /// cluster's settlement address.
    pub fn deposit_transfer(
        &self,
        account: &Address,
        reference: &str,
    ) -> Result<DepositReply, ClientError> {
        let request = DepositRequest::Transfer {
            reference: reference.to_string(),
        };
        self.post_deposit(account, &request)
    }

    fn post_deposit(
        &self,
        account: &Address,
        request: &DepositRequest,
    ) -> Result<DepositReply, ClientError> {
        let body = serde_json::to_string(request).map_err(|e| self.protocol(e))?;
        let text = self.call(
            "POST",
            &format!("/v1/accounts/{account}/deposits"),
            Some(body),
        )?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// The node's receipts `from..=to` (as many as it has), fetched `page`
    /// at a time: the node answers at most
    /// [`MAX_RECEIPTS`](crate::node::traffic::endpoints::MAX_RECEIPTS) a
    /// request, fewer than asked for.
    pub fn node_receipts_range(
        &self,
        from: u64,
        to: u64,
        page: u64,
    ) -> Result<Vec<Receipt>, ClientError> {
        let page = page.max(1);
        let mut receipts = Vec::new();
        let mut at = from.max(1);
        while at <= to {
            let reply = self.node_receipts(at, page.min(to - at + 1))?;
            let Some(next) = reply.receipts.last().map(|r| r.sequence + 1) else {
                break;
            };
            if next <= at {
                return Err(self.protocol(format!(
                    "the node answered receipts from #{at} with #{}",
                    next - 1
                )));
            }
            receipts.extend(reply.receipts.into_iter().filter(|r| r.sequence <= to));
            at = next;
        }
        Ok(receipts)
    }

    /// `GET /v1/receipts?from=N&limit=M`: the node's own receipt log.
    pub fn node_receipts(&self, from: u64, limit: u64) -> Result<ReceiptsReply, ClientError> {
        let text = self.call(
            "GET",
            &format!("/v1/receipts?from={from}&limit={limit}"),
            None,
        )?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// The signature headers for one request, and the hash they sign.
    fn sign(
        &self,
        payment: &Payment,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<RequestAuth, ClientError> {
        let cluster_id = match payment.cluster_id.get() {
            Some(id) => *id,
            None => {
                let id = self.prices()?.cluster_id;
                *payment.cluster_id.get_or_init(|| id)
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(payment
            .signer
            .sign_request(&cluster_id, method, path, body, now, rand::random()))
    }

    /// Checks a reply's receipt and keeps it.
    fn take_receipt(
        &self,
        header: &str,
        signed: Option<(&RequestAuth, [u8; 32], [u8; 32])>,
        body: &str,
    ) -> Result<(), ClientError> {
        let Some(book) = &self.receipts else {
            return Ok(());
        };
        let refuse = |reason: String| ClientError::Receipt {
            url: self.base.clone(),
            reason,
        };
        let receipt: Receipt =
            serde_json::from_str(header).map_err(|e| refuse(format!("malformed: {e}")))?;
        receipt.verify().map_err(|e| refuse(e.to_string()))?;
        if let Some((auth, cluster_id, request_hash)) = signed {
            if receipt.request_hash != request_hash {
                return Err(refuse("it names another request".into()));
            }
            if receipt.payer != auth.address {
                return Err(refuse(format!(
                    "it bills {}, not this client's account {}",
                    receipt.payer, auth.address
                )));
            }
            if receipt.cluster_id != cluster_id {
                return Err(refuse("it names another cluster".into()));
            }
        }
        if receipt.bytes != body.len() as u64 {
            return Err(refuse(format!(
                "it bills {} bytes for a reply of {} bytes",
                receipt.bytes,
                body.len()
            )));
        }
        let mut book = book.lock();
        if let Some((file, path)) = &mut book.file {
            use std::io::Write as _;
            let line = format!("{header}\n");
            file.write_all(line.as_bytes())
                .map_err(|e| ClientError::ReceiptFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        book.total_fees = book.total_fees.saturating_add(receipt.fee);
        book.count += 1;
        book.last = Some(receipt);
        Ok(())
    }

    /// This client, verifying every read: SELECTs, `get` and `find` ask for
    /// proofs, and each reply is checked against anchors read from `chain`
    /// (never from the node) under `policy`; a reply that does not check out
    /// fails with [`ClientError::Rejected`]. Writes and DDL are unchanged.
    pub fn with_verifier(mut self, chain: Arc<dyn Chain>, policy: Policy) -> Client {
        self.verifier = Some(Verifier {
            chain: Some(chain),
            policy,
        });
        self
    }

    /// This client, verifying every read without a chain: each document is
    /// checked against the shard root its replica states, which proves the
    /// reply consistent but not that the root is genuine; anchored proofs
    /// are refused (there is no chain to read their anchors from).
    pub fn verifying_unanchored(mut self) -> Client {
        self.verifier = Some(Verifier {
            chain: None,
            policy: Policy::default(),
        });
        self
    }

    /// Runs a SELECT with proofs and returns the reply as sent, unchecked
    /// (what `audit --proofs` checks later; the shell saves it).
    pub fn sql_proven(
        &self,
        sql: &str,
        consistency: Consistency,
    ) -> Result<ProvenReply, ClientError> {
        let text = self.post_sql(sql, consistency, true)?;
        let mut reply: ProvenReply = serde_json::from_str(&text).map_err(|e| self.protocol(e))?;
        reply.sql = Some(sql.to_string());
        Ok(reply)
    }

    /// `POST /v1/sql` with `detail` (and `proof` when asked): the reply's text.
    fn post_sql(
        &self,
        sql: &str,
        consistency: Consistency,
        proof: bool,
    ) -> Result<String, ClientError> {
        let request = SqlRequest {
            proof,
            sql: sql.to_string(),
            consistency,
            detail: true,
        };
        let body = serde_json::to_string(&request).map_err(|e| self.protocol(e))?;
        self.call("POST", "/v1/sql", Some(body))
    }

    /// Runs a SELECT with proofs and checks them with this client's verifier
    /// (an error if it has none): the rows and each row's verdict.
    pub fn sql_verified(
        &self,
        sql: &str,
        consistency: Consistency,
    ) -> Result<(SqlReply, Vec<Verified>), ClientError> {
        let reply = self.sql_proven(sql, consistency)?;
        let query = projection_of(Some(sql)).map_err(|r| self.rejected(r))?;
        let verdicts = self.check(&reply, query.as_ref())?;
        Ok((
            SqlReply {
                columns: reply.columns,
                rows: reply.rows,
                affected: 0,
                message: None,
            },
            verdicts,
        ))
    }

    /// Checks a proven reply with this client's verifier.
    fn check(
        &self,
        reply: &ProvenReply,
        query: Option<&stratosdb_query::ast::Query>,
    ) -> Result<Vec<Verified>, ClientError> {
        let Some(v) = &self.verifier else {
            return Err(self.protocol("no verifier: see Client::with_verifier"));
        };
        let mut anchors = Anchors::new(v.chain.as_deref());
        verify_reply(reply, query, &mut anchors, &v.policy).map_err(|r| self.rejected(r))
    }

    fn rejected(&self, reason: Rejection) -> ClientError {
        ClientError::Rejected {
            url: self.base.clone(),
            reason,
        }
    }

    /// Whether statements of `sql` are verified reads.
    fn verifies(&self, sql: &str) -> bool {
        self.verifier.is_some()
            && matches!(
                stratosdb_query::parse_statement(sql),
                Ok(stratosdb_query::ast::Statement::Select(_))
            )
    }

    /// The base URL, `http://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether the node answers `GET /v1/health` with 200.
    pub fn health(&self) -> Result<(), ClientError> {
        self.call("GET", "/v1/health", None).map(|_| ())
    }

    /// Runs one statement, linearizably.
    pub fn sql(&self, sql: &str) -> Result<SqlReply, ClientError> {
        self.sql_with(sql, Consistency::Linearizable)
    }

    /// Runs one statement with the given consistency.
    pub fn sql_with(&self, sql: &str, consistency: Consistency) -> Result<SqlReply, ClientError> {
        if self.verifies(sql) {
            return Ok(self.sql_verified(sql, consistency)?.0);
        }
        let text = self.post_sql(sql, consistency, false)?;
        let reply: SqlReplyBody = serde_json::from_str(&text).map_err(|e| self.protocol(e))?;
        Ok(SqlReply {
            columns: reply.columns,
            rows: reply.rows,
            affected: reply.affected,
            message: reply.message,
        })
    }

    /// Stores a document under `id` (creating or replacing it); true if created.
    pub fn put(
        &self,
        collection: &str,
        id: &str,
        doc: &serde_json::Value,
    ) -> Result<bool, ClientError> {
        let path = doc_path(collection, id);
        let text = self.call("PUT", &path, Some(doc.to_string()))?;
        let reply: serde_json::Value = serde_json::from_str(&text).map_err(|e| self.protocol(e))?;
        Ok(reply["created"] == serde_json::Value::Bool(true))
    }

    /// The document (an error with code `document_not_found` if absent).
    /// With a verifier, the document's inclusion (or, for
    /// `document_not_found`, its absence) is proved and checked.
    pub fn get(&self, collection: &str, id: &str) -> Result<Value, ClientError> {
        if self.verifier.is_some() {
            return self.get_verified(collection, id, Consistency::Linearizable);
        }
        let text = self.call("GET", &doc_path(collection, id), None)?;
        Value::from_json_str(&text).map_err(|e| self.protocol(e))
    }

    /// `GET …?proof=true`, checked: the document, or `document_not_found`
    /// once its non-inclusion proof holds.
    pub fn get_verified(
        &self,
        collection: &str,
        id: &str,
        consistency: Consistency,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "{}?proof=true&consistency={}",
            doc_path(collection, id),
            match consistency {
                Consistency::Linearizable => "linearizable",
                Consistency::Follower => "follower",
            }
        );
        let (status, text) = self.call_raw("GET", &path, None)?;
        if status != 200 && status != 404 {
            return Err(self.api_error(status, &text));
        }
        let reply: ProvenReply = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(_) if status == 404 => return Err(self.api_error(status, &text)),
            Err(e) => return Err(self.protocol(e)),
        };
        let asked = |p: &stratosdb_verifier::ReadProof| p.collection == collection && p.id == id;
        self.check(&reply, None)?;
        if status == 404 {
            if reply.rows.is_empty() && reply.absent.iter().any(asked) {
                return Err(self.api_error(status, &text));
            }
            return Err(self.rejected(Rejection::Invalid(format!(
                "{collection}/{id} was reported absent without its non-inclusion proof"
            ))));
        }
        match (reply.rows.as_slice(), reply.proofs.as_slice()) {
            ([row], [proof]) if asked(proof) => Ok(row.clone()),
            _ => Err(self.rejected(Rejection::Invalid(format!(
                "the reply does not prove the one document {collection}/{id}"
            )))),
        }
    }

    /// Whether the document exists.
    pub fn exists(&self, collection: &str, id: &str) -> Result<bool, ClientError> {
        match self.get(collection, id) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("document_not_found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the document (an error with code `document_not_found` if absent).
    pub fn delete(&self, collection: &str, id: &str) -> Result<(), ClientError> {
        self.call("DELETE", &doc_path(collection, id), None)
            .map(|_| ())
    }

    /// `POST /v1/collections/{c}/find` with a body `{"filter", "sort", "skip",
    /// "limit", "projection"}` (any may be left out).
    pub fn find(
        &self,
        collection: &str,
        request: &serde_json::Value,
    ) -> Result<Vec<Value>, ClientError> {
        let path = format!("/v1/collections/{}/find", encode_segment(collection));
        if self.verifier.is_some() {
            return self.find_verified(collection, &path, request);
        }
        let text = self.call("POST", &path, Some(request.to_string()))?;
        let reply: RowsBody = serde_json::from_str(&text).map_err(|e| self.protocol(e))?;
        Ok(reply.rows)
    }

    fn find_verified(
        &self,
        collection: &str,
        path: &str,
        request: &serde_json::Value,
    ) -> Result<Vec<Value>, ClientError> {
        let mut asked = request.clone();
        if let Some(fields) = asked.as_object_mut() {
            fields.insert("proof".into(), serde_json::Value::Bool(true));
        }
        let text = self.call("POST", path, Some(asked.to_string()))?;
        let reply: ProvenReply = serde_json::from_str(&text).map_err(|e| self.protocol(e))?;
        // The projection the rows must be of: the request's, compiled as the node does.
        let projection: Option<Vec<String>> = match request.get("projection") {
            None | Some(serde_json::Value::Null) => None,
            Some(p) => Some(serde_json::from_value(p.clone()).map_err(|e| self.protocol(e))?),
        };
        let options = stratosdb_query::FindOptions {
            projection,
            ..Default::default()
        };
        let empty = serde_json::json!({});
        let filter = request.get("filter").unwrap_or(&empty);
        let query = stratosdb_query::filter::find_query(collection, filter, &options)
            .map_err(|e| self.protocol(e))?;
        self.check(&reply, Some(&query))?;
        Ok(reply.rows)
    }

    /// The cluster map.
    pub fn cluster(&self) -> Result<ClusterMap, ClientError> {
        let text = self.call("GET", "/v1/cluster", None)?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// The cluster's epochs and their anchors, newest first
    /// (`GET /v1/anchors`): `query.limit` of them (the node's default
    /// without), or `query.epoch` alone.
    pub fn anchors(&self, query: AnchorsQuery) -> Result<AnchorsReply, ClientError> {
        let mut params = Vec::new();
        if let Some(limit) = query.limit {
            params.push(format!("limit={limit}"));
        }
        if let Some(epoch) = query.epoch {
            params.push(format!("epoch={epoch}"));
        }
        let path = if params.is_empty() {
            "/v1/anchors".to_string()
        } else {
            format!("/v1/anchors?{}", params.join("&"))
        };
        let text = self.call("GET", &path, None)?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// One page of the export of shard `shard` of `collection` from the
    /// node's own replica (`GET /v1/collections/{c}/shards/{n}/export`).
    pub fn shard_export(
        &self,
        collection: &str,
        shard: u32,
        query: &ExportQuery,
    ) -> Result<ShardExport, ClientError> {
        let part = match query.part {
            ExportPart::Documents => "documents",
            ExportPart::Changes => "changes",
        };
        let mut path = format!(
            "/v1/collections/{}/shards/{shard}/export?part={part}",
            encode_segment(collection)
        );
        if let Some(after) = &query.after {
            path.push_str(&format!("&after={}", encode_segment(after)));
        }
        if let Some(limit) = query.limit {
            path.push_str(&format!("&limit={limit}"));
        }
        let text = self.call("GET", &path, None)?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// Asks the node to admit a new member (`POST /v1/cluster/join`).
    pub fn join(&self, request: &JoinRequest) -> Result<JoinReply, ClientError> {
        let body = serde_json::to_string(request).map_err(|e| self.protocol(e))?;
        let text = self.call("POST", "/v1/cluster/join", Some(body))?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// Starts removing a member, or asks how far its removal got
    /// (`POST /v1/cluster/remove-node`).
    pub fn remove_node(&self, node: &str) -> Result<RemoveNodeReply, ClientError> {
        let request = RemoveNodeRequest {
            node: node.to_string(),
        };
        let body = serde_json::to_string(&request).map_err(|e| self.protocol(e))?;
        let text = self.call("POST", "/v1/cluster/remove-node", Some(body))?;
        serde_json::from_str(&text).map_err(|e| self.protocol(e))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> Result<String, ClientError> {
        self.call("GET", "/metrics", None)
    }

    /// One request; a non-2xx reply becomes [`ClientError::Api`].
    fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<String, ClientError> {
        let (status, text) = self.call_raw(method, path, body)?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        Err(self.api_error(status, &text))
    }

    /// One request: the status and the body.
    fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), ClientError> {
        let url = format!("{}{path}", self.base);
        let body = body.unwrap_or_default();
        let signed = match &self.payment {
            // The public routes need no signature (and /v1/prices is how
            // a signer learns the cluster id).
            Some(payment) if !is_public(path) => {
                let wire_body = if matches!(method, "GET" | "DELETE") {
                    &[][..]
                } else {
                    body.as_bytes()
                };
                let auth = self.sign(payment, method, path, wire_body)?;
                let cluster_id = payment.cluster_id.get().copied().unwrap_or_default();
                let hash = auth.request_hash(&cluster_id, method, path, wire_body);
                Some((auth, cluster_id, hash))
            }
            _ => None,
        };
        let headers: Vec<(&str, String)> = signed
            .as_ref()
            .map(|(auth, _, _)| auth.headers().to_vec())
            .unwrap_or_default();
        let sent = match method {
            "GET" | "DELETE" => {
                let mut request = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                request.call()
            }
            _ => {
                let mut request = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                request = request.header("content-type", "application/json");
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                request.send(body)
            }
        };
        let mut response = sent.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let receipt = response
            .headers()
            .get(RECEIPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .read_to_string()
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if let Some(receipt) = receipt {
            self.take_receipt(
                &receipt,
                signed.as_ref().map(|(auth, id, hash)| (auth, *id, *hash)),
                &text,
            )?;
        }
        Ok((status, text))
    }

    /// A non-2xx reply as [`ClientError::Api`].
    fn api_error(&self, status: u16, text: &str) -> ClientError {
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(body) => ClientError::Api {
                status,
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => ClientError::Api {
                status,
                code: "http_error".to_string(),
                message: format!("HTTP {status}: {}", text.trim()),
            },
        }
    }

    fn protocol(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }
}

/// The routes a node serves without a signature (`docs/traffic.md`).
fn is_public(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    matches!(
        path,
        "/v1/health"
            | "/v1/prices"
            | "/v1/cluster"
            | "/v1/cluster/join"
            | "/metrics"
            | "/v1/receipts"
            | "/v1/settlements"
            | "/v1/payouts"
    ) || (path.starts_with("/v1/accounts/") && !path.ends_with("/withdrawals"))
}

fn doc_path(collection: &str, id: &str) -> String {
    format!(
        "/v1/collections/{}/docs/{}",
        encode_segment(collection),
        encode_segment(id)
    )
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Client::new("127.0.0.1:1/").unwrap().url(),
            "http://127.0.0.1:1"
        );
        assert!(matches!(
            Client::new("https://x:1"),
            Err(ClientError::InvalidUrl(_))
        ));
        assert_eq!(encode_segment("a b/é"), "a%20b%2F%C3%A9");
    }
}
