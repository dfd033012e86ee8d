//! The JSON filter API: MongoDB-style filters compiled to the same [`Query`]
//! (and so the same plan) as SQL.
//!
//! | filter | SQL |
//! | --- | --- |
//! | `{"age": 30}`, `{"age": {"$eq": 30}}` | `age = 30` |
//! | `{"age": {"$ne": 30}}` | `NOT (age = 30)` (as in MongoDB: matches a missing `age`) |
//! | `{"age": {"$gt": 30}}` (`$gte $lt $lte`) | `age > 30` (numbers only: comparisons stay within the literal's type) |
//! | `{"age": {"$in": [1, 2]}}` | `age IN (1, 2)` |
//! | `{"age": {"$nin": [1, 2]}}` | `NOT (age IN (1, 2))` |
//! | `{"age": {"$exists": true}}` | (no SQL form) the path reaches a value, null included |
//! | `{"$and": [f, g]}`, `{"$or": [f, g]}`, `{"$not": f}` | `f AND g`, `f OR g`, `NOT f` |
//! | `{"age": {"$not": {"$gt": 30}}}` | `NOT (age > 30)` |
//!
//! Several fields in one object are ANDed, in the object's key order (with
//! serde_json's default features: sorted).

use serde_json::Value as Json;
use stratosdb_engine::Value;

use crate::ast::{CmpOp, Expr, OrderKey, Path, Projection, Query, SelectItem};
use crate::error::{QueryError, Result};
use crate::translate::MAX_EXPR_DEPTH;

/// Sort direction of a [`FindOptions`] key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// Projection, sort, skip and limit of a `find`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FindOptions {
    /// Paths to return (each row keyed by the path as written); None: whole documents.
    pub projection: Option<Vec<String>>,
    /// Sort keys, most significant first (`_id` breaks ties).
    pub sort: Vec<(String, Order)>,
    pub skip: u64,
    pub limit: Option<u64>,
}

impl FindOptions {
    pub fn project(mut self, paths: &[&str]) -> Self {
        self.projection = Some(paths.iter().map(|p| p.to_string()).collect());
        self
    }

    pub fn sort(mut self, path: &str, order: Order) -> Self {
        self.sort.push((path.to_string(), order));
        self
    }

    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }

    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(QueryError::InvalidFilter(msg.into()))
}

fn path(p: &str) -> Result<Path> {
    if p.is_empty() || p.split('.').any(str::is_empty) {
        return bad(format!("path {p:?} has an empty segment"));
    }
    Ok(Path::dotted(p))
}

fn value(j: &Json) -> Result<Value> {
    Value::from_json(j.clone()).map_err(|e| QueryError::InvalidFilter(e.to_string()))
}

/// Compiles a filter and options into the query SQL would give.
///
/// ```
/// use serde_json::json;
/// use stratosdb_query::filter::{FindOptions, Order, find_query};
/// use stratosdb_query::parse::parse_statement;
/// use stratosdb_query::ast::Statement;
/// let q = find_query(
///     "users",
///     &json!({"age": {"$gt": 30}}),
///     &FindOptions::default().project(&["name"]).sort("age", Order::Desc).limit(5),
/// )
/// .unwrap();
/// let Statement::Select(sql) =
///     parse_statement("SELECT name FROM users WHERE age > 30 ORDER BY age DESC LIMIT 5").unwrap()
/// else { unreachable!() };
/// assert_eq!(q, sql);
/// ```
pub fn find_query(collection: &str, filter: &Json, options: &FindOptions) -> Result<Query> {
    let mut q = Query::all(collection);
    q.filter = compile(filter)?;
    if let Some(paths) = &options.projection {
        q.projection = Projection::Items(
            paths
                .iter()
                .map(|p| {
                    Ok(SelectItem {
                        expr: Expr::Path(path(p)?),
                        name: p.clone(),
                    })
                })
                .collect::<Result<_>>()?,
        );
    }
    q.order_by = options
        .sort
        .iter()
        .map(|(p, o)| {
            Ok(OrderKey {
                expr: Expr::Path(path(p)?),
                desc: *o == Order::Desc,
            })
        })
        .collect::<Result<_>>()?;
    q.offset = options.skip;
    q.limit = options.limit;
    Ok(q)
}

/// Compiles a filter document to a predicate (None for `{}`).
pub fn compile(filter: &Json) -> Result<Option<Expr>> {
    compile_at(filter, 0)
}

/// Filters nest no deeper than SQL expressions may.
fn check_depth(depth: usize) -> Result<()> {
    if depth > MAX_EXPR_DEPTH {
        return Err(QueryError::LimitExceeded {
            what: "filter nesting depth".into(),
            limit: MAX_EXPR_DEPTH,
        });
    }
    Ok(())
}

fn compile_at(filter: &Json, depth: usize) -> Result<Option<Expr>> {
    check_depth(depth)?;
    let Json::Object(map) = filter else {
        return bad("a filter is a JSON object");
    };
    let mut parts = Vec::new();
    for (key, v) in map {
        parts.push(match key.as_str() {
            "$and" | "$or" => {
                let Json::Array(items) = v else {
                    return bad(format!("{key} takes an array of filters"));
                };
                if items.is_empty() {
                    return bad(format!("{key} takes a non-empty array"));
                }
                let mut exprs = items
                    .iter()
                    .map(|i| Ok(compile_at(i, depth + 1)?.unwrap_or(Expr::lit(true))))
                    .collect::<Result<Vec<_>>>()?;
                match (exprs.len(), key == "$and") {
                    (1, _) => exprs.pop().unwrap_or(Expr::lit(true)),
                    (_, true) => Expr::and_all(exprs),
                    (_, false) => Expr::or_all(exprs),
                }
            }
            "$not" => Expr::negation(compile_at(v, depth + 1)?.unwrap_or(Expr::lit(true))),
            k if k.starts_with('$') => return bad(format!("unknown operator {k}")),
            field => field_filter(path(field)?, v, depth + 1)?,
        });
    }
    Ok(Expr::all(parts))
}

fn is_operator_object(v: &Json) -> bool {
    matches!(v, Json::Object(m) if !m.is_empty() && m.keys().all(|k| k.starts_with('$')))
}

fn field_filter(p: Path, v: &Json, depth: usize) -> Result<Expr> {
    check_depth(depth)?;
    let Json::Object(ops) = v else {
        return Ok(Expr::cmp(
            CmpOp::Eq,
            Expr::Path(p),
            Expr::Literal(value(v)?),
        ));
    };
    if !is_operator_object(v) {
        return Ok(Expr::cmp(
            CmpOp::Eq,
            Expr::Path(p),
            Expr::Literal(value(v)?),
        ));
    }
    let mut parts = Vec::new();
    let field = || Expr::Path(p.clone());
    for (op, arg) in ops {
        let cmp =
            |c: CmpOp| -> Result<Expr> { Ok(Expr::cmp(c, field(), Expr::Literal(value(arg)?))) };
        let list = || -> Result<Vec<Expr>> {
            match arg {
                Json::Array(items) => items.iter().map(|i| Ok(Expr::Literal(value(i)?))).collect(),
                _ => bad(format!("{op} takes an array")),
            }
        };
        parts.push(match op.as_str() {
            "$eq" => cmp(CmpOp::Eq)?,
            "$ne" => Expr::negation(cmp(CmpOp::Eq)?),
            "$gt" => cmp(CmpOp::Gt)?,
            "$gte" => cmp(CmpOp::Ge)?,
            "$lt" => cmp(CmpOp::Lt)?,
            "$lte" => cmp(CmpOp::Le)?,
            "$in" => Expr::In(Box::new(field()), list()?),
            "$nin" => Expr::negation(Expr::In(Box::new(field()), list()?)),
            "$exists" => match arg {
                Json::Bool(true) => Expr::Exists(p.clone()),
                Json::Bool(false) => Expr::negation(Expr::Exists(p.clone())),
                _ => return bad("$exists takes true or false"),
            },
            "$not" => {
                if !is_operator_object(arg) {
                    return bad("$not on a field takes an object of operators");
                }
                Expr::negation(field_filter(p.clone(), arg, depth + 1)?)
            }
            other => return bad(format!("unknown operator {other}")),
        });
    }
    Ok(Expr::all(parts).unwrap_or(Expr::lit(true)))
}
