//! The embedded database: one engine shard behind the statement interface
//! the shell and applications use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use stratosdb_engine::{
    Durability, Engine, EngineConfig, EngineError, Op, PatchChange, Shard, Value,
};

use crate::ast::{Query, Statement};
use crate::error::{QueryError, Result};
use crate::eval::{Ctx, eval};
use crate::exec::{Rows, run_plan, run_query};
use crate::filter::{FindOptions, find_query};
use crate::parse::{parse_part, split_statements};
use crate::plan::{QueryPlan, explain};

/// What one statement returns.
#[derive(Clone, Debug, PartialEq)]
pub enum StatementResult {
    /// SELECT, EXPLAIN, SHOW: `columns` in order, and each row a
    /// `Value::Object` keyed by column (a missing value is an absent key).
    /// For `SELECT *` a row is the whole document and `columns` is `_id`
    /// then every top-level field met.
    Rows {
        columns: Vec<String>,
        rows: Vec<Value>,
    },
    /// INSERT, UPDATE, DELETE: documents written.
    Affected(u64),
    /// DDL: what was done.
    Message(String),
}

/// An embedded stratosdb database (shard 0 of an engine).
///
/// ```
/// use stratosdb_query::{Database, StatementResult};
/// let db = Database::open_temporary().unwrap();
/// db.execute(
///     "CREATE COLLECTION users;
///      INSERT INTO users VALUES ('{\"_id\":\"u1\",\"name\":\"Ann\",\"age\":31,\"address\":{\"city\":\"Paris\"}}');
///      INSERT INTO users (_id, name, age) VALUES ('u2', 'Bob', 40)",
/// )
/// .unwrap();
/// let results = db.execute("SELECT name, address.city FROM users WHERE age > 30 ORDER BY age").unwrap();
/// let StatementResult::Rows { columns, rows } = &results[0] else { panic!() };
/// assert_eq!(columns, &["name", "address.city"]);
/// assert_eq!(rows[0].to_json_string(), r#"{"address.city":"Paris","name":"Ann"}"#);
/// assert_eq!(rows[1].to_json_string(), r#"{"name":"Bob"}"#);
/// ```
pub struct Database {
    engine: Engine,
    shard: Shard,
    durability: Durability,
    /// Statement text -> parsed statement, and for a SELECT its last plan
    /// with the index state it was made for (a prepared-statement cache).
    cache: Mutex<HashMap<String, Cached>>,
}

/// Most statements the cache holds (it is emptied when full).
const CACHE_SIZE: usize = 1024;

struct Cached {
    stmt: Arc<Statement>,
    plan: Option<CachedPlan>,
}

/// A plan and the index state (names, multikey flags) it was made for.
type CachedPlan = (Vec<(String, bool)>, Arc<QueryPlan>);
type CacheHit = (Arc<Statement>, Option<CachedPlan>);

/// What a plan depends on in the catalog: the indexes and their multikey flags.
fn index_state(info: &stratosdb_engine::CollectionInfo) -> Vec<(String, bool)> {
    info.indexes
        .iter()
        .map(|i| (i.spec.name.clone(), i.multikey))
        .collect()
}

impl Database {
    /// Opens (or creates) a database in `dir`.
    pub fn open(dir: impl AsRef<std::path::Path>) -> Result<Database> {
        let engine = Engine::open(dir, EngineConfig::default())?;
        Database::with_engine(engine)
    }

    /// A database in a temporary folder, gone when dropped.
    pub fn open_temporary() -> Result<Database> {
        Database::with_engine(Engine::open_temporary()?)
    }

    /// A database over shard 0 of an engine.
    pub fn with_engine(engine: Engine) -> Result<Database> {
        let shard = engine.shard(0)?;
        // An index build or a drop that a crash cut short is finished first.
        shard.finish_interrupted_work()?;
        Ok(Database {
            engine,
            shard,
            durability: Durability::Sync,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The shard statements run on.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether writes wait for the disk (`Sync`, the default) or not.
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        Ok(self.engine.flush()?)
    }

    /// Runs `;`-separated statements in order, stopping at the first error
    /// (the statements before it keep their effect; the failing one has none).
    /// To report each statement separately, use [`split_statements`] and
    /// [`Database::execute_one`].
    pub fn execute(&self, script: &str) -> Result<Vec<StatementResult>> {
        split_statements(script)
            .iter()
            .map(|part| match self.cached(part.text) {
                Some(hit) => self.run_cached(part.text, hit),
                None => {
                    let stmt = parse_part(script, part)?;
                    self.remember(part.text, &stmt);
                    self.run(&stmt)
                }
            })
            .collect()
    }

    /// Runs exactly one statement (a trailing `;` is allowed).
    pub fn execute_one(&self, sql: &str) -> Result<StatementResult> {
        if let Some(hit) = self.cached(sql) {
            return self.run_cached(sql, hit);
        }
        let stmt = crate::parse::parse_statement(sql)?;
        self.remember(sql, &stmt);
        self.run(&stmt)
    }

    fn cached(&self, sql: &str) -> Option<CacheHit> {
        let cache = self.cache.lock();
        cache.get(sql).map(|c| (c.stmt.clone(), c.plan.clone()))
    }

    fn remember(&self, sql: &str, stmt: &Statement) {
        // Only queries: writes are not repeated verbatim often enough, and an
        // INSERT's documents would sit in memory.
        if !matches!(stmt, Statement::Select(_)) {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_SIZE {
            cache.clear();
        }
        cache.insert(
            sql.to_string(),
            Cached {
                stmt: Arc::new(stmt.clone()),
                plan: None,
            },
        );
    }

    /// Runs a cached statement; a SELECT reuses its plan while the
    /// collection's indexes (and their multikey flags) are unchanged.
    fn run_cached(&self, sql: &str, hit: CacheHit) -> Result<StatementResult> {
        let Statement::Select(q) = hit.0.as_ref() else {
            return self.run(&hit.0);
        };
        let plan = self.select_plan(sql, q, hit.1)?;
        let rows = self.run_plan(&plan)?;
        Ok(StatementResult::Rows {
            columns: rows.columns,
            rows: rows.rows,
        })
    }

    /// Parses and plans a SELECT, through the statement cache: a repeated
    /// statement costs a lookup, and a plan is made again only when the
    /// collection's indexes changed.
    pub fn plan_sql(&self, sql: &str) -> Result<Arc<QueryPlan>> {
        let (stmt, plan) = match self.cached(sql) {
            Some(hit) => hit,
            None => {
                let stmt = crate::parse::parse_statement(sql)?;
                self.remember(sql, &stmt);
                (Arc::new(stmt), None)
            }
        };
        match stmt.as_ref() {
            Statement::Select(q) | Statement::Explain(q) => self.select_plan(sql, q, plan),
            _ => Err(QueryError::Invalid("only a SELECT has a plan".into())),
        }
    }

    fn select_plan(
        &self,
        sql: &str,
        q: &Query,
        cached: Option<CachedPlan>,
    ) -> Result<Arc<QueryPlan>> {
        let info = self.shard.collection(&q.collection)?;
        if let Some((state, plan)) = cached
            && state.len() == info.indexes.len()
            && state
                .iter()
                .zip(&info.indexes)
                .all(|((n, m), i)| *n == i.spec.name && *m == i.multikey)
        {
            return Ok(plan);
        }
        let plan = Arc::new(crate::plan::plan(q, &info));
        if let Some(c) = self.cache.lock().get_mut(sql) {
            c.plan = Some((index_state(&info), plan.clone()));
        }
        Ok(plan)
    }

    /// Runs a parsed statement.
    pub fn run(&self, stmt: &Statement) -> Result<StatementResult> {
        match stmt {
            Statement::CreateCollection(name) => {
                self.shard.create_collection(name)?;
                Ok(StatementResult::Message(format!(
                    "created collection {name}"
                )))
            }
            Statement::DropCollection(name) => {
                self.shard.drop_collection(name)?;
                Ok(StatementResult::Message(format!(
                    "dropped collection {name}"
                )))
            }
            Statement::ShowCollections => {
                let mut rows = Vec::new();
                for name in self.shard.collections() {
                    let info = self.shard.collection(&name)?;
                    rows.push(object([
                        ("collection", Value::String(name)),
                        ("documents", Value::Int(info.count as i64)),
                        ("indexes", Value::Int(info.indexes.len() as i64)),
                    ]));
                }
                Ok(rows_result(&["collection", "documents", "indexes"], rows))
            }
            Statement::ShowIndexes(collection) => {
                let info = self.shard.collection(collection)?;
                let rows = info
                    .indexes
                    .iter()
                    .map(|i| {
                        object([
                            ("name", Value::String(i.spec.name.clone())),
                            (
                                "fields",
                                Value::Array(
                                    i.spec
                                        .fields
                                        .iter()
                                        .map(|f| Value::from(f.as_str()))
                                        .collect(),
                                ),
                            ),
                            ("unique", Value::Bool(i.spec.unique)),
                            ("multikey", Value::Bool(i.multikey)),
                        ])
                    })
                    .collect();
                Ok(rows_result(&["name", "fields", "unique", "multikey"], rows))
            }
            Statement::CreateIndex { collection, spec } => {
                self.shard.create_index(collection, spec.clone())?;
                Ok(StatementResult::Message(format!(
                    "created index {} on {collection} ({})",
                    spec.name,
                    spec.fields.join(", ")
                )))
            }
            Statement::DropIndex { collection, name } => {
                let collection = match collection {
                    Some(c) => c.clone(),
                    None => self.collection_of_index(name)?,
                };
                self.shard.drop_index(&collection, name)?;
                Ok(StatementResult::Message(format!(
                    "dropped index {name} on {collection}"
                )))
            }
            Statement::Insert { collection, docs } => {
                let ops = docs
                    .iter()
                    .map(|doc| Op::Insert {
                        collection: collection.clone(),
                        doc: doc.clone(),
                    })
                    .collect();
                self.write(ops)
            }
            Statement::Select(q) => {
                let rows = self.query(q)?;
                Ok(StatementResult::Rows {
                    columns: rows.columns,
                    rows: rows.rows,
                })
            }
            Statement::Explain(q) => {
                let plan = self.plan(q)?;
                let rows = explain(&plan)
                    .into_iter()
                    .map(|(step, detail)| {
                        object([
                            ("step", Value::String(step)),
                            ("detail", Value::String(detail)),
                        ])
                    })
                    .collect();
                Ok(rows_result(&["step", "detail"], rows))
            }
            Statement::Update {
                collection,
                sets,
                filter,
            } => self.read_modify_write(|| {
                let docs = self.matching(collection, filter)?;
                let mut ops = Vec::with_capacity(docs.len() * 2);
                for doc in &docs {
                    let ctx = Ctx::doc(doc);
                    let mut changes = Vec::with_capacity(sets.len());
                    for (path, e) in sets {
                        let path = path.dotted_string();
                        changes.push(match eval(e, ctx)? {
                            Some(value) => PatchChange::Set { path, value },
                            None => PatchChange::Unset { path },
                        });
                    }
                    let id = doc_id(doc)?;
                    ops.push(expect_unchanged(collection, &id, doc));
                    ops.push(Op::Patch {
                        collection: collection.clone(),
                        id,
                        changes,
                    });
                }
                Ok(ops)
            }),
            Statement::Delete { collection, filter } => self.read_modify_write(|| {
                let docs = self.matching(collection, filter)?;
                let mut ops = Vec::with_capacity(docs.len() * 2);
                for doc in &docs {
                    let id = doc_id(doc)?;
                    ops.push(expect_unchanged(collection, &id, doc));
                    ops.push(Op::Delete {
                        collection: collection.clone(),
                        id,
                    });
                }
                Ok(ops)
            }),
        }
    }

    /// Runs a read-modify-write statement isolated from concurrent writers,
    /// optimistically: `compute` reads the documents and returns the writes,
    /// each guarded by an [`Op::Expect`] on the version it read; if any of them
    /// changed meanwhile, the engine rejects the whole write (changing nothing)
    /// and the statement is computed again, at most [`MAX_WRITE_ATTEMPTS`] times.
    /// The check happens at apply time, so it stays deterministic under Raft.
    fn read_modify_write(&self, compute: impl Fn() -> Result<Vec<Op>>) -> Result<StatementResult> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write(compute()?) {
                Err(QueryError::Engine(EngineError::WriteConflict { .. }))
                    if attempt < MAX_WRITE_ATTEMPTS =>
                {
                    conflict_backoff(attempt);
                }
                Err(QueryError::Engine(e @ EngineError::WriteConflict { .. })) => {
                    return Err(QueryError::Contention {
                        attempts: attempt,
                        last: e.to_string(),
                    });
                }
                other => return other,
            }
        }
    }

    /// Plans a query (what EXPLAIN shows).
    pub fn plan(&self, query: &Query) -> Result<QueryPlan> {
        crate::exec::plan_query(std::slice::from_ref(&self.shard), query)
    }

    /// Plans and runs a query.
    pub fn query(&self, query: &Query) -> Result<Rows> {
        Ok(run_query(std::slice::from_ref(&self.shard), query)?.1)
    }

    /// Runs a plan made earlier (by [`Database::plan`]).
    pub fn run_plan(&self, plan: &QueryPlan) -> Result<Rows> {
        run_plan(std::slice::from_ref(&self.shard), plan)
    }

    /// Finds documents with a MongoDB-style filter (see [`crate::filter`]).
    ///
    /// ```
    /// use serde_json::json;
    /// use stratosdb_query::{Database, FindOptions, Order};
    /// let db = Database::open_temporary().unwrap();
    /// db.execute(r#"CREATE COLLECTION users;
    ///   INSERT INTO users VALUES ('{"_id":"a","age":31,"address":{"city":"Paris"}}'),
    ///                            ('{"_id":"b","age":40,"address":{"city":"Paris"}}'),
    ///                            ('{"_id":"c","age":50,"address":{"city":"Rome"}}')"#).unwrap();
    /// let rows = db
    ///     .find(
    ///         "users",
    ///         &json!({"age": {"$gt": 30}, "address.city": "Paris"}),
    ///         &FindOptions::default().project(&["_id"]).sort("age", Order::Desc).limit(1),
    ///     )
    ///     .unwrap();
    /// assert_eq!(rows[0].to_json_string(), r#"{"_id":"b"}"#);
    /// ```
    pub fn find(
        &self,
        collection: &str,
        filter: &serde_json::Value,
        options: &FindOptions,
    ) -> Result<Vec<Value>> {
        let q = find_query(collection, filter, options)?;
        Ok(self.query(&q)?.rows)
    }

    fn matching(&self, collection: &str, filter: &Option<crate::ast::Expr>) -> Result<Vec<Value>> {
        let mut q = Query::all(collection);
        q.filter = filter.clone();
        Ok(self.query(&q)?.rows)
    }

    /// One engine write for the whole statement: all of it or nothing.
    fn write(&self, ops: Vec<Op>) -> Result<StatementResult> {
        if ops.is_empty() {
            return Ok(StatementResult::Affected(0));
        }
        let result = self.shard.write(ops, self.durability)?;
        Ok(StatementResult::Affected(
            result.outcomes.iter().map(|o| o.affected).sum(),
        ))
    }

    fn collection_of_index(&self, name: &str) -> Result<String> {
        let mut found = Vec::new();
        for c in self.shard.collections() {
            if self
                .shard
                .collection(&c)?
                .indexes
                .iter()
                .any(|i| i.spec.name == name)
            {
                found.push(c);
            }
        }
        match found.len() {
            0 => Err(QueryError::IndexNotFound(name.to_string())),
            1 => Ok(found.remove(0)),
            _ => Err(QueryError::AmbiguousIndex {
                name: name.to_string(),
                collections: found.join(", "),
            }),
        }
    }
}

/// Attempts of a read-modify-write statement before it reports contention.
pub const MAX_WRITE_ATTEMPTS: u32 = 100;

/// Waits a little before retrying a conflicting write, longer after each
/// conflict (up to about 2 ms), with jitter so that the writers that collided
/// do not collide again in step.
fn conflict_backoff(attempt: u32) {
    if attempt <= 2 {
        std::thread::yield_now();
        return;
    }
    let ceiling_us = 50u64 << attempt.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    std::thread::sleep(std::time::Duration::from_micros(nanos % ceiling_us));
}

/// The precondition that the document is still the version that was read.
fn expect_unchanged(collection: &str, id: &str, doc: &Value) -> Op {
    Op::Expect {
        collection: collection.to_string(),
        id: id.to_string(),
        doc_hash: Some(stratosdb_engine::proof::hash::doc_hash(doc)),
    }
}

fn doc_id(doc: &Value) -> Result<String> {
    match doc.as_object().and_then(|m| m.get("_id")) {
        Some(Value::String(id)) => Ok(id.clone()),
        _ => Err(QueryError::Engine(
            stratosdb_engine::EngineError::Corruption("a stored document has no string _id".into()),
        )),
    }
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn rows_result(columns: &[&str], rows: Vec<Value>) -> StatementResult {
    StatementResult::Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}
