//! Where the shell's statements run: an embedded data folder, or a node
//! through the HTTP API. The shell's code (input, positions, output formats,
//! `\d`, `\import`) is the same for both; only these calls differ.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use stratosdb::embedded_anchor::{Anchorer, Ticker};

use anyhow::Context;
use stratosdb::api::{AnchorsQuery, AnchorsReply};
use stratosdb::client::{Client, ClientError};
use stratosdb::verified::{
    Anchors, Policy, ProvenReply, describe_verdict, projection_of, verify_reply,
};
use stratosdb_chain_anchor::Chain;
use stratosdb_engine::{Durability, Engine, EngineConfig, EngineError, Op, Value};
use stratosdb_query::ast::Statement;
use stratosdb_query::{Database, QueryError, StatementResult};

use super::anchors;
use super::import::{ImportSink, WriteError};

/// What the shell runs statements on.
pub trait Target: ImportSink {
    /// Runs a statement the user typed: `text` as typed, `parsed` from it.
    fn run(&self, text: &str, parsed: &Statement) -> Result<StatementResult, String>;
    /// Runs a statement the shell makes itself (for `\d`).
    fn run_sql(&self, sql: &str) -> Result<StatementResult, String>;
    /// The number of documents of a collection (an error if there is none).
    fn count(&self, collection: &str) -> Result<u64, String>;
    /// What the shell is on, for its banner.
    fn describe(&self) -> String;
    /// The newest `limit` epochs and their anchors (`\anchors`).
    fn anchors(&self, limit: Option<u64>) -> Result<AnchorsReply, String> {
        let _ = limit;
        Err(
            "\\anchors lists an embedded folder's anchors, or a cluster's with shell --connect URL"
                .to_string(),
        )
    }
    /// `\proof on|off`: ask for proofs of what SELECTs return and verify
    /// them, adding a `proof` column (anchored at an epoch, or unanchored).
    fn set_proofs(&self, on: bool) -> Result<(), String>;
    /// The last reply with proofs a SELECT got under `\proof on`, verified,
    /// as `\save` writes it (what `stratosdb audit --proofs FILE` reads).
    fn last_proven(&self) -> Option<ProvenReply>;
    /// At a clean exit: an embedded folder anchors what changed.
    fn close(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An embedded database in a data folder, anchored on the folder's ledger.
pub struct Embedded {
    db: Database,
    data: String,
    anchorer: Arc<Anchorer>,
    /// Anchors every `--anchor-interval`; stopped before the last anchor.
    ticker: Mutex<Option<Ticker>>,
    proofs: Proofs,
}

/// `\proof on|off` and the last proven reply.
#[derive(Default)]
struct Proofs {
    on: AtomicBool,
    last: Mutex<Option<ProvenReply>>,
}

impl Proofs {
    fn wanted(&self, parsed: &Statement) -> bool {
        self.on.load(Ordering::Relaxed) && matches!(parsed, Statement::Select(_))
    }

    /// Verifies `reply` (a SELECT of `sql`) against `chain` (`None`: none,
    /// anchored proofs are refused), keeps it as the last proven reply, and
    /// gives its rows with a `proof` column (each row's verdict).
    fn verify(
        &self,
        sql: &str,
        reply: ProvenReply,
        chain: Option<&dyn Chain>,
    ) -> Result<StatementResult, String> {
        let query = projection_of(Some(sql)).map_err(|e| e.to_string())?;
        let mut anchors = Anchors::new(chain);
        let verdicts = verify_reply(&reply, query.as_ref(), &mut anchors, &Policy::default())
            .map_err(|e| format!("the reply's proofs do not check out: {e}"))?;
        let mut columns = reply.columns.clone().unwrap_or_default();
        columns.push("proof".to_string());
        let rows = reply
            .rows
            .iter()
            .zip(&verdicts)
            .map(|(row, verdict)| {
                let mut fields = row.as_object().cloned().unwrap_or_default();
                let text = describe_verdict(verdict);
                fields.insert("proof".to_string(), Value::from(text.as_str()));
                Value::Object(fields)
            })
            .collect();
        *self.last.lock() = Some(reply);
        Ok(StatementResult::Rows { columns, rows })
    }
}

impl Embedded {
    pub fn open(data: &Path, cache_mb: u64, anchor_interval: Duration) -> anyhow::Result<Embedded> {
        let config = EngineConfig {
            cache_bytes: cache_mb.saturating_mul(1 << 20),
            ..EngineConfig::default()
        };
        let mut db = Engine::open(data, config)
            .map_err(QueryError::from)
            .and_then(Database::with_engine)
            .with_context(|| format!("cannot open the database in {}", data.display()))?;
        let anchorer = Anchorer::open(data, db.engine().clone(), db.shard().clone())
            .map(Arc::new)
            .with_context(|| format!("cannot open the ledger of {}", data.display()))?;
        db.set_anchors(anchorer.clone());
        let ticker = (!anchor_interval.is_zero()).then(|| {
            Ticker::start(anchorer.clone(), anchor_interval, |e| {
                eprintln!("error: anchoring: {e}")
            })
        });
        Ok(Embedded {
            db,
            data: data.display().to_string(),
            anchorer,
            ticker: Mutex::new(ticker),
            proofs: Proofs::default(),
        })
    }
}

fn op(collection: &str, doc: Value, replace: bool) -> Op {
    let collection = collection.to_string();
    if replace {
        Op::Upsert { collection, doc }
    } else {
        Op::Insert { collection, doc }
    }
}

fn engine_write_error(e: EngineError) -> WriteError {
    match e {
        e @ EngineError::DuplicateId { .. } => WriteError::Duplicate(e.to_string()),
        e if e.is_fault() => WriteError::Fault(e.into()),
        e => WriteError::Rejected(e.to_string()),
    }
}

impl Target for Embedded {
    fn run(&self, text: &str, parsed: &Statement) -> Result<StatementResult, String> {
        if let (true, Statement::Select(query)) = (self.proofs.wanted(parsed), parsed) {
            let proven = self.db.query_proven(query).map_err(|e| e.to_string())?;
            let reply = ProvenReply {
                sql: Some(text.to_string()),
                columns: Some(proven.rows.columns),
                rows: proven.rows.rows,
                proofs: proven.proofs,
                absent: proven.absent,
            };
            return self
                .proofs
                .verify(text, reply, Some(self.anchorer.ledger() as &dyn Chain));
        }
        self.db.run(parsed).map_err(|e| e.to_string())
    }

    fn set_proofs(&self, on: bool) -> Result<(), String> {
        self.proofs.on.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn last_proven(&self) -> Option<ProvenReply> {
        self.proofs.last.lock().clone()
    }

    fn run_sql(&self, sql: &str) -> Result<StatementResult, String> {
        self.db.execute_one(sql).map_err(|e| e.to_string())
    }

    fn count(&self, collection: &str) -> Result<u64, String> {
        let info = self
            .db
            .shard()
            .collection(collection)
            .map_err(|e| e.to_string())?;
        Ok(info.count)
    }

    fn describe(&self) -> String {
        self.data.clone()
    }

    fn anchors(&self, limit: Option<u64>) -> Result<AnchorsReply, String> {
        anchors::embedded(&self.anchorer, limit).map_err(|e| e.to_string())
    }

    fn close(&self) -> Result<(), String> {
        drop(self.ticker.lock().take());
        self.anchorer
            .anchor_if_changed()
            .map(|_| ())
            .map_err(|e| format!("anchoring at exit: {e}"))
    }
}

impl ImportSink for Embedded {
    fn check_collection(&self, collection: &str) -> anyhow::Result<()> {
        self.db.shard().collection(collection)?;
        Ok(())
    }

    fn exists(&self, collection: &str, id: &str) -> anyhow::Result<bool> {
        Ok(self.db.shard().get_raw(collection, id)?.is_some())
    }

    fn write_batch(
        &self,
        collection: &str,
        docs: &[Value],
        replace: bool,
    ) -> Result<(), WriteError> {
        let ops = docs
            .iter()
            .map(|d| op(collection, d.clone(), replace))
            .collect();
        self.db
            .shard()
            .write(ops, Durability::Sync)
            .map(|_| ())
            .map_err(engine_write_error)
    }

    fn write_one(&self, collection: &str, doc: Value, replace: bool) -> Result<(), WriteError> {
        self.db
            .shard()
            .write(vec![op(collection, doc, replace)], Durability::Buffered)
            .map(|_| ())
            .map_err(engine_write_error)
    }

    fn sync(&self) -> anyhow::Result<()> {
        self.db.shard().write(vec![], Durability::Sync)?;
        Ok(())
    }
}

/// A node, through its HTTP API.
pub struct Remote {
    client: Client,
    /// `\proof on`: SELECTs ask for proofs, checked here against `chain`
    /// (without one, each document against the root its replica states,
    /// and anchored proofs are refused).
    proofs: Proofs,
    chain: Option<Box<dyn Chain>>,
}

impl Remote {
    pub fn connect(
        url: &str,
        signer: Option<stratosdb_verifier::traffic::RequestSigner>,
        receipts: Option<&std::path::Path>,
        chain: Option<Box<dyn Chain>>,
    ) -> anyhow::Result<Remote> {
        let mut client = Client::new(url)?;
        if let Some(signer) = signer {
            client = client.signing(signer);
        }
        if let Some(path) = receipts {
            client = client.keeping_receipts(Some(path))?;
        }
        client
            .health()
            .with_context(|| format!("the node at {} is not serving", client.url()))?;
        Ok(Remote {
            client,
            proofs: Proofs::default(),
            chain,
        })
    }

    fn insert_sql(collection: &str, docs: &[Value]) -> String {
        let values: Vec<String> = docs
            .iter()
            .map(|d| format!("('{}')", d.to_json_string().replace('\'', "''")))
            .collect();
        format!("INSERT INTO \"{collection}\" VALUES {}", values.join(", "))
    }

    fn put(&self, collection: &str, doc: &Value) -> Result<(), WriteError> {
        let id = match doc.as_object().and_then(|o| o.get("_id")) {
            Some(Value::String(id)) => id.clone(),
            // No string _id: an INSERT assigns one (or says what is wrong).
            _ => return self.insert(collection, std::slice::from_ref(doc)),
        };
        self.client
            .put(collection, &id, &doc.to_json())
            .map(|_| ())
            .map_err(client_write_error)
    }

    fn insert(&self, collection: &str, docs: &[Value]) -> Result<(), WriteError> {
        self.client
            .sql(&Self::insert_sql(collection, docs))
            .map(|_| ())
            .map_err(client_write_error)
    }
}

fn client_write_error(e: ClientError) -> WriteError {
    match e {
        ClientError::Api { code, message, .. } if code == "duplicate_id" => {
            WriteError::Duplicate(message)
        }
        ClientError::Api {
            status, message, ..
        } if status < 500 => WriteError::Rejected(message),
        e => WriteError::Fault(e.into()),
    }
}

impl Target for Remote {
    fn run(&self, text: &str, parsed: &Statement) -> Result<StatementResult, String> {
        if self.proofs.wanted(parsed) {
            let reply = self
                .client
                .sql_proven(text, stratosdb::api::Consistency::Linearizable)
                .map_err(|e| e.to_string())?;
            return self.proofs.verify(text, reply, self.chain.as_deref());
        }
        self.run_sql(text)
    }

    fn set_proofs(&self, on: bool) -> Result<(), String> {
        self.proofs.on.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn last_proven(&self) -> Option<ProvenReply> {
        self.proofs.last.lock().clone()
    }

    fn run_sql(&self, sql: &str) -> Result<StatementResult, String> {
        self.client
            .sql(sql)
            .map(|reply| reply.into_statement_result())
            .map_err(|e| e.to_string())
    }

    fn count(&self, collection: &str) -> Result<u64, String> {
        let StatementResult::Rows { rows, .. } = self.run_sql("SHOW COLLECTIONS")? else {
            return Err("SHOW COLLECTIONS returned no rows".to_string());
        };
        for row in rows {
            let Some(fields) = row.as_object() else {
                continue;
            };
            if fields.get("collection") == Some(&Value::from(collection))
                && let Some(Value::Int(n)) = fields.get("documents")
            {
                return Ok(u64::try_from(*n).unwrap_or(0));
            }
        }
        Err(EngineError::CollectionNotFound(collection.to_string()).to_string())
    }

    fn describe(&self) -> String {
        self.client.url().to_string()
    }

    fn anchors(&self, limit: Option<u64>) -> Result<AnchorsReply, String> {
        let query = AnchorsQuery { limit, epoch: None };
        self.client.anchors(query).map_err(|e| e.to_string())
    }
}

impl ImportSink for Remote {
    fn check_collection(&self, collection: &str) -> anyhow::Result<()> {
        self.count(collection).map_err(anyhow::Error::msg)?;
        Ok(())
    }

    fn exists(&self, collection: &str, id: &str) -> anyhow::Result<bool> {
        Ok(self.client.exists(collection, id)?)
    }

    /// One INSERT of every document (atomic); with `replace`, one PUT each.
    fn write_batch(
        &self,
        collection: &str,
        docs: &[Value],
        replace: bool,
    ) -> Result<(), WriteError> {
        if !replace {
            return self.insert(collection, docs);
        }
        for doc in docs {
            self.put(collection, doc)?;
        }
        Ok(())
    }

    fn write_one(&self, collection: &str, doc: Value, replace: bool) -> Result<(), WriteError> {
        if replace {
            self.put(collection, &doc)
        } else {
            self.insert(collection, std::slice::from_ref(&doc))
        }
    }

    /// Every write the node acknowledged is durable already.
    fn sync(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
