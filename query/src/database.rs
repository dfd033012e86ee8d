//! The embedded database: one engine shard behind the statement interface
//! the shell and applications use.

use std::sync::Arc;

use stratosdb_engine::{
    CollectionInfo, Durability, Engine, EngineConfig, IndexSpec, Op, OpOutcome, Shard, Value,
};

use crate::ast::{Query, Statement};
use crate::error::{QueryError, Result};
use crate::exec::{Partial, Rows, execute_on_shard};
use crate::filter::FindOptions;
use crate::plan::{QueryPlan, ShardPlan};
use crate::proven::{AnchorLookup, NoAnchors, ProvenRows};
use crate::sharded::{ReadConsistency, ShardedDatabase, ShardedStore};

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

/// An embedded stratosdb database (shard 0 of an engine): a
/// [`ShardedDatabase`] over a store of one shard, so it runs the very same
/// statement code as a cluster. Reads are always linearizable.
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
    inner: ShardedDatabase<OneShard>,
}

/// The embedded store: every collection has one shard, shard 0 of the engine.
struct OneShard {
    engine: Engine,
    shard: Shard,
    durability: Durability,
    /// What proven reads know of anchored epochs ([`Database::set_anchors`]).
    anchors: Arc<dyn AnchorLookup + Send>,
}

impl OneShard {
    fn only(&self, shard: u32) -> Result<&Shard> {
        match shard {
            0 => Ok(&self.shard),
            _ => Err(QueryError::Invalid(format!(
                "the embedded database has one shard, no shard {shard}"
            ))),
        }
    }
}

impl ShardedStore for OneShard {
    fn shard_count(&self, collection: &str) -> Result<u32> {
        self.shard.collection(collection)?;
        Ok(1)
    }

    fn shard_of(&self, collection: &str, _id: &str) -> Result<u32> {
        self.shard_count(collection).map(|_| 0)
    }

    fn shard_catalog(&self, collection: &str, shard: u32) -> Result<Arc<CollectionInfo>> {
        Ok(self.only(shard)?.collection(collection)?)
    }

    fn execute_partial(
        &self,
        shard: u32,
        plan: &ShardPlan,
        _consistency: ReadConsistency,
    ) -> Result<(Partial, u64)> {
        let shard = self.only(shard)?;
        Ok((execute_on_shard(shard, plan)?, shard.applied_index()?))
    }

    fn execute_partial_proven(
        &self,
        shard: u32,
        plan: &ShardPlan,
        _consistency: ReadConsistency,
    ) -> Result<(Partial, Vec<stratosdb_verifier::ReadProof>)> {
        crate::proven::execute_proven(self.only(shard)?, shard, plan, self.anchors.as_ref())
    }

    fn write(&self, _collection: &str, shard: u32, ops: Vec<Op>) -> Result<Vec<OpOutcome>> {
        Ok(self.only(shard)?.write(ops, self.durability)?.outcomes)
    }

    fn collections(&self) -> Result<Vec<String>> {
        Ok(self.shard.collections())
    }

    /// The options are accepted; one shard on one node is what there is
    /// (the statement's message says how many shards the collection has).
    fn create_collection(
        &self,
        name: &str,
        _shards: Option<u32>,
        _replicas: Option<u32>,
    ) -> Result<()> {
        Ok(self.shard.create_collection(name)?)
    }

    fn drop_collection(&self, name: &str) -> Result<()> {
        Ok(self.shard.drop_collection(name)?)
    }

    fn create_index(&self, collection: &str, spec: &IndexSpec) -> Result<()> {
        Ok(self.shard.create_index(collection, spec.clone())?)
    }

    fn drop_index(&self, collection: &str, name: &str) -> Result<()> {
        Ok(self.shard.drop_index(collection, name)?)
    }
}

const LINEARIZABLE: ReadConsistency = ReadConsistency::Linearizable;

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
            inner: ShardedDatabase::new(OneShard {
                engine,
                shard,
                durability: Durability::Sync,
                anchors: Arc::new(NoAnchors),
            }),
        })
    }

    /// The shard statements run on.
    pub fn shard(&self) -> &Shard {
        &self.inner.store().shard
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.store().engine
    }

    /// Whether writes wait for the disk (`Sync`, the default) or not.
    pub fn set_durability(&mut self, durability: Durability) {
        self.inner.store_mut().durability = durability;
    }

    /// What proven reads ([`Database::query_proven`]) know of anchored
    /// epochs: without it, every proof is unanchored.
    pub fn set_anchors(&mut self, anchors: Arc<dyn AnchorLookup + Send>) {
        self.inner.store_mut().anchors = anchors;
    }

    /// Runs a query with proofs of every returned document (and of the
    /// looked-up `_id`s that are absent), each to the shard's root, or to
    /// its latest anchored mark's root with the anchor proof when the
    /// document is unchanged since (`docs/chain.md`, "Verifiable reads").
    ///
    /// ```
    /// use stratosdb_query::{Database, parse_statement, ast::Statement};
    /// let db = Database::open_temporary().unwrap();
    /// db.execute(r#"CREATE COLLECTION c; INSERT INTO c VALUES ('{"_id":"a","n":1}')"#).unwrap();
    /// let Statement::Select(q) = parse_statement("SELECT n FROM c WHERE _id IN ('a', 'b')").unwrap() else { panic!() };
    /// let proven = db.query_proven(&q).unwrap();
    /// assert_eq!(proven.rows.rows[0].to_json_string(), r#"{"n":1}"#);
    /// proven.proofs[0].verify(None).unwrap();
    /// assert_eq!(proven.absent[0].id, "b");
    /// ```
    pub fn query_proven(&self, query: &Query) -> Result<ProvenRows> {
        self.inner.query_proven(query, LINEARIZABLE)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        Ok(self.engine().flush()?)
    }

    /// Runs `;`-separated statements in order, stopping at the first error
    /// (the statements before it keep their effect; the failing one has none).
    /// To report each statement separately, use [`crate::split_statements`] and
    /// [`Database::execute_one`].
    pub fn execute(&self, script: &str) -> Result<Vec<StatementResult>> {
        Ok(self
            .inner
            .execute_script(script, LINEARIZABLE)?
            .into_iter()
            .map(|e| e.result)
            .collect())
    }

    /// Runs exactly one statement (a trailing `;` is allowed).
    pub fn execute_one(&self, sql: &str) -> Result<StatementResult> {
        Ok(self.inner.execute_one(sql, LINEARIZABLE)?.result)
    }

    /// Parses and plans a SELECT, through the statement cache: a repeated
    /// statement costs a lookup, and a plan is made again only when the
    /// collection's indexes changed.
    pub fn plan_sql(&self, sql: &str) -> Result<Arc<QueryPlan>> {
        self.inner.plan_sql(sql)
    }

    /// Runs a parsed statement.
    pub fn run(&self, stmt: &Statement) -> Result<StatementResult> {
        Ok(self.inner.run(stmt, LINEARIZABLE)?.result)
    }

    /// Plans a query (what EXPLAIN shows).
    pub fn plan(&self, query: &Query) -> Result<QueryPlan> {
        self.inner.plan(query)
    }

    /// Plans and runs a query.
    pub fn query(&self, query: &Query) -> Result<Rows> {
        Ok(self.inner.query(query, LINEARIZABLE)?.0)
    }

    /// Runs a plan made earlier (by [`Database::plan`]).
    pub fn run_plan(&self, plan: &QueryPlan) -> Result<Rows> {
        Ok(self.inner.run_plan(plan, LINEARIZABLE)?.0)
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
        Ok(self
            .inner
            .find(collection, filter, options, LINEARIZABLE)?
            .0)
    }
}
