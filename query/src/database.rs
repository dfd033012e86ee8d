//! The embedded database: one engine shard behind the statement interface
//! the shell and applications use.

use std::collections::BTreeMap;

use stratosdb_engine::{Durability, Engine, EngineConfig, Op, PatchChange, Shard, Value};

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
        Ok(Database {
            engine,
            shard,
            durability: Durability::Sync,
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
            .map(|part| self.run(&parse_part(script, part)?))
            .collect()
    }

    /// Runs exactly one statement (a trailing `;` is allowed).
    pub fn execute_one(&self, sql: &str) -> Result<StatementResult> {
        self.run(&crate::parse::parse_statement(sql)?)
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
            } => {
                let docs = self.matching(collection, filter)?;
                let mut ops = Vec::with_capacity(docs.len());
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
                    ops.push(Op::Patch {
                        collection: collection.clone(),
                        id: doc_id(doc)?,
                        changes,
                    });
                }
                self.write(ops)
            }
            Statement::Delete { collection, filter } => {
                let docs = self.matching(collection, filter)?;
                let ops = docs
                    .iter()
                    .map(|doc| {
                        Ok(Op::Delete {
                            collection: collection.clone(),
                            id: doc_id(doc)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                self.write(ops)
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
