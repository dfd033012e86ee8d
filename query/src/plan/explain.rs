//! EXPLAIN: the plan rendered as (step, detail) rows.

use std::ops::Bound;

use stratosdb_engine::Value;

use crate::ast::OrderKey;

use super::*;

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
