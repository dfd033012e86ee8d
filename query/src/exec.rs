//! Execution: the per-shard half of a plan behind [`ShardSource`], and the
//! merge that combines any number of shard answers. The embedded database is
//! one [`Shard`] as source; a cluster is many, and runs the same merge.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use bincode::{Decode, Encode};

use stratosdb_engine::{CollectionInfo, EngineError, KvStore, Shard, Value};

use crate::ast::{AggCall, AggFunc, OrderKey, Query, SelectItem};
use crate::error::{QueryError, Result};
use crate::eval::{Ctx, eval, matches};
use crate::plan::{AccessPath, QueryPlan, ShardOutput, ShardPlan, id_order, plan};

/// A row and the values of the sort keys it was ordered by.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct PartialRow {
    pub key: Vec<Option<Value>>,
    pub row: Value,
}

/// One group's partial aggregates from one shard.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct PartialGroup {
    pub key: Vec<Option<Value>>,
    pub states: Vec<AggState>,
}

/// What one shard answers for a [`ShardPlan`].
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Partial {
    /// Rows sorted by their keys (at most the plan's limit).
    Rows(Vec<PartialRow>),
    /// Groups sorted by key.
    Groups(Vec<PartialGroup>),
}

/// A source of shard answers: the embedded shard, or (later) a remote one.
pub trait ShardSource {
    /// The collection's catalog as this shard sees it (indexes, multikey flags).
    fn catalog(&self, collection: &str) -> Result<Arc<CollectionInfo>>;
    /// Runs the per-shard part of a plan.
    fn execute_partial(&self, plan: &ShardPlan) -> Result<Partial>;
}

/// The result of a query: columns in order, and one `Value::Object` per row,
/// keyed by column. A column whose value is missing is absent from the row.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Value>,
}

/// Plans a query over several shards (their catalogs merged) and runs it.
pub fn run_query<S: ShardSource>(sources: &[S], query: &Query) -> Result<(QueryPlan, Rows)> {
    let plan = plan_query(sources, query)?;
    let rows = run_plan(sources, &plan)?;
    Ok((plan, rows))
}

/// Plans a query against the shards' catalogs (see [`planning_catalog`]).
pub fn plan_query<S: ShardSource>(sources: &[S], query: &Query) -> Result<QueryPlan> {
    if let [one] = sources {
        return Ok(plan(query, one.catalog(&query.collection)?.as_ref()));
    }
    let catalogs = sources
        .iter()
        .map(|s| s.catalog(&query.collection))
        .collect::<Result<Vec<_>>>()?;
    Ok(plan(query, &planning_catalog(catalogs)?))
}

/// One catalog to plan a query over several shards with: the indexes that are
/// complete on every shard (one still being built somewhere cannot be used
/// there), each multikey if it is multikey on any shard (a plan that relies
/// on one entry per document must not be made from a shard that has not met
/// an array yet), and the documents of all shards.
pub fn planning_catalog(catalogs: Vec<Arc<CollectionInfo>>) -> Result<CollectionInfo> {
    let mut iter = catalogs.into_iter();
    let first = iter
        .next()
        .ok_or_else(|| QueryError::Invalid("no shard to query".into()))?;
    let mut merged = first.as_ref().clone();
    for info in iter {
        merged.count += info.count;
        merged.indexes.retain_mut(|index| {
            match info.indexes.iter().find(|i| i.spec == index.spec) {
                Some(other) => {
                    index.multikey |= other.multikey;
                    true
                }
                None => false,
            }
        });
    }
    Ok(merged)
}

/// Runs a plan on every source and merges the answers.
pub fn run_plan<S: ShardSource>(sources: &[S], plan: &QueryPlan) -> Result<Rows> {
    let partials = sources
        .iter()
        .map(|s| s.execute_partial(&plan.shard))
        .collect::<Result<Vec<_>>>()?;
    merge(plan, partials)
}

// ---- one shard ------------------------------------------------------------------

impl<K: KvStore> ShardSource for Shard<K> {
    fn catalog(&self, collection: &str) -> Result<Arc<CollectionInfo>> {
        Ok(self.collection(collection)?)
    }

    fn execute_partial(&self, plan: &ShardPlan) -> Result<Partial> {
        execute_on_shard(self, plan)
    }
}

type Docs<'a> = Box<dyn Iterator<Item = Result<Value>> + 'a>;

/// The documents the access path yields, and whether they come in the plan's order.
fn documents<'a, K: KvStore>(shard: &'a Shard<K>, plan: &ShardPlan) -> Result<(Docs<'a>, bool)> {
    let coll = plan.collection.clone();
    let engine = |r: std::result::Result<(String, Value), EngineError>| {
        r.map(|(_, d)| d).map_err(QueryError::from)
    };
    let full_scan = |reverse: bool| -> Result<Docs<'a>> {
        Ok(Box::new(
            shard
                .scan(
                    &plan.collection,
                    Bound::Unbounded,
                    Bound::Unbounded,
                    reverse,
                )?
                .map(engine),
        ))
    };
    let fetch = move |ids: Box<dyn Iterator<Item = String> + 'a>| -> Docs<'a> {
        let coll = coll.clone();
        Box::new(
            ids.map(move |id| shard.get(&coll, &id).map_err(QueryError::from))
                .filter_map(Result::transpose),
        )
    };
    let by_id = id_order(&plan.sort);
    Ok(match &plan.access {
        AccessPath::FullScan { reverse } => (full_scan(*reverse)?, plan.presorted),
        AccessPath::IdRange {
            lower,
            upper,
            reverse,
        } => (
            Box::new(
                shard
                    .scan(
                        &plan.collection,
                        lower.as_ref().map(String::as_str),
                        upper.as_ref().map(String::as_str),
                        *reverse,
                    )?
                    .map(engine),
            ),
            plan.presorted,
        ),
        AccessPath::IdLookup { ids, reverse } => {
            // Check the collection exists even when there is nothing to look up.
            shard.collection(&plan.collection)?;
            let ids = ids.clone();
            let iter: Box<dyn Iterator<Item = String>> = if *reverse {
                Box::new(ids.into_iter().rev())
            } else {
                Box::new(ids.into_iter())
            };
            (fetch(iter), plan.presorted)
        }
        AccessPath::IndexScan {
            index,
            ranges,
            reverse,
            single_valued,
            ..
        } => {
            let info = shard.collection(&plan.collection)?;
            let now_multikey = info.index(index)?.multikey;
            if now_multikey && (*single_valued || plan.presorted) {
                // The index met an array since the plan was made: the plan's
                // ranges or order may no longer hold. Scan instead.
                let reverse = by_id == Some(true);
                return Ok((full_scan(reverse)?, by_id.is_some()));
            }
            if plan.presorted {
                let mut seen = HashSet::new();
                let mut iters = Vec::with_capacity(ranges.len());
                for r in ranges {
                    iters.push(shard.index_scan(&plan.collection, index, r, *reverse)?);
                }
                let ids = iters.into_iter().flatten().filter_map(move |id| match id {
                    Ok(id) => seen.insert(id.clone()).then_some(Ok(id)),
                    Err(e) => Some(Err(e)),
                });
                let coll = plan.collection.clone();
                let docs = ids
                    .map(move |id| -> Result<Option<Value>> { Ok(shard.get(&coll, &id?)?) })
                    .filter_map(Result::transpose);
                (Box::new(docs), true)
            } else {
                // Collect the ids (without duplicates, in _id order): documents
                // then come in _id order, which is the order a query without
                // ORDER BY wants.
                let mut ids = BTreeSet::new();
                for r in ranges {
                    for id in shard.index_scan(&plan.collection, index, r, false)? {
                        ids.insert(id?);
                    }
                }
                let iter: Box<dyn Iterator<Item = String>> = if by_id == Some(true) {
                    Box::new(ids.into_iter().rev())
                } else {
                    Box::new(ids.into_iter())
                };
                (fetch(iter), by_id.is_some())
            }
        }
    })
}

/// Runs the per-shard part of a plan on an embedded shard.
pub fn execute_on_shard<K: KvStore>(shard: &Shard<K>, plan: &ShardPlan) -> Result<Partial> {
    let (docs, presorted) = documents(shard, plan)?;
    let mut docs = docs.filter_map(|doc| match doc {
        Ok(doc) => match &plan.filter {
            None => Some(Ok(doc)),
            Some(f) => match matches(f, Ctx::doc(&doc)) {
                Ok(true) => Some(Ok(doc)),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            },
        },
        Err(e) => Some(Err(e)),
    });
    match &plan.output {
        ShardOutput::Partial {
            group_by,
            aggregates,
        } => {
            let mut groups: BTreeMap<Vec<Option<Value>>, Vec<AggState>> = BTreeMap::new();
            for doc in docs {
                let doc = doc?;
                let ctx = Ctx::doc(&doc);
                let key = group_by
                    .iter()
                    .map(|g| eval(g, ctx).map(canonical_key))
                    .collect::<Result<Vec<_>>>()?;
                let states = groups
                    .entry(key)
                    .or_insert_with(|| aggregates.iter().map(AggState::new).collect());
                for (state, call) in states.iter_mut().zip(aggregates) {
                    let v = match &call.arg {
                        Some(a) => eval(a, ctx)?,
                        None => None,
                    };
                    state.add(call.func, v.as_ref());
                }
            }
            Ok(Partial::Groups(
                groups
                    .into_iter()
                    .map(|(key, states)| PartialGroup { key, states })
                    .collect(),
            ))
        }
        ShardOutput::Documents | ShardOutput::Project(_) => {
            let limit = plan.limit.map(|l| l as usize);
            let desc: Vec<bool> = plan.sort.iter().map(|k| k.desc).collect();
            let mut rows = Vec::new();
            let mut seen = BTreeSet::new();
            if presorted {
                if limit == Some(0) {
                    return Ok(Partial::Rows(rows));
                }
                for doc in docs.by_ref() {
                    let row = make_row(&doc?, plan)?;
                    if plan.distinct && !seen.insert(row.row.clone()) {
                        continue;
                    }
                    rows.push(row);
                    if Some(rows.len()) == limit {
                        break;
                    }
                }
            } else {
                for doc in docs {
                    rows.push(make_row(&doc?, plan)?);
                }
                rows.sort_by(|a, b| cmp_keys(&a.key, &b.key, &desc));
                if plan.distinct {
                    rows.retain(|r| seen.insert(r.row.clone()));
                }
                if let Some(l) = limit {
                    rows.truncate(l);
                }
            }
            Ok(Partial::Rows(rows))
        }
    }
}

fn make_row(doc: &Value, plan: &ShardPlan) -> Result<PartialRow> {
    let ctx = Ctx::doc(doc);
    let key = sort_key(&plan.sort, ctx)?;
    let row = match &plan.output {
        ShardOutput::Project(items) => project(items, ctx)?,
        _ => doc.clone(),
    };
    Ok(PartialRow { key, row })
}

fn sort_key(keys: &[OrderKey], ctx: Ctx<'_>) -> Result<Vec<Option<Value>>> {
    keys.iter().map(|k| eval(&k.expr, ctx)).collect()
}

pub(crate) fn project(items: &[SelectItem], ctx: Ctx<'_>) -> Result<Value> {
    let mut row = BTreeMap::new();
    for item in items {
        if let Some(v) = eval(&item.expr, ctx)? {
            row.insert(item.name.clone(), v);
        }
    }
    Ok(Value::Object(row))
}

/// Compares sort keys: missing first, then the values' total order, each key
/// in its direction.
pub fn cmp_keys(a: &[Option<Value>], b: &[Option<Value>], desc: &[bool]) -> Ordering {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let o = x.cmp(y);
        let o = if desc.get(i).copied().unwrap_or(false) {
            o.reverse()
        } else {
            o
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

// ---- aggregates -------------------------------------------------------------------

/// The running state of one aggregate on one shard; states of the same
/// aggregate from several shards combine with [`AggState::merge`].
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum AggState {
    Count(u64),
    /// SUM and AVG: integers summed exactly, floats apart.
    Sum {
        ints: i128,
        floats: f64,
        any_float: bool,
        n: u64,
    },
    Min(Option<Value>),
    Max(Option<Value>),
}

impl AggState {
    pub fn new(call: &AggCall) -> AggState {
        match call.func {
            AggFunc::CountRows | AggFunc::Count => AggState::Count(0),
            AggFunc::Sum | AggFunc::Avg => AggState::Sum {
                ints: 0,
                floats: 0.0,
                any_float: false,
                n: 0,
            },
            AggFunc::Min => AggState::Min(None),
            AggFunc::Max => AggState::Max(None),
        }
    }

    /// Adds one row's value (`None`: missing).
    fn add(&mut self, func: AggFunc, v: Option<&Value>) {
        let present = v.filter(|v| !matches!(v, Value::Null));
        match self {
            AggState::Count(n) => {
                // COUNT(*) counts rows; COUNT(x) rows where x is present and not null.
                if func == AggFunc::CountRows || present.is_some() {
                    *n += 1;
                }
            }
            AggState::Sum {
                ints,
                floats,
                any_float,
                n,
            } => match present {
                Some(Value::Int(i)) => {
                    *ints += *i as i128;
                    *n += 1;
                }
                Some(Value::Float(f)) => {
                    *floats += f;
                    *any_float = true;
                    *n += 1;
                }
                _ => {}
            },
            AggState::Min(m) => {
                if let Some(v) = present
                    && m.as_ref()
                        .is_none_or(|cur| extreme_wins(v, cur, Ordering::Less))
                {
                    *m = Some(v.clone());
                }
            }
            AggState::Max(m) => {
                if let Some(v) = present
                    && m.as_ref()
                        .is_none_or(|cur| extreme_wins(v, cur, Ordering::Greater))
                {
                    *m = Some(v.clone());
                }
            }
        }
    }

    /// Combines another shard's state of the same aggregate.
    pub fn merge(&mut self, other: &AggState) {
        match (self, other) {
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (
                AggState::Sum {
                    ints,
                    floats,
                    any_float,
                    n,
                },
                AggState::Sum {
                    ints: i2,
                    floats: f2,
                    any_float: a2,
                    n: n2,
                },
            ) => {
                *ints += i2;
                *floats += f2;
                *any_float |= a2;
                *n += n2;
            }
            (AggState::Min(a), AggState::Min(Some(b)))
                if a.as_ref()
                    .is_none_or(|cur| extreme_wins(b, cur, Ordering::Less)) =>
            {
                *a = Some(b.clone());
            }
            (AggState::Max(a), AggState::Max(Some(b)))
                if a.as_ref()
                    .is_none_or(|cur| extreme_wins(b, cur, Ordering::Greater)) =>
            {
                *a = Some(b.clone());
            }
            _ => {}
        }
    }

    /// The aggregate's value. SUM of integers stays an integer (an error if
    /// it overflows); SUM and AVG of nothing, MIN and MAX of nothing are null.
    pub fn finish(&self, func: AggFunc) -> Result<Value> {
        Ok(match self {
            AggState::Count(n) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
            AggState::Sum {
                ints,
                floats,
                any_float,
                n,
            } => {
                if *n == 0 {
                    return Ok(Value::Null);
                }
                let total = *ints as f64 + floats;
                match func {
                    AggFunc::Avg => Value::float(total / *n as f64)
                        .map_err(|e| QueryError::Arithmetic(e.to_string()))?,
                    _ if !any_float => Value::Int(i64::try_from(*ints).map_err(|_| {
                        QueryError::Arithmetic("SUM overflows a 64-bit integer".into())
                    })?),
                    _ => Value::float(total).map_err(|e| QueryError::Arithmetic(e.to_string()))?,
                }
            }
            AggState::Min(v) | AggState::Max(v) => v.clone().unwrap_or(Value::Null),
        })
    }
}

/// Whether `v` replaces `cur` as MIN (`want` Less) or MAX (Greater). Equal
/// values of different forms (`2` and `2.0`) are decided by their JSON text,
/// so the answer does not depend on the order documents are read in.
pub fn extreme_wins(v: &Value, cur: &Value, want: Ordering) -> bool {
    match v.cmp(cur) {
        Ordering::Equal => v.to_json_string() < cur.to_json_string(),
        o => o == want,
    }
}

/// A GROUP BY key in one form: equal numbers group together, and a float
/// with an integer value is keyed as the integer (`2.0` groups as `2`), so
/// the key shown does not depend on which document came first.
pub fn canonical_key(v: Option<Value>) -> Option<Value> {
    fn canon(v: Value) -> Value {
        match v {
            Value::Float(f) if f.fract() == 0.0 && (-9.0e18..=9.0e18).contains(&f) => {
                Value::Int(f as i64)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(canon).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, canon(v))).collect()),
            other => other,
        }
    }
    v.map(canon)
}

// ---- merge ------------------------------------------------------------------------

/// Combines the answers of any number of shards: a sort-merge of rows (or the
/// final aggregation of groups), DISTINCT, then the global offset and limit.
pub fn merge(plan: &QueryPlan, partials: Vec<Partial>) -> Result<Rows> {
    let m = &plan.merge;
    let mut rows: Vec<Value> = match &m.aggregate {
        None => {
            let mut all: Vec<PartialRow> = Vec::new();
            let several = partials.len() > 1;
            for p in partials {
                if let Partial::Rows(r) = p {
                    all.extend(r);
                }
            }
            if several {
                // Each part is sorted; a stable sort of the concatenation
                // merges the runs.
                all.sort_by(|a, b| cmp_keys(&a.key, &b.key, &m.sort_desc));
            }
            let mut out: Vec<Value> = all.into_iter().map(|r| r.row).collect();
            if m.distinct {
                let mut seen = BTreeSet::new();
                out.retain(|r| seen.insert(r.clone()));
            }
            out
        }
        Some(agg) => {
            let mut groups: BTreeMap<Vec<Option<Value>>, Vec<AggState>> = BTreeMap::new();
            for p in partials {
                if let Partial::Groups(gs) = p {
                    for g in gs {
                        match groups.get_mut(&g.key) {
                            Some(states) => {
                                for (s, o) in states.iter_mut().zip(&g.states) {
                                    s.merge(o);
                                }
                            }
                            None => {
                                groups.insert(g.key, g.states);
                            }
                        }
                    }
                }
            }
            if groups.is_empty()
                && matches!(&plan.shard.output, ShardOutput::Partial { group_by, .. } if group_by.is_empty())
            {
                // An aggregate over no rows still answers one row (COUNT(*) = 0).
                groups.insert(
                    Vec::new(),
                    agg.aggregates.iter().map(AggState::new).collect(),
                );
            }
            let desc: Vec<bool> = agg.order.iter().map(|k| k.desc).collect();
            let mut keyed = Vec::with_capacity(groups.len());
            for (key, states) in groups {
                let values = states
                    .iter()
                    .zip(&agg.aggregates)
                    .map(|(s, c)| s.finish(c.func).map(Some))
                    .collect::<Result<Vec<_>>>()?;
                let ctx = Ctx::group(&key, &values);
                if let Some(h) = &agg.having
                    && !matches(h, ctx)?
                {
                    continue;
                }
                let order = sort_key(&agg.order, ctx)?;
                let row = project(&agg.items, ctx)?;
                keyed.push((order, key, row));
            }
            // Ties in ORDER BY are broken by the group key, ascending.
            keyed.sort_by(|a, b| cmp_keys(&a.0, &b.0, &desc).then_with(|| a.1.cmp(&b.1)));
            let mut out: Vec<Value> = keyed.into_iter().map(|(_, _, row)| row).collect();
            if m.distinct {
                let mut seen = BTreeSet::new();
                out.retain(|r| seen.insert(r.clone()));
            }
            out
        }
    };
    let offset = usize::try_from(m.offset)
        .unwrap_or(usize::MAX)
        .min(rows.len());
    rows.drain(..offset);
    if let Some(l) = m.limit {
        rows.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    let columns = match &m.columns {
        Some(c) => c.clone(),
        None => document_columns(&rows),
    };
    Ok(Rows { columns, rows })
}

/// Columns for whole documents: `_id` first, then every top-level field seen.
fn document_columns(rows: &[Value]) -> Vec<String> {
    let mut fields = BTreeSet::new();
    for r in rows {
        if let Value::Object(m) = r {
            fields.extend(m.keys().filter(|k| *k != "_id").cloned());
        }
    }
    let mut out = vec!["_id".to_string()];
    out.extend(fields);
    out
}
