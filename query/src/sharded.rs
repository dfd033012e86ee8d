//! Statements over a sharded store: the ONE implementation of statement
//! semantics, shared by the embedded database (a store of one shard), by
//! [`LocalShards`] (N engine shards in one process, for tests) and by the
//! cluster (a store whose shards are Raft groups on other nodes).
//!
//! The store does what is per shard (run a [`ShardPlan`], apply a batch of
//! ops atomically, DDL on every shard); [`ShardedDatabase`] does the rest:
//! planning, routing, scatter/gather and merge, the up-front checks of an
//! INSERT, and the per-shard optimistic isolation of UPDATE and DELETE.
//! `docs/query.md` ("Sharded collections") states the semantics.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use stratosdb_engine::{
    CollectionInfo, Durability, Engine, EngineError, IndexSpec, Op, OpOutcome, PatchChange, Shard,
    ShardId, Value,
};

use crate::ast::{Expr, Path, Query, SelectItem, Statement};
use crate::database::StatementResult;
use crate::error::{QueryError, Result};
use crate::eval::{Ctx, eval};
use crate::exec::{Partial, Rows, execute_on_shard, merge, planning_catalog};
use crate::filter::{FindOptions, find_query};
use crate::parse::{parse_part, parse_statement, split_statements};
use crate::plan::{AccessPath, QueryPlan, ShardOutput, ShardPlan, explain};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// From the shard's leader, after confirming leadership (ReadIndex).
    #[default]
    Linearizable,
    /// From any replica, possibly behind the leader.
    Follower,
}

/// Where one shard's part of a read was served: the applied (raft) index it read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRead {
    pub collection: String,
    pub shard: u32,
    pub applied: u64,
}

/// A statement's result and the shard reads it made.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    pub result: StatementResult,
    pub reads: Vec<ShardRead>,
}

/// The shards a statement runs on. Implemented by the embedded one-shard store,
/// by [`LocalShards`] (N engine shards in one process, for tests) and by the cluster.
///
/// Errors: a store returns what the shard refused as the engine's error
/// ([`QueryError::Engine`]) or, when it came from elsewhere, as
/// [`QueryError::Remote`] with the same code (`write_conflict` in particular:
/// UPDATE and DELETE retry on it); a shard it cannot reach is
/// [`QueryError::Unavailable`].
pub trait ShardedStore: Send + Sync {
    /// How many shards `collection` has (error `collection_not_found` if none).
    fn shard_count(&self, collection: &str) -> Result<u32>;
    /// The shard (0..count) that holds document `id` of `collection`.
    fn shard_of(&self, collection: &str, id: &str) -> Result<u32>;
    /// The catalog (indexes, multikey flags, document count) of one shard.
    fn shard_catalog(&self, collection: &str, shard: u32) -> Result<Arc<CollectionInfo>>;
    /// [`ShardedStore::shard_catalog`] reflecting every DDL acknowledged
    /// before the call (what `SHOW INDEXES` reports). A store whose catalog
    /// reads may lag (a follower replica) overrides it.
    fn shard_catalog_fresh(&self, collection: &str, shard: u32) -> Result<Arc<CollectionInfo>> {
        self.shard_catalog(collection, shard)
    }
    /// Runs the per-shard part of a plan on one shard; its answer and the applied index it read at.
    fn execute_partial(
        &self,
        shard: u32,
        plan: &ShardPlan,
        consistency: ReadConsistency,
    ) -> Result<(Partial, u64)>;
    /// Runs a shard plan whose output is whole documents and proves them
    /// (`crate::proven::execute_proven`) on the replica that serves it.
    /// A store that cannot prove refuses with `proof_unsupported`.
    fn execute_partial_proven(
        &self,
        shard: u32,
        plan: &ShardPlan,
        consistency: ReadConsistency,
    ) -> Result<(Partial, Vec<stratosdb_verifier::ReadProof>)> {
        let _ = (shard, plan, consistency);
        Err(QueryError::ProofUnsupported(
            "this store does not prove its reads".into(),
        ))
    }
    /// Applies `ops` (all on documents of this shard) atomically on one shard.
    fn write(&self, collection: &str, shard: u32, ops: Vec<Op>) -> Result<Vec<OpOutcome>>;
    /// Names of the collections, sorted.
    fn collections(&self) -> Result<Vec<String>>;
    /// DDL; the store makes it happen on every shard.
    fn create_collection(
        &self,
        name: &str,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<()>;
    fn drop_collection(&self, name: &str) -> Result<()>;
    fn create_index(&self, collection: &str, spec: &IndexSpec) -> Result<()>;
    fn drop_index(&self, collection: &str, name: &str) -> Result<()>;
}

/// Most statements the statement cache holds (it is emptied when full).
const CACHE_SIZE: usize = 1024;

/// Attempts of a read-modify-write statement on one shard before it reports contention.
pub const MAX_WRITE_ATTEMPTS: u32 = 100;

struct Cached {
    stmt: Arc<Statement>,
    plan: Option<CachedPlan>,
}

/// A plan and the index state (names, multikey flags) it was made for.
type CachedPlan = (Vec<(String, bool)>, Arc<QueryPlan>);
type CacheHit = (Arc<Statement>, Option<CachedPlan>);

/// What a plan depends on in the catalog: the indexes and their multikey flags.
fn index_state(info: &CollectionInfo) -> Vec<(String, bool)> {
    info.indexes
        .iter()
        .map(|i| (i.spec.name.clone(), i.multikey))
        .collect()
}

/// Statements over a [`ShardedStore`].
///
/// ```
/// use stratosdb_query::{Executed, LocalShards, ReadConsistency, ShardedDatabase, StatementResult};
/// let db = ShardedDatabase::new(LocalShards::temporary(4).unwrap());
/// let run = |sql: &str| db.execute_one(sql, ReadConsistency::Linearizable).unwrap();
/// run("CREATE COLLECTION users");
/// run(r#"INSERT INTO users VALUES ('{"_id":"a","age":31}'), ('{"_id":"b","age":40}'), ('{"_id":"c","age":50}')"#);
/// let Executed { result, reads } = run("SELECT COUNT(*) AS n FROM users WHERE age > 35");
/// let StatementResult::Rows { rows, .. } = result else { panic!() };
/// assert_eq!(rows[0].to_json_string(), r#"{"n":2}"#);
/// assert_eq!(reads.len(), 4); // every shard was read
/// let Executed { reads, .. } = run("SELECT * FROM users WHERE _id = 'b'");
/// assert_eq!(reads.len(), 1); // only the shard that holds "b"
/// ```
pub struct ShardedDatabase<S: ShardedStore> {
    store: S,
    /// Statement text -> parsed statement, and for a SELECT its last plan
    /// with the index state it was made for (a prepared-statement cache).
    cache: Mutex<HashMap<String, Cached>>,
}

impl<S: ShardedStore> ShardedDatabase<S> {
    pub fn new(store: S) -> Self {
        ShardedDatabase {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Runs exactly one statement (a trailing `;` allowed).
    pub fn execute_one(&self, sql: &str, consistency: ReadConsistency) -> Result<Executed> {
        if let Some(hit) = self.cached(sql) {
            return self.run_cached(sql, hit, consistency);
        }
        let stmt = parse_statement(sql)?;
        self.remember(sql, &stmt);
        self.run(&stmt, consistency)
    }

    /// Runs `;`-separated statements in order, stopping at the first error
    /// (the statements before it keep their effect).
    pub fn execute_script(
        &self,
        script: &str,
        consistency: ReadConsistency,
    ) -> Result<Vec<Executed>> {
        split_statements(script)
            .iter()
            .map(|part| match self.cached(part.text) {
                Some(hit) => self.run_cached(part.text, hit, consistency),
                None => {
                    let stmt = parse_part(script, part)?;
                    self.remember(part.text, &stmt);
                    self.run(&stmt, consistency)
                }
            })
            .collect()
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
    fn run_cached(
        &self,
        sql: &str,
        hit: CacheHit,
        consistency: ReadConsistency,
    ) -> Result<Executed> {
        let Statement::Select(q) = hit.0.as_ref() else {
            return self.run(&hit.0, consistency);
        };
        let plan = self.select_plan(sql, q, hit.1)?;
        let (rows, reads) = self.run_plan(&plan, consistency)?;
        Ok(rows_executed(rows, reads))
    }

    /// Parses and plans a SELECT (or the query of an EXPLAIN), through the
    /// statement cache: a repeated statement costs a lookup, and a plan is
    /// made again only when the collection's indexes changed.
    pub fn plan_sql(&self, sql: &str) -> Result<Arc<QueryPlan>> {
        let (stmt, plan) = match self.cached(sql) {
            Some(hit) => hit,
            None => {
                let stmt = parse_statement(sql)?;
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
        let info = self.catalog(&q.collection)?;
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

    /// The catalog a plan is made with: the indexes complete on every shard,
    /// each multikey if it is on any shard, and the documents of all shards
    /// (see [`planning_catalog`]).
    pub fn catalog(&self, collection: &str) -> Result<Arc<CollectionInfo>> {
        self.catalog_with(collection, false)
    }

    /// The catalog, `fresh`: reflecting every DDL acknowledged before.
    fn catalog_with(&self, collection: &str, fresh: bool) -> Result<Arc<CollectionInfo>> {
        let read = |shard| {
            if fresh {
                self.store.shard_catalog_fresh(collection, shard)
            } else {
                self.store.shard_catalog(collection, shard)
            }
        };
        let count = self.store.shard_count(collection)?;
        if count <= 1 {
            return read(0);
        }
        let catalogs = each((0..count).collect(), read)
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(planning_catalog(catalogs)?))
    }

    /// Plans a query (what EXPLAIN shows).
    pub fn plan(&self, query: &Query) -> Result<QueryPlan> {
        Ok(crate::plan::plan(
            query,
            self.catalog(&query.collection)?.as_ref(),
        ))
    }

    /// Plans and runs a query.
    pub fn query(
        &self,
        query: &Query,
        consistency: ReadConsistency,
    ) -> Result<(Rows, Vec<ShardRead>)> {
        self.run_plan(&self.plan(query)?, consistency)
    }

    /// Runs a plan: its shard part on the shards it concerns (in parallel),
    /// then the merge.
    pub fn run_plan(
        &self,
        plan: &QueryPlan,
        consistency: ReadConsistency,
    ) -> Result<(Rows, Vec<ShardRead>)> {
        let (partials, reads) = self.gather(&plan.shard, consistency)?;
        Ok((merge(plan, partials)?, reads))
    }

    /// MongoDB-style find (same semantics as [`crate::Database::find`]).
    pub fn find(
        &self,
        collection: &str,
        filter: &serde_json::Value,
        options: &FindOptions,
        consistency: ReadConsistency,
    ) -> Result<(Vec<Value>, Vec<ShardRead>)> {
        let q = find_query(collection, filter, options)?;
        let (rows, reads) = self.query(&q, consistency)?;
        Ok((rows.rows, reads))
    }

    /// The shards a shard plan must run on, each with its plan: a lookup by
    /// `_id` goes only to the shards that own the ids (each asked for its
    /// own), anything else to every shard.
    pub(crate) fn targets<'p>(
        &self,
        plan: &'p ShardPlan,
    ) -> Result<Vec<(u32, Cow<'p, ShardPlan>)>> {
        let count = self.store.shard_count(&plan.collection)?;
        if count <= 1 {
            return Ok(vec![(0, Cow::Borrowed(plan))]);
        }
        let AccessPath::IdLookup { ids, reverse } = &plan.access else {
            return Ok((0..count).map(|s| (s, Cow::Borrowed(plan))).collect());
        };
        let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for id in ids {
            let shard = self.store.shard_of(&plan.collection, id)?;
            by_shard.entry(shard).or_default().push(id.clone());
        }
        Ok(by_shard
            .into_iter()
            .map(|(shard, ids)| {
                let mut p = plan.clone();
                p.access = AccessPath::IdLookup {
                    ids,
                    reverse: *reverse,
                };
                (shard, Cow::Owned(p))
            })
            .collect())
    }

    /// Runs a shard plan on its target shards, in parallel when several.
    fn gather(
        &self,
        plan: &ShardPlan,
        consistency: ReadConsistency,
    ) -> Result<(Vec<Partial>, Vec<ShardRead>)> {
        let targets = self.targets(plan)?;
        let answers = each(targets, |(shard, p)| -> Result<(Partial, ShardRead)> {
            let (partial, applied) = self.store.execute_partial(shard, &p, consistency)?;
            Ok((
                partial,
                ShardRead {
                    collection: plan.collection.clone(),
                    shard,
                    applied,
                },
            ))
        });
        let mut partials = Vec::with_capacity(answers.len());
        let mut reads = Vec::with_capacity(answers.len());
        for answer in answers {
            let (partial, read) = answer?;
            partials.push(partial);
            reads.push(read);
        }
        Ok((partials, reads))
    }

    /// Runs a parsed statement.
    pub fn run(&self, stmt: &Statement, consistency: ReadConsistency) -> Result<Executed> {
        match stmt {
            Statement::Select(q) => {
                let (rows, reads) = self.query(q, consistency)?;
                Ok(rows_executed(rows, reads))
            }
            Statement::Insert { collection, docs } => self.insert(collection, docs),
            Statement::Update {
                collection,
                sets,
                filter,
            } => {
                self.read_modify_write(collection, filter, &|doc| update_ops(collection, sets, doc))
            }
            Statement::Delete { collection, filter } => {
                self.read_modify_write(collection, filter, &|doc| {
                    guarded(collection, doc, |id| Op::Delete {
                        collection: collection.clone(),
                        id,
                    })
                })
            }
            other => Ok(Executed {
                result: self.run_catalog_statement(other)?,
                reads: Vec::new(),
            }),
        }
    }

    /// DDL, SHOW and EXPLAIN: statements that read or change catalogs only.
    fn run_catalog_statement(&self, stmt: &Statement) -> Result<StatementResult> {
        Ok(match stmt {
            Statement::CreateCollection {
                name,
                shards,
                replicas,
            } => {
                self.store.create_collection(name, *shards, *replicas)?;
                let mut message = format!("created collection {name}");
                if shards.is_some() || replicas.is_some() {
                    let actual = self.store.shard_count(name)?;
                    let plural = if actual == 1 { "" } else { "s" };
                    message.push_str(&format!(" with {actual} shard{plural}"));
                    if let Some(wanted) = shards
                        && *wanted != actual
                    {
                        message.push_str(&format!(
                            " (shards = {wanted} asked; this store keeps {actual})"
                        ));
                    }
                }
                StatementResult::Message(message)
            }
            Statement::DropCollection(name) => {
                self.store.drop_collection(name)?;
                StatementResult::Message(format!("dropped collection {name}"))
            }
            Statement::ShowCollections => {
                let mut rows = Vec::new();
                for name in self.store.collections()? {
                    let info = self.catalog(&name)?;
                    rows.push(object([
                        ("collection", Value::String(name)),
                        ("documents", Value::Int(info.count as i64)),
                        ("indexes", Value::Int(info.indexes.len() as i64)),
                    ]));
                }
                rows_result(&["collection", "documents", "indexes"], rows)
            }
            Statement::ShowIndexes(collection) => {
                let info = self.catalog_with(collection, true)?;
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
                rows_result(&["name", "fields", "unique", "multikey"], rows)
            }
            Statement::CreateIndex { collection, spec } => {
                let shards = self.store.shard_count(collection)?;
                if spec.unique && shards > 1 {
                    // Documents are placed by _id, so two documents with the
                    // same key may live on two shards: no shard could refuse.
                    return Err(QueryError::UniqueNeedsSingleShard {
                        collection: collection.clone(),
                        shards,
                    });
                }
                self.store.create_index(collection, spec)?;
                StatementResult::Message(format!(
                    "created index {} on {collection} ({})",
                    spec.name,
                    spec.fields.join(", ")
                ))
            }
            Statement::DropIndex { collection, name } => {
                let collection = match collection {
                    Some(c) => c.clone(),
                    None => self.collection_of_index(name)?,
                };
                self.store.drop_index(&collection, name)?;
                StatementResult::Message(format!("dropped index {name} on {collection}"))
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
                rows_result(&["step", "detail"], rows)
            }
            Statement::Select(_)
            | Statement::Insert { .. }
            | Statement::Update { .. }
            | Statement::Delete { .. } => {
                return Err(QueryError::Invalid("not a catalog statement".to_string()));
            }
        })
    }

    fn collection_of_index(&self, name: &str) -> Result<String> {
        let mut found = Vec::new();
        for c in self.store.collections()? {
            if self
                .catalog(&c)?
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

    // ---- INSERT -----------------------------------------------------------------

    /// Ids are chosen first, then documents are grouped by shard. Over
    /// several shards, what can be checked before writing is: ids that repeat
    /// inside the statement and ids already stored, so these common errors
    /// change nothing anywhere. Each shard's write is atomic.
    fn insert(&self, collection: &str, docs: &[Value]) -> Result<Executed> {
        let count = self.store.shard_count(collection)?;
        let mut by_shard: BTreeMap<u32, Vec<Op>> = BTreeMap::new();
        let mut ids: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for doc in docs {
            let mut doc = doc.clone();
            stratosdb_engine::assign_id(&mut doc);
            let shard = if count <= 1 {
                0
            } else {
                let id = routable_id(&doc)?;
                if !seen.insert(id.clone()) {
                    return Err(EngineError::DuplicateId {
                        collection: collection.to_string(),
                        id,
                    }
                    .into());
                }
                let shard = self.store.shard_of(collection, &id)?;
                ids.entry(shard).or_default().push(id);
                shard
            };
            by_shard.entry(shard).or_default().push(Op::Insert {
                collection: collection.to_string(),
                doc,
            });
        }
        let mut reads = Vec::new();
        if by_shard.len() > 1 {
            reads = self.refuse_existing_ids(collection, ids)?;
        }
        let jobs: Vec<(u32, Vec<Op>)> = by_shard.into_iter().collect();
        let results = each(jobs, |(shard, ops)| ShardWrite {
            shard,
            planned: ops.len() as u64,
            outcome: self
                .store
                .write(collection, shard, ops)
                .map(|o| affected(&o)),
        });
        let written = settle(results)?;
        Ok(Executed {
            result: StatementResult::Affected(written),
            reads,
        })
    }

    /// Fails with `duplicate_id` if any of the ids (by shard) is stored.
    fn refuse_existing_ids(
        &self,
        collection: &str,
        ids: BTreeMap<u32, Vec<String>>,
    ) -> Result<Vec<ShardRead>> {
        let found = each(ids.into_iter().collect(), |(shard, mut ids)| -> Result<_> {
            ids.sort();
            let plan = ShardPlan {
                collection: collection.to_string(),
                access: AccessPath::IdLookup {
                    ids,
                    reverse: false,
                },
                filter: None,
                sort: Vec::new(),
                presorted: true,
                distinct: false,
                // One existing id is enough to refuse.
                limit: Some(1),
                output: ShardOutput::Project(vec![SelectItem {
                    expr: Expr::path("_id"),
                    name: "_id".to_string(),
                }]),
            };
            let (partial, applied) =
                self.store
                    .execute_partial(shard, &plan, ReadConsistency::Linearizable)?;
            let existing = match partial {
                Partial::Rows(rows) => rows.into_iter().next().map(|r| doc_id(&r.row)),
                Partial::Groups(_) => None,
            };
            Ok((
                existing.transpose()?,
                ShardRead {
                    collection: collection.to_string(),
                    shard,
                    applied,
                },
            ))
        });
        let mut reads = Vec::with_capacity(found.len());
        for f in found {
            let (existing, read) = f?;
            if let Some(id) = existing {
                return Err(EngineError::DuplicateId {
                    collection: collection.to_string(),
                    id,
                }
                .into());
            }
            reads.push(read);
        }
        Ok(reads)
    }

    // ---- UPDATE and DELETE --------------------------------------------------------

    /// Runs a read-modify-write statement isolated from concurrent writers,
    /// optimistically and per shard: each shard's matching documents are
    /// read, `compute` turns each into its writes, guarded by an
    /// [`Op::Expect`] on the version read; if any of them changed meanwhile,
    /// that shard rejects its whole write (changing nothing) and only that
    /// shard is read, computed and written again, at most
    /// [`MAX_WRITE_ATTEMPTS`] times. A shard that applied is never written
    /// again (that would apply an increment twice). Every shard's writes are
    /// computed before any shard writes, so an evaluation error changes nothing.
    fn read_modify_write(
        &self,
        collection: &str,
        filter: &Option<Expr>,
        compute: &(dyn Fn(&Value) -> Result<Vec<Op>> + Sync),
    ) -> Result<Executed> {
        let mut q = Query::all(collection);
        q.filter = filter.clone();
        let plan = self.plan(&q)?;
        let reads = Mutex::new(Vec::new());
        // Reads are linearizable whatever the statement asked: a stale read
        // would only make the Expect fail.
        let read_and_compute = |shard: u32, p: &ShardPlan| -> Result<(Vec<Op>, u64)> {
            let (partial, applied) =
                self.store
                    .execute_partial(shard, p, ReadConsistency::Linearizable)?;
            reads.lock().push(ShardRead {
                collection: collection.to_string(),
                shard,
                applied,
            });
            let mut ops = Vec::new();
            let mut docs = 0;
            if let Partial::Rows(rows) = partial {
                for row in &rows {
                    ops.extend(compute(&row.row)?);
                    docs += 1;
                }
            }
            Ok((ops, docs))
        };
        let computed = each(self.targets(&plan.shard)?, |(shard, p)| {
            read_and_compute(shard, &p).map(|(ops, docs)| (shard, p, ops, docs))
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let jobs: Vec<_> = computed
            .into_iter()
            .filter(|(_, _, ops, _)| !ops.is_empty())
            .collect();
        let results = each(jobs, |(shard, p, mut ops, docs)| {
            let mut attempt = 0;
            let outcome = loop {
                attempt += 1;
                match self.store.write(collection, shard, ops) {
                    Ok(outcomes) => break Ok(affected(&outcomes)),
                    Err(e) if e.code() == "write_conflict" && attempt < MAX_WRITE_ATTEMPTS => {
                        conflict_backoff(attempt);
                        match read_and_compute(shard, &p) {
                            Ok((again, _)) if again.is_empty() => break Ok(0),
                            Ok((again, _)) => ops = again,
                            Err(e) => break Err(e),
                        }
                    }
                    Err(e) if e.code() == "write_conflict" => {
                        break Err(QueryError::Contention {
                            attempts: attempt,
                            last: e.to_string(),
                        });
                    }
                    Err(e) => break Err(e),
                }
            };
            ShardWrite {
                shard,
                planned: docs,
                outcome,
            }
        });
        let written = settle(results)?;
        let mut reads = reads.into_inner();
        reads.sort_by_key(|r| r.shard);
        Ok(Executed {
            result: StatementResult::Affected(written),
            reads,
        })
    }
}

/// What one shard's part of a write did.
struct ShardWrite {
    shard: u32,
    /// Documents it was to write.
    planned: u64,
    /// Documents written, or why none were.
    outcome: Result<u64>,
}

/// The documents a multi-shard write wrote, or its error: unchanged when no
/// shard applied anything, else a [`QueryError::PartialWrite`] that says how
/// much was written (statements are atomic per shard only).
fn settle(results: Vec<ShardWrite>) -> Result<u64> {
    let mut written = 0;
    let mut total = 0;
    let mut applied = false;
    let mut failed = None;
    for r in results {
        total += r.planned;
        match r.outcome {
            Ok(n) => {
                written += n;
                applied = true;
            }
            Err(e) => {
                failed.get_or_insert((r.shard, e));
            }
        }
    }
    match failed {
        None => Ok(written),
        Some((_, e)) if !applied => Err(e),
        Some((shard, e)) => Err(QueryError::PartialWrite {
            written,
            total,
            shard,
            source: Box::new(e),
        }),
    }
}

fn affected(outcomes: &[OpOutcome]) -> u64 {
    outcomes.iter().map(|o| o.affected).sum()
}

/// Runs `f` on every item, on scoped threads when there are several (one
/// per shard: shard work is I/O or a network round trip, not CPU).
pub(crate) fn each<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

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

/// An UPDATE's writes for one document it read: the precondition that the
/// document is unchanged, then the patch.
fn update_ops(collection: &str, sets: &[(Path, Expr)], doc: &Value) -> Result<Vec<Op>> {
    let ctx = Ctx::doc(doc);
    let mut changes = Vec::with_capacity(sets.len());
    for (path, e) in sets {
        let path = path.dotted_string();
        changes.push(match eval(e, ctx)? {
            Some(value) => PatchChange::Set { path, value },
            None => PatchChange::Unset { path },
        });
    }
    guarded(collection, doc, |id| Op::Patch {
        collection: collection.to_string(),
        id,
        changes,
    })
}

/// A write of a document that was read, preceded by the precondition that
/// the document is still the version read.
fn guarded(collection: &str, doc: &Value, write: impl FnOnce(String) -> Op) -> Result<Vec<Op>> {
    let id = doc_id(doc)?;
    Ok(vec![
        Op::Expect {
            collection: collection.to_string(),
            id: id.clone(),
            doc_hash: Some(stratosdb_engine::proof::hash::doc_hash(doc)),
        },
        write(id),
    ])
}

fn doc_id(doc: &Value) -> Result<String> {
    match doc.as_object().and_then(|m| m.get("_id")) {
        Some(Value::String(id)) => Ok(id.clone()),
        _ => Err(QueryError::Engine(EngineError::Corruption(
            "a stored document has no string _id".into(),
        ))),
    }
}

/// The `_id` a document to insert is routed by; the engine's own errors for
/// what it would refuse anyway (checked here so no shard writes first).
fn routable_id(doc: &Value) -> Result<String> {
    let Value::Object(map) = doc else {
        return Err(EngineError::InvalidDocument(format!(
            "a document must be a JSON object, not {}",
            doc.type_name()
        ))
        .into());
    };
    match map.get("_id") {
        Some(Value::String(id)) => Ok(id.clone()),
        Some(other) => Err(EngineError::InvalidId {
            got: format!("a value of type {}", other.type_name()),
            max: stratosdb_engine::Limits::default().max_id_bytes,
        }
        .into()),
        None => Err(EngineError::InvalidDocument("the document has no _id".into()).into()),
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

fn rows_executed(rows: Rows, reads: Vec<ShardRead>) -> Executed {
    Executed {
        result: StatementResult::Rows {
            columns: rows.columns,
            rows: rows.rows,
        },
        reads,
    }
}

// ---- LocalShards ----------------------------------------------------------------

/// Most shards a collection of [`LocalShards`] may have.
pub const LOCAL_MAX_SHARDS: u32 = 64;

/// N engine shards of one [`Engine`] in one process: a sharded store without
/// a network, for tests (and for comparing one shard with many).
///
/// Collection number k (counted from 1, in creation order) lives on engine
/// shards `k * 64 + 0 .. k * 64 + n`; documents are routed by
/// [`stratosdb_engine::shard_of`]. The map of collections is kept in memory,
/// so a `LocalShards` is not reopened from its files.
pub struct LocalShards {
    engine: Engine,
    default_shards: u32,
    durability: Durability,
    state: RwLock<LocalState>,
}

#[derive(Default)]
struct LocalState {
    collections: BTreeMap<String, Vec<Shard>>,
    next_number: ShardId,
}

impl LocalShards {
    /// Over an engine; collections created without `WITH (shards = N)` get
    /// `default_shards`.
    pub fn new(engine: Engine, default_shards: u32) -> Result<LocalShards> {
        if default_shards == 0 || default_shards > LOCAL_MAX_SHARDS {
            return Err(QueryError::Invalid(format!(
                "a collection has 1 to {LOCAL_MAX_SHARDS} shards, not {default_shards}"
            )));
        }
        Ok(LocalShards {
            engine,
            default_shards,
            durability: Durability::Buffered,
            state: RwLock::new(LocalState {
                collections: BTreeMap::new(),
                next_number: 1,
            }),
        })
    }

    /// Over a temporary engine, gone when dropped.
    pub fn temporary(default_shards: u32) -> Result<LocalShards> {
        LocalShards::new(Engine::open_temporary()?, default_shards)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether writes wait for the disk (`Buffered` by default: it is for tests).
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// The engine shard behind shard `shard` of `collection`.
    pub fn shard(&self, collection: &str, shard: u32) -> Result<Shard> {
        let state = self.state.read();
        let shards = state
            .collections
            .get(collection)
            .ok_or_else(|| EngineError::CollectionNotFound(collection.to_string()))?;
        shards.get(shard as usize).cloned().ok_or_else(|| {
            QueryError::Invalid(format!(
                "collection {collection} has {} shards, no shard {shard}",
                shards.len()
            ))
        })
    }

    fn shards(&self, collection: &str) -> Result<Vec<Shard>> {
        self.state
            .read()
            .collections
            .get(collection)
            .cloned()
            .ok_or_else(|| EngineError::CollectionNotFound(collection.to_string()).into())
    }

    /// Runs `f` on every shard of the collection; if one fails, `undo` runs
    /// on the shards already done and the error is returned.
    fn on_every_shard(
        shards: &[Shard],
        f: impl Fn(&Shard) -> stratosdb_engine::Result<()>,
        undo: impl Fn(&Shard),
    ) -> Result<()> {
        for (i, shard) in shards.iter().enumerate() {
            if let Err(e) = f(shard) {
                shards[..i].iter().for_each(&undo);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl ShardedStore for LocalShards {
    fn shard_count(&self, collection: &str) -> Result<u32> {
        Ok(self.shards(collection)?.len() as u32)
    }

    fn shard_of(&self, collection: &str, id: &str) -> Result<u32> {
        Ok(stratosdb_engine::shard_of(
            collection,
            id,
            self.shard_count(collection)?,
        ))
    }

    fn shard_catalog(&self, collection: &str, shard: u32) -> Result<Arc<CollectionInfo>> {
        Ok(self.shard(collection, shard)?.collection(collection)?)
    }

    fn execute_partial(
        &self,
        shard: u32,
        plan: &ShardPlan,
        _consistency: ReadConsistency,
    ) -> Result<(Partial, u64)> {
        let shard = self.shard(&plan.collection, shard)?;
        let partial = execute_on_shard(&shard, plan)?;
        Ok((partial, shard.applied_index()?))
    }

    fn execute_partial_proven(
        &self,
        shard: u32,
        plan: &ShardPlan,
        _consistency: ReadConsistency,
    ) -> Result<(Partial, Vec<stratosdb_verifier::ReadProof>)> {
        let local = self.shard(&plan.collection, shard)?;
        crate::proven::execute_proven(&local, shard, plan, &crate::proven::NoAnchors)
    }

    fn write(&self, collection: &str, shard: u32, ops: Vec<Op>) -> Result<Vec<OpOutcome>> {
        let count = self.shard_count(collection)?;
        // Catch a routing mistake of the executor here, in tests.
        for op in &ops {
            let id = match op {
                Op::Insert { doc, .. } | Op::Upsert { doc, .. } | Op::Replace { doc, .. } => doc
                    .as_object()
                    .and_then(|m| m.get("_id"))
                    .and_then(|v| match v {
                        Value::String(s) => Some(s.as_str()),
                        _ => None,
                    }),
                Op::Patch { id, .. } | Op::Delete { id, .. } | Op::Expect { id, .. } => {
                    Some(id.as_str())
                }
                _ => None,
            };
            if let Some(id) = id
                && stratosdb_engine::shard_of(collection, id, count) != shard
            {
                return Err(QueryError::Invalid(format!(
                    "document {id:?} of {collection} written to shard {shard}, not its own"
                )));
            }
        }
        let shard = self.shard(collection, shard)?;
        Ok(shard.write(ops, self.durability)?.outcomes)
    }

    fn collections(&self) -> Result<Vec<String>> {
        Ok(self.state.read().collections.keys().cloned().collect())
    }

    fn create_collection(
        &self,
        name: &str,
        shards: Option<u32>,
        _replicas: Option<u32>,
    ) -> Result<()> {
        let n = shards.unwrap_or(self.default_shards);
        if n == 0 || n > LOCAL_MAX_SHARDS {
            return Err(QueryError::Invalid(format!(
                "a collection has 1 to {LOCAL_MAX_SHARDS} shards, not {n}"
            )));
        }
        let mut state = self.state.write();
        if state.collections.contains_key(name) {
            return Err(EngineError::CollectionExists(name.to_string()).into());
        }
        let base = state
            .next_number
            .checked_mul(LOCAL_MAX_SHARDS)
            .ok_or_else(|| QueryError::Invalid("out of engine shard ids".into()))?;
        let shards = (0..n)
            .map(|i| self.engine.shard(base + i))
            .collect::<stratosdb_engine::Result<Vec<_>>>()?;
        LocalShards::on_every_shard(
            &shards,
            |s| s.create_collection(name),
            |s| {
                // Best effort: the error being reported is the first one.
                let _ = s.drop_collection(name);
            },
        )?;
        state.next_number += 1;
        state.collections.insert(name.to_string(), shards);
        Ok(())
    }

    fn drop_collection(&self, name: &str) -> Result<()> {
        let mut state = self.state.write();
        let shards = state
            .collections
            .remove(name)
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_string()))?;
        for s in &shards {
            s.drop_collection(name)?;
        }
        Ok(())
    }

    fn create_index(&self, collection: &str, spec: &IndexSpec) -> Result<()> {
        let shards = self.shards(collection)?;
        LocalShards::on_every_shard(
            &shards,
            |s| s.create_index(collection, spec.clone()),
            |s| {
                // Best effort: the error being reported is the first one.
                let _ = s.drop_index(collection, &spec.name);
            },
        )
    }

    fn drop_index(&self, collection: &str, name: &str) -> Result<()> {
        for s in &self.shards(collection)? {
            s.drop_index(collection, name)?;
        }
        Ok(())
    }
}
