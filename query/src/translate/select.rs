//! SELECT: the projection with its aggregates, grouping, ORDER BY and LIMIT.

use sqlparser::ast as sql;
use stratosdb_engine::Value;
use stratosdb_engine::proof::PathSegment;

use crate::ast::{Expr, OrderKey, Path, Projection, Query, SelectItem};
use crate::error::{QueryError, Result};
use crate::tree::Recursion;

use super::expression::{Aggs, expr, path_of};
use super::*;

// ---- SELECT ---------------------------------------------------------------

/// Translates a SELECT.
pub fn query(q: &sql::Query) -> Result<Query> {
    if q.with.is_some() {
        return unsupported("WITH");
    }
    if q.fetch.is_some() || !q.locks.is_empty() {
        return unsupported("FETCH / FOR UPDATE");
    }
    let select = match q.body.as_ref() {
        sql::SetExpr::Select(s) => s,
        sql::SetExpr::Query(_) => return unsupported("subqueries"),
        sql::SetExpr::SetOperation { op, .. } => return unsupported(op),
        other => return unsupported(format!("query body {other}")),
    };
    let collection = match select.from.as_slice() {
        [one] => table_of(one)?,
        [] => return Err(QueryError::Invalid("SELECT needs FROM collection".into())),
        _ => return unsupported("several collections in FROM (joins)"),
    };
    if select.top.is_some()
        || select.into.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.named_window.is_empty()
        || select.qualify.is_some()
        || !select.cluster_by.is_empty()
        || !select.sort_by.is_empty()
    {
        return unsupported("a SELECT clause outside the dialect");
    }
    let distinct = match &select.distinct {
        None | Some(sql::Distinct::All) => false,
        Some(sql::Distinct::Distinct) => true,
        Some(other) => return unsupported(other),
    };
    let mut aggs = Vec::new();
    let filter = select
        .selection
        .as_ref()
        .map(|e| expr(e, &mut Aggs::Refuse("WHERE")))
        .transpose()?;
    let group_by: Vec<Expr> = match &select.group_by {
        sql::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs
            .iter()
            .map(|e| expr(e, &mut Aggs::Refuse("GROUP BY")))
            .collect::<Result<_>>()?,
        other => return unsupported(other),
    };

    // Projection, with aggregate calls collected.
    let mut items = Vec::new();
    let mut star = false;
    if select.projection.is_empty() {
        return Err(QueryError::Syntax(
            "SELECT needs a column list or *, found nothing before FROM".into(),
        ));
    }
    for item in &select.projection {
        match item {
            sql::SelectItem::Wildcard(_) => star = true,
            sql::SelectItem::UnnamedExpr(e) => items.push(SelectItem {
                expr: expr(e, &mut Aggs::Collect(&mut aggs))?,
                name: column_name(e),
            }),
            sql::SelectItem::ExprWithAlias { expr: e, alias } => items.push(SelectItem {
                expr: expr(e, &mut Aggs::Collect(&mut aggs))?,
                name: alias.value.clone(),
            }),
            other => return unsupported(format!("select item {other}")),
        }
    }
    if star && !items.is_empty() {
        return unsupported("* together with other columns");
    }
    let having = match &select.having {
        Some(h) => Some(with_aliases(
            expr(h, &mut Aggs::Collect(&mut aggs))?,
            &items,
        )),
        None => None,
    };
    let mut order_by = Vec::new();
    if let Some(ob) = &q.order_by {
        let sql::OrderByKind::Expressions(keys) = &ob.kind else {
            return unsupported("ORDER BY ALL");
        };
        for key in keys {
            if key.options.nulls_first.is_some() || key.with_fill.is_some() {
                return unsupported("NULLS FIRST/LAST (missing and null always sort first)");
            }
            let e = with_aliases(expr(&key.expr, &mut Aggs::Collect(&mut aggs))?, &items);
            order_by.push(OrderKey {
                expr: e,
                desc: match &key.options.sort {
                    None | Some(sql::OrderBySort::Asc) => false,
                    Some(sql::OrderBySort::Desc) => true,
                    Some(_) => return unsupported("ORDER BY ... USING"),
                },
            });
        }
    }
    let (offset, limit) = limit_clause(q.limit_clause.as_ref())?;

    let query = Query {
        collection,
        projection: if star {
            Projection::All
        } else {
            Projection::Items(items)
        },
        filter,
        group_by,
        aggregates: aggs,
        having,
        order_by,
        distinct,
        offset,
        limit,
    };
    if query.having.is_some() && !query.is_aggregate() {
        return Err(QueryError::Invalid(
            "HAVING needs GROUP BY or an aggregate function".into(),
        ));
    }
    if query.is_aggregate() {
        return bind_groups(query);
    }
    Ok(query)
}

/// Replaces a one-segment path that names a select item's alias by the
/// item's expression (in HAVING and ORDER BY, an alias wins over a field).
fn with_aliases(e: Expr, items: &[SelectItem]) -> Expr {
    let alias = |p: &Path| match p.segments() {
        [PathSegment::Field(f)] => items.iter().find(|i| &i.name == f).map(|i| i.expr.clone()),
        _ => None,
    };
    // Bottom-up: a substituted item is not visited again.
    let rewritten = e.transform_up(&mut |node| {
        Ok::<_, std::convert::Infallible>(match node {
            Expr::Path(p) => alias(&p).unwrap_or(Expr::Path(p)),
            other => other,
        })
    });
    match rewritten {
        Ok(e) => e,
        Err(never) => match never {},
    }
}

/// Rewrites projection, HAVING and ORDER BY of a grouping query so they read
/// the group: GROUP BY expressions become [`Expr::GroupKey`]; any path left is
/// an error (it is neither grouped nor aggregated).
fn bind_groups(mut q: Query) -> Result<Query> {
    if matches!(q.projection, Projection::All) {
        return Err(QueryError::Invalid(
            "SELECT * cannot be used with GROUP BY or aggregates; name the columns".into(),
        ));
    }
    let groups = q.group_by.clone();
    if let Projection::Items(items) = &mut q.projection {
        for item in items.iter_mut() {
            item.expr = bind(&item.expr, &groups)?;
        }
    }
    if let Some(h) = &q.having {
        q.having = Some(bind(h, &groups)?);
    }
    for key in &mut q.order_by {
        key.expr = bind(&key.expr, &groups)?;
    }
    Ok(q)
}

fn bind(e: &Expr, groups: &[Expr]) -> Result<Expr> {
    e.clone().transform_down(&mut |node| {
        if let Some(i) = groups.iter().position(|g| *g == node) {
            return Ok((Expr::GroupKey(i), Recursion::Skip));
        }
        match node {
            Expr::Path(p) | Expr::Exists(p) => Err(QueryError::Invalid(format!(
                "{p} must appear in GROUP BY or be used in an aggregate function"
            ))),
            other => Ok((other, Recursion::Continue)),
        }
    })
}

fn limit_clause(clause: Option<&sql::LimitClause>) -> Result<(u64, Option<u64>)> {
    let count = |e: &sql::Expr, what: &str| -> Result<u64> {
        match expr(e, &mut Aggs::Refuse(what))? {
            Expr::Literal(Value::Int(n)) if n >= 0 => Ok(n as u64),
            other => Err(QueryError::Invalid(format!(
                "{what} must be a non-negative integer, not {other}"
            ))),
        }
    };
    match clause {
        None => Ok((0, None)),
        Some(sql::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return unsupported("LIMIT BY");
            }
            let offset = offset
                .as_ref()
                .map(|o| count(&o.value, "OFFSET"))
                .transpose()?
                .unwrap_or(0);
            let limit = limit.as_ref().map(|l| count(l, "LIMIT")).transpose()?;
            Ok((offset, limit))
        }
        Some(sql::LimitClause::OffsetCommaLimit { offset, limit }) => {
            Ok((count(offset, "OFFSET")?, Some(count(limit, "LIMIT")?)))
        }
    }
}

/// The column name of an unaliased select item: the path as written
/// (`address.city`, `tags[0]`), or the expression's text.
fn column_name(e: &sql::Expr) -> String {
    match path_of(e) {
        Ok(Some(p)) => p.to_string(),
        _ => e.to_string(),
    }
}
