//! Choosing the access path: candidate indexes, their bounds and order, the
//! `_id` range, and the best of them.

use std::ops::Bound;

use stratosdb_engine::{CollectionInfo, IndexInfo, IndexRange, Value};

use crate::ast::{Expr, OrderKey};

use super::*;

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

pub(super) fn choose_access(
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
