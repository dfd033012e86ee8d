//! The planner: a [`Query`] and the collection's catalog in, a [`QueryPlan`]
//! out. The plan is data, split in two: a [`ShardPlan`] that every shard runs
//! on its own documents (access path, filter, projection, partial aggregates,
//! a per-shard limit), and a [`MergePlan`] that combines any number of shard
//! answers (sort-merge, final aggregation, global offset and limit). One shard
//! or sixteen run the same plan; only the executor underneath differs.
//!
//! Rules the planner never breaks:
//! - the index narrows, never decides: the whole WHERE is re-checked on every
//!   document fetched, so a plan can only change speed, not results;
//! - the order of results is fixed by the query alone: ORDER BY keys, then
//!   `_id` (in the direction of the last key) as the final tie-breaker; with
//!   no ORDER BY, `_id` ascending;
//! - a multikey index (one that met an array) never provides order, and its
//!   ranges on one field are never intersected (two conditions may be met by
//!   two different elements).

use std::ops::Bound;

use stratosdb_engine::{CollectionInfo, IndexInfo, IndexRange, Value};

use crate::ast::{AggCall, CmpOp, Expr, OrderKey, Path, Projection, Query, SelectItem};
use crate::eval::{LikePattern, same_class};

/// Most index ranges one scan may take (IN lists over compound indexes multiply).
const MAX_RANGES: usize = 256;

/// How a shard finds candidate documents.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessPath {
    /// Every document, in `_id` order.
    FullScan { reverse: bool },
    /// Point reads by `_id` (sorted, without duplicates).
    IdLookup { ids: Vec<String>, reverse: bool },
    /// Documents in an `_id` range, in `_id` order.
    IdRange {
        lower: Bound<String>,
        upper: Bound<String>,
        reverse: bool,
    },
    /// Ranges of a secondary index, then a point read per document.
    IndexScan {
        index: String,
        fields: Vec<String>,
        /// Several for IN lists; their union is scanned.
        ranges: Vec<IndexRange>,
        reverse: bool,
        /// The plan relies on the index holding one entry per document
        /// (ranges intersected, or order taken from it). If the index has
        /// become multikey since, the shard falls back to a full scan.
        single_valued: bool,
    },
}

/// What each shard returns.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardOutput {
    /// Whole documents (`SELECT *`).
    Documents,
    /// Projected rows.
    Project(Vec<SelectItem>),
    /// Partial aggregates per group, to be merged.
    Partial {
        group_by: Vec<Expr>,
        aggregates: Vec<AggCall>,
    },
}

/// The part of a query that runs on each shard.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardPlan {
    pub collection: String,
    pub access: AccessPath,
    /// The whole WHERE, re-checked on every document.
    pub filter: Option<Expr>,
    /// Sort keys of the returned rows; each row carries their values. Ends
    /// with `_id`. Empty for aggregates.
    pub sort: Vec<OrderKey>,
    /// The access path yields documents already in `sort` order, so the
    /// shard streams and stops at `limit`.
    pub presorted: bool,
    /// Remove duplicate rows on the shard (DISTINCT).
    pub distinct: bool,
    /// Most rows a shard needs to return (offset + limit, pushed down).
    pub limit: Option<u64>,
    pub output: ShardOutput,
}

/// The final step of a grouping query, run once on the merged groups.
#[derive(Clone, Debug, PartialEq)]
pub struct FinalAggregate {
    pub aggregates: Vec<AggCall>,
    pub having: Option<Expr>,
    pub items: Vec<SelectItem>,
    pub order: Vec<OrderKey>,
}

/// The part of a query that combines the shards' answers.
#[derive(Clone, Debug, PartialEq)]
pub struct MergePlan {
    /// Output columns (None for `SELECT *`: the union of the documents' fields).
    pub columns: Option<Vec<String>>,
    /// Directions of the sort keys rows carry (for the sort-merge).
    pub sort_desc: Vec<bool>,
    pub distinct: bool,
    pub offset: u64,
    pub limit: Option<u64>,
    pub aggregate: Option<FinalAggregate>,
}

/// A planned query.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryPlan {
    pub shard: ShardPlan,
    pub merge: MergePlan,
}

/// Plans a query against a collection's catalog (for several shards, pass a
/// catalog whose `multikey` flags are the union of the shards').
pub fn plan(query: &Query, info: &CollectionInfo) -> QueryPlan {
    let aggregate = query.is_aggregate();
    let sort = if aggregate {
        Vec::new()
    } else {
        normalized_sort(&query.order_by)
    };
    let constraints = query
        .filter
        .as_ref()
        .map(extract_constraints)
        .unwrap_or_default();
    let limited = !aggregate && query.limit.is_some();
    let (access, presorted) = choose_access(info, &constraints, &sort, limited);
    let shard_limit = if aggregate {
        None
    } else {
        query.limit.map(|l| l.saturating_add(query.offset))
    };
    let (output, columns, final_agg) = match (&query.projection, aggregate) {
        (Projection::Items(items), true) => (
            ShardOutput::Partial {
                group_by: query.group_by.clone(),
                aggregates: query.aggregates.clone(),
            },
            Some(items.iter().map(|i| i.name.clone()).collect()),
            Some(FinalAggregate {
                aggregates: query.aggregates.clone(),
                having: query.having.clone(),
                items: items.clone(),
                order: query.order_by.clone(),
            }),
        ),
        (Projection::Items(items), false) => (
            ShardOutput::Project(items.clone()),
            Some(items.iter().map(|i| i.name.clone()).collect()),
            None,
        ),
        (Projection::All, _) => (ShardOutput::Documents, None, None),
    };
    QueryPlan {
        shard: ShardPlan {
            collection: query.collection.clone(),
            access,
            filter: query.filter.clone(),
            sort: sort.clone(),
            presorted: presorted && !aggregate,
            distinct: query.distinct && !aggregate,
            limit: shard_limit,
            output,
        },
        merge: MergePlan {
            columns,
            sort_desc: sort.iter().map(|k| k.desc).collect(),
            distinct: query.distinct,
            offset: query.offset,
            limit: query.limit,
            aggregate: final_agg,
        },
    }
}

/// ORDER BY keys, cut after the first `_id` key, with `_id` appended as the
/// tie-breaker (in the direction of the last key) so the order is total.
pub fn normalized_sort(order_by: &[OrderKey]) -> Vec<OrderKey> {
    let mut out = Vec::new();
    for key in order_by {
        out.push(key.clone());
        if matches!(&key.expr, Expr::Path(p) if p.is_id()) {
            return out;
        }
    }
    let desc = order_by.last().is_some_and(|k| k.desc);
    out.push(OrderKey {
        expr: Expr::path("_id"),
        desc,
    });
    out
}

/// A condition on one field path that an index can serve.
#[derive(Clone, Debug, PartialEq)]
enum Cons {
    /// The value is one of these (sorted, distinct).
    Points(Vec<Value>),
    Range(Bound<Value>, Bound<Value>),
}

/// The index-servable conditions among the WHERE's top-level conjuncts.
fn extract_constraints(filter: &Expr) -> Vec<(String, Cons)> {
    let mut out = Vec::new();
    for c in filter.conjuncts() {
        if let Some((path, cons)) = constraint(c)
            && let Some(fields) = path.fields()
        {
            out.push((fields.join("."), cons));
        }
    }
    out
}

/// The bounds of the type class a range comparison with `v` stays within
/// (None for null, which no range comparison satisfies). Each end is given
/// by the neighbouring class in the index order
/// (`null < false < true < numbers < strings < arrays < objects`): numbers
/// are everything above `true` and below `""`, which holds every number the
/// index can encode, however large or small.
fn class_bounds(v: &Value) -> Option<(Bound<Value>, Bound<Value>)> {
    use Bound::*;
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => (Included(Value::Bool(false)), Included(Value::Bool(true))),
        Value::Int(_) | Value::Float(_) => (
            Excluded(Value::Bool(true)),
            Excluded(Value::String(String::new())),
        ),
        Value::String(_) => (
            Included(Value::String(String::new())),
            Excluded(Value::Array(Vec::new())),
        ),
        Value::Array(_) => (
            Included(Value::Array(Vec::new())),
            Excluded(Value::Object(Default::default())),
        ),
        Value::Object(_) => (Included(Value::Object(Default::default())), Unbounded),
    })
}

/// Nothing can match.
fn nothing() -> Cons {
    Cons::Points(Vec::new())
}

/// What `path op v` allows: `v` itself for `=` (null included: `= NULL`
/// matches a stored null), and for a range operator, from the edge of `v`'s
/// type class to `v`, or from `v` to the other edge. `<>` allows anything.
fn range_to(op: CmpOp, v: &Value) -> Cons {
    use Bound::*;
    let v = v.clone();
    let (lo, hi) = match op {
        CmpOp::Eq => return Cons::Points(vec![v]),
        CmpOp::Ne => return Cons::Range(Unbounded, Unbounded),
        _ => match class_bounds(&v) {
            Some(bounds) => bounds,
            None => return nothing(),
        },
    };
    match op {
        CmpOp::Lt => Cons::Range(lo, Excluded(v)),
        CmpOp::Le => Cons::Range(lo, Included(v)),
        CmpOp::Gt => Cons::Range(Excluded(v), hi),
        _ => Cons::Range(Included(v), hi),
    }
}

fn constraint(e: &Expr) -> Option<(&Path, Cons)> {
    use Bound::*;
    match e {
        Expr::Compare(op, a, b) => {
            let (path, op, v) = match (a.as_ref(), b.as_ref()) {
                (Expr::Path(p), Expr::Literal(v)) => (p, *op, v),
                (Expr::Literal(v), Expr::Path(p)) => (p, op.flip(), v),
                _ => return None,
            };
            if op == CmpOp::Ne {
                return None;
            }
            Some((path, range_to(op, v)))
        }
        Expr::In(x, list) => {
            let Expr::Path(p) = x.as_ref() else {
                return None;
            };
            let mut values = Vec::with_capacity(list.len());
            for item in list {
                match item {
                    Expr::Literal(v) => values.push(v.clone()),
                    _ => return None,
                }
            }
            values.sort();
            values.dedup();
            Some((p, Cons::Points(values)))
        }
        Expr::Between(x, lo, hi) => match (x.as_ref(), lo.as_ref(), hi.as_ref()) {
            (Expr::Path(p), Expr::Literal(lo), Expr::Literal(hi)) => {
                if !same_class(lo, hi) {
                    return Some((p, nothing()));
                }
                Some((
                    p,
                    intersect(range_to(CmpOp::Ge, lo), &range_to(CmpOp::Le, hi)),
                ))
            }
            _ => None,
        },
        Expr::IsNull(x) => match x.as_ref() {
            // Missing sorts before null in an index.
            Expr::Path(p) => Some((p, Cons::Range(Unbounded, Included(Value::Null)))),
            _ => None,
        },
        Expr::Exists(p) => Some((p, Cons::Range(Included(Value::Null), Unbounded))),
        Expr::Not(inner) => match inner.as_ref() {
            Expr::IsNull(x) => match x.as_ref() {
                Expr::Path(p) => Some((p, Cons::Range(Excluded(Value::Null), Unbounded))),
                _ => None,
            },
            Expr::Exists(p) => Some((p, Cons::Range(Unbounded, Excluded(Value::Null)))),
            _ => None,
        },
        Expr::Like {
            expr,
            pattern,
            escape,
        } => {
            let Expr::Path(p) = expr.as_ref() else {
                return None;
            };
            let prefix = LikePattern::new(pattern, *escape).literal_prefix();
            if prefix.is_empty() {
                // Any string: still narrows to strings.
                return Some((
                    p,
                    Cons::Range(
                        Included(Value::String(String::new())),
                        Excluded(Value::Array(Vec::new())),
                    ),
                ));
            }
            let upper = match string_successor(&prefix) {
                Some(s) => Excluded(Value::String(s)),
                None => Excluded(Value::Array(Vec::new())),
            };
            Some((p, Cons::Range(Included(Value::String(prefix)), upper)))
        }
        _ => None,
    }
}

/// The least string greater than every string starting with `prefix`.
fn string_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Intersects the conditions on one field (valid only when the field has one
/// value per document).
fn intersect(a: Cons, b: &Cons) -> Cons {
    match (a, b) {
        (Cons::Points(x), Cons::Points(y)) => {
            Cons::Points(x.into_iter().filter(|v| y.contains(v)).collect())
        }
        (Cons::Points(x), Cons::Range(lo, hi)) => {
            Cons::Points(x.into_iter().filter(|v| in_range(v, lo, hi)).collect())
        }
        (Cons::Range(lo, hi), Cons::Points(y)) => Cons::Points(
            y.iter()
                .filter(|v| in_range(v, &lo, &hi))
                .cloned()
                .collect(),
        ),
        (Cons::Range(lo1, hi1), Cons::Range(lo2, hi2)) => {
            Cons::Range(max_lower(lo1, lo2.clone()), min_upper(hi1, hi2.clone()))
        }
    }
}

fn in_range(v: &Value, lo: &Bound<Value>, hi: &Bound<Value>) -> bool {
    let above = match lo {
        Bound::Included(l) => v >= l,
        Bound::Excluded(l) => v > l,
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(h) => v <= h,
        Bound::Excluded(h) => v < h,
        Bound::Unbounded => true,
    };
    above && below
}

fn max_lower(a: Bound<Value>, b: Bound<Value>) -> Bound<Value> {
    use Bound::*;
    match (a, b) {
        (Unbounded, x) | (x, Unbounded) => x,
        (Included(x), Included(y)) => Included(x.max(y)),
        (Excluded(x), Excluded(y)) => Excluded(x.max(y)),
        (Included(i), Excluded(e)) | (Excluded(e), Included(i)) => {
            if i > e {
                Included(i)
            } else {
                Excluded(e)
            }
        }
    }
}

fn min_upper(a: Bound<Value>, b: Bound<Value>) -> Bound<Value> {
    use Bound::*;
    match (a, b) {
        (Unbounded, x) | (x, Unbounded) => x,
        (Included(x), Included(y)) => Included(x.min(y)),
        (Excluded(x), Excluded(y)) => Excluded(x.min(y)),
        (Included(i), Excluded(e)) | (Excluded(e), Included(i)) => {
            if i < e {
                Included(i)
            } else {
                Excluded(e)
            }
        }
    }
}

/// The condition on one field the index can use.
fn field_constraint(
    constraints: &[(String, Cons)],
    field: &str,
    single_valued: bool,
) -> Option<Cons> {
    let mut on_field = constraints
        .iter()
        .filter(|(f, _)| f == field)
        .map(|(_, c)| c);
    if single_valued {
        let first = on_field.next()?.clone();
        Some(on_field.fold(first, intersect))
    } else {
        // Two conditions may be met by two different array elements: use one,
        // preferring points.
        let all: Vec<&Cons> = on_field.collect();
        all.iter()
            .find(|c| matches!(c, Cons::Points(_)))
            .or_else(|| all.first())
            .map(|c| (*c).clone())
    }
}

/// What an index can do for a query.
struct Candidate<'a> {
    index: &'a IndexInfo,
    eq_fields: usize,
    has_range: bool,
    ranges: Vec<IndexRange>,
    /// Some(reverse) when scanning gives the query's order.
    order: Option<bool>,
}

fn candidate<'a>(
    index: &'a IndexInfo,
    constraints: &[(String, Cons)],
    sort: &[OrderKey],
) -> Candidate<'a> {
    let single_valued = !index.multikey;
    let mut prefixes: Vec<Vec<Value>> = vec![Vec::new()];
    let mut eq_fields = 0;
    let mut range: Option<(Bound<Value>, Bound<Value>)> = None;
    for field in &index.spec.fields {
        match field_constraint(constraints, field, single_valued) {
            Some(Cons::Points(values)) => {
                if prefixes.len() * values.len().max(1) > MAX_RANGES {
                    break;
                }
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| {
                        values.iter().map(move |v| {
                            let mut p = p.clone();
                            p.push(v.clone());
                            p
                        })
                    })
                    .collect();
                eq_fields += 1;
            }
            Some(Cons::Range(lo, hi)) => {
                range = Some((lo, hi));
                break;
            }
            None => break,
        }
    }
    let has_range = range.is_some();
    let ranges: Vec<IndexRange> = prefixes
        .iter()
        .map(|p| match &range {
            None if p.is_empty() => IndexRange::all(),
            None => IndexRange::prefix(p.clone()),
            Some((lo, hi)) => IndexRange {
                lower: extend_bound(p, lo, true),
                upper: extend_bound(p, hi, false),
            },
        })
        .collect();
    let order = if single_valued && ranges.len() == 1 {
        index_order(&index.spec.fields, eq_fields, sort)
    } else {
        None
    };
    Candidate {
        index,
        eq_fields,
        has_range,
        ranges,
        order,
    }
}

/// A bound on the field after an equality prefix.
fn extend_bound(prefix: &[Value], bound: &Bound<Value>, lower: bool) -> Bound<Vec<Value>> {
    let with = |v: &Value| {
        let mut p = prefix.to_vec();
        p.push(v.clone());
        p
    };
    match bound {
        Bound::Included(v) => Bound::Included(with(v)),
        Bound::Excluded(v) => Bound::Excluded(with(v)),
        Bound::Unbounded if prefix.is_empty() => Bound::Unbounded,
        // A prefix bound: every key that starts with the prefix.
        Bound::Unbounded => {
            let _ = lower;
            Bound::Included(prefix.to_vec())
        }
    }
}

/// Whether scanning the index (with its first `eq_fields` fields fixed) gives
/// the order `sort`; Some(reverse) if so. An index orders by its fields then
/// `_id`.
fn index_order(fields: &[String], eq_fields: usize, sort: &[OrderKey]) -> Option<bool> {
    let fixed = &fields[..eq_fields];
    let mut wanted = fields[eq_fields..]
        .iter()
        .map(String::as_str)
        .chain(["_id"]);
    let mut desc = None;
    for key in sort {
        let Expr::Path(p) = &key.expr else {
            return None;
        };
        let name = p.fields()?.join(".");
        if fixed.contains(&name) {
            continue;
        }
        if wanted.next()? != name {
            return None;
        }
        if *desc.get_or_insert(key.desc) != key.desc {
            return None;
        }
    }
    if wanted.next().is_some() {
        return None;
    }
    desc
}

/// Some(desc) when the order is `_id` alone.
pub fn id_order(sort: &[OrderKey]) -> Option<bool> {
    match sort {
        [key] if matches!(&key.expr, Expr::Path(p) if p.is_id()) => Some(key.desc),
        _ => None,
    }
}

fn choose_access(
    info: &CollectionInfo,
    constraints: &[(String, Cons)],
    sort: &[OrderKey],
    limited: bool,
) -> (AccessPath, bool) {
    let by_id = id_order(sort);
    let id_reverse = by_id.unwrap_or(false);
    // 1. `_id` equality or IN: point reads.
    match field_constraint(constraints, "_id", true) {
        Some(Cons::Points(values)) => {
            let ids: Vec<String> = values
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None, // an _id is always a string: nothing else matches
                })
                .collect();
            return (
                AccessPath::IdLookup {
                    ids,
                    reverse: id_reverse,
                },
                by_id.is_some(),
            );
        }
        Some(Cons::Range(lo, hi)) => {
            // Decided below, after the secondary indexes had their chance.
            let id_range = id_bounds(lo, hi);
            if let Some(c) = best_index(info, constraints, sort) {
                return index_access(c);
            }
            return match id_range {
                Some((lower, upper)) => (
                    AccessPath::IdRange {
                        lower,
                        upper,
                        reverse: id_reverse,
                    },
                    by_id.is_some(),
                ),
                None => (
                    AccessPath::IdLookup {
                        ids: Vec::new(),
                        reverse: false,
                    },
                    true,
                ),
            };
        }
        None => {}
    }
    // 2. The secondary index that narrows most.
    if let Some(c) = best_index(info, constraints, sort) {
        return index_access(c);
    }
    // 3. No condition to use, but an index gives the order and a LIMIT lets
    //    the scan stop early.
    if limited && by_id.is_none() {
        for index in &info.indexes {
            let c = candidate(index, &[], sort);
            if c.order.is_some() {
                return index_access(c);
            }
        }
    }
    (
        AccessPath::FullScan {
            reverse: id_reverse,
        },
        by_id.is_some(),
    )
}

fn best_index<'a>(
    info: &'a CollectionInfo,
    constraints: &[(String, Cons)],
    sort: &[OrderKey],
) -> Option<Candidate<'a>> {
    info.indexes
        .iter()
        .map(|index| candidate(index, constraints, sort))
        .filter(|c| c.eq_fields > 0 || c.has_range)
        .max_by_key(|c| {
            (
                c.eq_fields,
                c.has_range,
                c.order.is_some(),
                c.index.spec.unique && c.eq_fields == c.index.spec.fields.len(),
                std::cmp::Reverse(c.ranges.len()),
            )
        })
}

fn index_access(c: Candidate<'_>) -> (AccessPath, bool) {
    (
        AccessPath::IndexScan {
            index: c.index.spec.name.clone(),
            fields: c.index.spec.fields.clone(),
            ranges: c.ranges,
            reverse: c.order.unwrap_or(false),
            single_valued: !c.index.multikey,
        },
        c.order.is_some(),
    )
}

/// `_id` bounds as strings (an `_id` is always a string: a bound of a lower
/// type is no bound, one of a higher type leaves nothing). None: empty.
#[allow(clippy::type_complexity)]
fn id_bounds(lo: Bound<Value>, hi: Bound<Value>) -> Option<(Bound<String>, Bound<String>)> {
    const STRING_RANK: u8 = 3;
    let lower = match lo {
        Bound::Unbounded => Bound::Unbounded,
        // Every `_id` is at least "".
        Bound::Included(Value::String(s)) if s.is_empty() => Bound::Unbounded,
        Bound::Included(Value::String(s)) => Bound::Included(s),
        Bound::Excluded(Value::String(s)) => Bound::Excluded(s),
        Bound::Included(v) | Bound::Excluded(v) if v.type_rank() < STRING_RANK => Bound::Unbounded,
        _ => return None,
    };
    let upper = match hi {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(Value::String(s)) => Bound::Included(s),
        Bound::Excluded(Value::String(s)) => Bound::Excluded(s),
        Bound::Included(v) | Bound::Excluded(v) if v.type_rank() > STRING_RANK => Bound::Unbounded,
        _ => return None,
    };
    Some((lower, upper))
}

// ---- EXPLAIN ------------------------------------------------------------------

fn show_bound(b: &Bound<Vec<Value>>, lower: bool) -> String {
    let values = |v: &Vec<Value>| {
        v.iter()
            .map(|x| x.to_json_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (b, lower) {
        (Bound::Unbounded, true) => "(-inf".into(),
        (Bound::Unbounded, false) => "+inf)".into(),
        (Bound::Included(v), true) => format!("[{}", values(v)),
        (Bound::Included(v), false) => format!("{}]", values(v)),
        (Bound::Excluded(v), true) => format!("({}", values(v)),
        (Bound::Excluded(v), false) => format!("{})", values(v)),
    }
}

fn show_id_bound(b: &Bound<String>, lower: bool) -> String {
    let v = |s: &String| Value::String(s.clone()).to_json_string();
    match (b, lower) {
        (Bound::Unbounded, true) => "(-inf".into(),
        (Bound::Unbounded, false) => "+inf)".into(),
        (Bound::Included(s), true) => format!("[{}", v(s)),
        (Bound::Included(s), false) => format!("{}]", v(s)),
        (Bound::Excluded(s), true) => format!("({}", v(s)),
        (Bound::Excluded(s), false) => format!("{})", v(s)),
    }
}

fn show_keys(keys: &[OrderKey]) -> String {
    keys.iter()
        .map(|k| format!("{} {}", k.expr, if k.desc { "DESC" } else { "ASC" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan as `(step, detail)` lines, what EXPLAIN shows.
pub fn explain(plan: &QueryPlan) -> Vec<(String, String)> {
    let s = &plan.shard;
    let m = &plan.merge;
    let mut out = vec![("collection".to_string(), s.collection.clone())];
    let direction = |r: bool| if r { "backward" } else { "forward" };
    let access = match &s.access {
        AccessPath::FullScan { reverse } => {
            format!("full scan in _id order, {}", direction(*reverse))
        }
        AccessPath::IdLookup { ids, .. } => {
            let ids: Vec<String> = ids
                .iter()
                .map(|i| Value::String(i.clone()).to_json_string())
                .collect();
            format!("_id lookup [{}]", ids.join(", "))
        }
        AccessPath::IdRange {
            lower,
            upper,
            reverse,
        } => format!(
            "_id range {}..{}, {}",
            show_id_bound(lower, true),
            show_id_bound(upper, false),
            direction(*reverse)
        ),
        AccessPath::IndexScan {
            index,
            fields,
            ranges,
            reverse,
            ..
        } => {
            let ranges: Vec<String> = ranges
                .iter()
                .map(|r| {
                    format!(
                        "{}..{}",
                        show_bound(&r.lower, true),
                        show_bound(&r.upper, false)
                    )
                })
                .collect();
            let ranges = if ranges.is_empty() {
                "no range (nothing can match)".to_string()
            } else {
                ranges.join(" ")
            };
            format!(
                "index scan {index} ({}) {ranges}, {}",
                fields.join(", "),
                direction(*reverse)
            )
        }
    };
    out.push(("access".into(), access));
    out.push((
        "filter".into(),
        match &s.filter {
            Some(f) => format!("{f} (pushed to shards, re-checked on every document)"),
            None => "none".into(),
        },
    ));
    match &s.output {
        ShardOutput::Documents => out.push(("projection".into(), "* (whole documents)".into())),
        ShardOutput::Project(items) => out.push((
            "projection".into(),
            format!(
                "{} (pushed to shards)",
                items
                    .iter()
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        ShardOutput::Partial {
            group_by,
            aggregates,
        } => {
            let aggs: Vec<String> = aggregates.iter().map(|a| a.to_string()).collect();
            let groups: Vec<String> = group_by.iter().map(|g| g.to_string()).collect();
            out.push((
                "aggregate".into(),
                format!(
                    "partial {} per shard{}; final merge",
                    aggs.join(", "),
                    if groups.is_empty() {
                        String::new()
                    } else {
                        format!(" grouped by {}", groups.join(", "))
                    }
                ),
            ));
        }
    }
    if !s.sort.is_empty() {
        out.push((
            "order".into(),
            format!(
                "{} ({})",
                show_keys(&s.sort),
                if s.presorted {
                    "from the access path"
                } else {
                    "sorted on each shard"
                }
            ),
        ));
    }
    if let Some(agg) = &m.aggregate
        && !agg.order.is_empty()
    {
        out.push((
            "order".into(),
            format!("{} (after aggregation)", show_keys(&agg.order)),
        ));
    }
    if s.distinct || m.distinct {
        out.push(("distinct".into(), "on shards and after merge".into()));
    }
    if let Some(limit) = s.limit {
        out.push((
            "limit".into(),
            format!(
                "{limit} per shard{}",
                if s.presorted { " (stops early)" } else { "" }
            ),
        ));
    }
    let mut merge = vec!["sort-merge of shard results".to_string()];
    if m.offset > 0 {
        merge.push(format!("offset {}", m.offset));
    }
    if let Some(l) = m.limit {
        merge.push(format!("limit {l}"));
    }
    out.push(("merge".into(), merge.join(", ")));
    out
}
