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
//!
//! - this file: the plan's types and `plan()`;
//! - `constraints.rs`: what the WHERE says about each field (ranges, classes);
//! - `access.rs`: candidate indexes, the access path and its bounds;
//! - `explain.rs`: EXPLAIN's rendering.

mod access;
mod constraints;
mod explain;

use std::ops::Bound;

use bincode::{Decode, Encode};

use stratosdb_engine::{CollectionInfo, IndexRange};

use crate::ast::{AggCall, Expr, OrderKey, Projection, Query, SelectItem};

/// Most index ranges one scan may take (IN lists over compound indexes multiply).
const MAX_RANGES: usize = 256;

/// How a shard finds candidate documents.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
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
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
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
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
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
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct FinalAggregate {
    pub aggregates: Vec<AggCall>,
    pub having: Option<Expr>,
    pub items: Vec<SelectItem>,
    pub order: Vec<OrderKey>,
}

/// The part of a query that combines the shards' answers.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
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
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
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

pub use access::id_order;
use access::*;
use constraints::*;
pub use explain::explain;
