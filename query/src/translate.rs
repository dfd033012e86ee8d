//! sqlparser's AST to the crate's own ([`crate::ast`]). This is where the
//! dialect is decided: what is a path, which functions exist, what a
//! statement may contain. Anything outside the dialect is refused by name.

use sqlparser::ast as sql;
use stratosdb_engine::proof::PathSegment;
use stratosdb_engine::{IndexSpec, Value};

use crate::ast::{
    AggCall, AggFunc, ArithOp, CmpOp, Expr, OrderKey, Path, Projection, Query, ScalarFunc,
    SelectItem, Statement,
};
use crate::error::{QueryError, Result};
use crate::eval::{Ctx, eval};
use crate::tree::Recursion;

/// How deeply an expression may nest. Chains of one operator (`a AND b AND
/// ...`, `1 + 2 - 3 ...`, `a || b || ...`) are flat and do not count, so a
/// WHERE of thousands of terms is fine; what nests deeper than this (the
/// sqlparser itself stops parentheses at 50) is refused with
/// [`QueryError::LimitExceeded`] rather than risking the stack.
pub const MAX_EXPR_DEPTH: usize = 64;

fn unsupported<T>(what: impl std::fmt::Display) -> Result<T> {
    Err(QueryError::Unsupported(what.to_string()))
}

/// Translates one parsed SQL statement.
pub fn statement(stmt: &sql::Statement) -> Result<Statement> {
    match stmt {
        sql::Statement::Query(q) => Ok(Statement::Select(query(q)?)),
        sql::Statement::Explain {
            statement, analyze, ..
        } => {
            if *analyze {
                return unsupported("EXPLAIN ANALYZE");
            }
            match statement.as_ref() {
                sql::Statement::Query(q) => Ok(Statement::Explain(query(q)?)),
                other => unsupported(format!("EXPLAIN of {other}: only SELECT can be explained")),
            }
        }
        sql::Statement::Insert(insert) => self::insert(insert),
        sql::Statement::Update(update) => self::update(update),
        sql::Statement::Delete(delete) => self::delete(delete),
        sql::Statement::CreateIndex(ci) => create_index(ci),
        sql::Statement::Drop {
            object_type: sql::ObjectType::Index,
            names,
            ..
        } => {
            let [name] = names.as_slice() else {
                return unsupported("DROP INDEX of several indexes at once");
            };
            let parts = object_name(name)?;
            match parts.as_slice() {
                [index] => Ok(Statement::DropIndex {
                    collection: None,
                    name: index.clone(),
                }),
                [collection, index] => Ok(Statement::DropIndex {
                    collection: Some(collection.clone()),
                    name: index.clone(),
                }),
                _ => unsupported(format!("index name {name}")),
            }
        }
        sql::Statement::Drop {
            object_type: sql::ObjectType::Table,
            ..
        } => unsupported("DROP TABLE: write DROP COLLECTION name"),
        sql::Statement::CreateTable(_) => unsupported("CREATE TABLE: write CREATE COLLECTION name"),
        other => {
            let text = other.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            unsupported(format!("statement {head}"))
        }
    }
}

fn object_name(name: &sql::ObjectName) -> Result<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            sql::ObjectNamePart::Identifier(id) => Ok(id.value.clone()),
            other => unsupported(format!("name {other}")),
        })
        .collect()
}

fn collection_name(name: &sql::ObjectName) -> Result<String> {
    match object_name(name)?.as_slice() {
        [one] => Ok(one.clone()),
        _ => unsupported(format!("qualified collection name {name}")),
    }
}

fn table_of(twj: &sql::TableWithJoins) -> Result<String> {
    if !twj.joins.is_empty() {
        return unsupported("JOIN");
    }
    match &twj.relation {
        sql::TableFactor::Table {
            name, alias, args, ..
        } => {
            if alias.is_some() {
                return unsupported("collection aliases");
            }
            if args.is_some() {
                return unsupported("table functions");
            }
            collection_name(name)
        }
        other => unsupported(format!("FROM {other}")),
    }
}

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

// ---- expressions ------------------------------------------------------------

/// Where aggregate calls may appear, and where they are collected.
enum Aggs<'a> {
    Collect(&'a mut Vec<AggCall>),
    Refuse(&'a str),
}

/// Words that start a clause. sqlparser reads one where an expression is due
/// as a field name (`UPDATE c SET age = WHERE`, `SELECT FROM t`); unquoted, it
/// is a mistake, not a field: a field of that name is written quoted.
const CLAUSE_KEYWORDS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "SET", "GROUP", "ORDER", "HAVING", "LIMIT", "OFFSET", "VALUES",
    "UNION",
];

fn refuse_clause_keyword(id: &sql::Ident) -> Result<()> {
    if id.quote_style.is_none()
        && CLAUSE_KEYWORDS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&id.value))
    {
        return Err(QueryError::Syntax(format!(
            "expected an expression, found the keyword {} (write \"{}\" for a field of that name)",
            id.value.to_uppercase(),
            id.value
        )));
    }
    Ok(())
}

/// A path expression (`a`, `a.b.c`, `tags[0]`, `items[1].sku`), if `e` is one.
fn path_of(e: &sql::Expr) -> Result<Option<Path>> {
    Ok(Some(Path::new(match e {
        sql::Expr::Identifier(id) => {
            refuse_clause_keyword(id)?;
            vec![PathSegment::Field(id.value.clone())]
        }
        sql::Expr::CompoundIdentifier(ids) => ids
            .iter()
            .map(|i| PathSegment::Field(i.value.clone()))
            .collect(),
        sql::Expr::CompoundFieldAccess { root, access_chain } => {
            let Some(root) = path_of(root)? else {
                return Ok(None);
            };
            let mut segments = root.segments().to_vec();
            for access in access_chain {
                segments.push(match access {
                    sql::AccessExpr::Dot(sql::Expr::Identifier(id)) => {
                        PathSegment::Field(id.value.clone())
                    }
                    sql::AccessExpr::Subscript(sql::Subscript::Index { index }) => match index {
                        sql::Expr::Value(v) => match &v.value {
                            sql::Value::Number(n, _) => {
                                PathSegment::Index(n.parse().map_err(|_| {
                                    QueryError::Invalid(format!(
                                        "array index {n} must be a non-negative integer"
                                    ))
                                })?)
                            }
                            sql::Value::SingleQuotedString(s) => PathSegment::Field(s.clone()),
                            other => return unsupported(format!("subscript {other}")),
                        },
                        other => return unsupported(format!("subscript [{other}]")),
                    },
                    other => return unsupported(format!("field access {other}")),
                });
            }
            segments
        }
        _ => return Ok(None),
    })))
}

fn literal(v: &sql::Value) -> Result<Value> {
    Ok(match v {
        sql::Value::Number(n, _) => {
            if let Ok(i) = n.parse::<i64>() {
                Value::Int(i)
            } else {
                let f: f64 = n
                    .parse()
                    .map_err(|_| QueryError::InvalidValue(format!("number {n}")))?;
                if !n.contains(['.', 'e', 'E']) {
                    return Err(QueryError::InvalidValue(format!(
                        "integer {n} does not fit in 64 bits"
                    )));
                }
                Value::float(f).map_err(|e| QueryError::InvalidValue(e.to_string()))?
            }
        }
        sql::Value::SingleQuotedString(s)
        | sql::Value::EscapedStringLiteral(s)
        | sql::Value::TripleSingleQuotedString(s)
        | sql::Value::NationalStringLiteral(s) => Value::String(s.clone()),
        sql::Value::Boolean(b) => Value::Bool(*b),
        sql::Value::Null => Value::Null,
        other => return unsupported(format!("literal {other}")),
    })
}

/// Translates a whole expression and folds its constant parts (`-5`,
/// `2 * 3`, `LOWER('A')`) so the planner sees literals.
fn expr(e: &sql::Expr, aggs: &mut Aggs<'_>) -> Result<Expr> {
    fold_constants(expr_at(e, aggs, 0)?)
}

/// Replaces every constant subexpression by its value (bottom-up, so a node
/// whose children all folded is folded in turn).
pub fn fold_constants(e: Expr) -> Result<Expr> {
    e.transform_up(&mut |node| {
        if matches!(node, Expr::Literal(_))
            || !node
                .children()
                .iter()
                .all(|c| matches!(c, Expr::Literal(_)))
            || !node.is_constant()
        {
            return Ok(node);
        }
        Ok(match eval(&node, Ctx::default())? {
            Some(v) => Expr::Literal(v),
            None => node,
        })
    })
}

fn too_deep() -> QueryError {
    QueryError::LimitExceeded {
        what: "expression nesting depth".into(),
        limit: MAX_EXPR_DEPTH,
    }
}

/// A run of left-associative operators that becomes one n-ary node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chain {
    And,
    Or,
    Arith,
    Concat,
}

fn chain_of(op: &sql::BinaryOperator) -> Option<Chain> {
    use sql::BinaryOperator as B;
    Some(match op {
        B::And => Chain::And,
        B::Or => Chain::Or,
        B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => Chain::Arith,
        B::StringConcat => Chain::Concat,
        _ => return None,
    })
}

fn arith_op(op: &sql::BinaryOperator) -> Option<ArithOp> {
    use sql::BinaryOperator as B;
    Some(match op {
        B::Plus => ArithOp::Add,
        B::Minus => ArithOp::Sub,
        B::Multiply => ArithOp::Mul,
        B::Divide => ArithOp::Div,
        B::Modulo => ArithOp::Mod,
        _ => return None,
    })
}

/// Translates `e`, the head of a chain of `kind`, without recursing down its
/// left spine: sqlparser builds `a + b + c` as `(a + b) + c`, thousands deep
/// for a long chain, and that spine is walked here in a loop.
fn chain(e: &sql::Expr, kind: Chain, aggs: &mut Aggs<'_>, depth: usize) -> Result<Expr> {
    let mut spine: Vec<(&sql::BinaryOperator, &sql::Expr)> = Vec::new();
    let mut cur = e;
    loop {
        match cur {
            sql::Expr::BinaryOp { left, op, right } if chain_of(op) == Some(kind) => {
                spine.push((op, right));
                cur = left;
            }
            // `(a + b) + c` is the same left fold as `a + b + c`.
            sql::Expr::Nested(inner) if matches!(inner.as_ref(), sql::Expr::BinaryOp { op, .. } if chain_of(op) == Some(kind)) =>
            {
                cur = inner;
            }
            _ => break,
        }
    }
    let first = expr_at(cur, aggs, depth + 1)?;
    let mut operands = Vec::with_capacity(spine.len() + 1);
    operands.push((None, first));
    for (op, right) in spine.into_iter().rev() {
        operands.push((Some(op), expr_at(right, aggs, depth + 1)?));
    }
    let exprs = || operands.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();
    Ok(match kind {
        Chain::And => Expr::and_all(exprs()),
        Chain::Or => Expr::or_all(exprs()),
        Chain::Concat => Expr::Call(ScalarFunc::Concat, exprs()),
        Chain::Arith => {
            let mut iter = operands.into_iter();
            let Some((_, first)) = iter.next() else {
                return Err(QueryError::Invalid("empty arithmetic chain".into()));
            };
            let rest = iter
                .map(|(op, e)| match op.and_then(arith_op) {
                    Some(op) => Ok((op, e)),
                    None => unsupported("operator in an arithmetic chain"),
                })
                .collect::<Result<Vec<_>>>()?;
            Expr::Arith(Box::new(first), rest)
        }
    })
}

fn expr_at(e: &sql::Expr, aggs: &mut Aggs<'_>, depth: usize) -> Result<Expr> {
    if depth > MAX_EXPR_DEPTH {
        return Err(too_deep());
    }
    if let Some(p) = path_of(e)? {
        return Ok(Expr::Path(p));
    }
    let d = depth + 1;
    let mut sub = |x: &sql::Expr| expr_at(x, aggs, d).map(Box::new);
    Ok(match e {
        sql::Expr::Value(v) => Expr::Literal(literal(&v.value)?),
        sql::Expr::Nested(x) => return expr_at(x, aggs, d),
        sql::Expr::UnaryOp { op, expr: x } => match op {
            sql::UnaryOperator::Minus => Expr::Neg(sub(x)?),
            sql::UnaryOperator::Plus => return expr_at(x, aggs, d),
            sql::UnaryOperator::Not => Expr::Not(sub(x)?),
            other => return unsupported(format!("operator {other}")),
        },
        sql::Expr::BinaryOp { op, .. } if chain_of(op).is_some() => {
            let Some(kind) = chain_of(op) else {
                return unsupported(format!("operator {op}"));
            };
            return chain(e, kind, aggs, depth);
        }
        sql::Expr::BinaryOp { left, op, right } => {
            let l = sub(left)?;
            let r = sub(right)?;
            use sql::BinaryOperator as B;
            let cmp = match op {
                B::Eq => CmpOp::Eq,
                B::NotEq => CmpOp::Ne,
                B::Lt => CmpOp::Lt,
                B::LtEq => CmpOp::Le,
                B::Gt => CmpOp::Gt,
                B::GtEq => CmpOp::Ge,
                other => return unsupported(format!("operator {other}")),
            };
            Expr::Compare(cmp, l, r)
        }
        sql::Expr::IsNull(x) => Expr::IsNull(sub(x)?),
        sql::Expr::IsNotNull(x) => Expr::Not(Box::new(Expr::IsNull(sub(x)?))),
        sql::Expr::In {
            expr: x,
            target,
            negated,
            ..
        } => {
            let sql::InTarget::List(list) = target else {
                return unsupported("IN with a subquery");
            };
            let x = sub(x)?;
            let list = list
                .iter()
                .map(|i| expr_at(i, aggs, d))
                .collect::<Result<_>>()?;
            negate_if(*negated, Expr::In(x, list))
        }
        sql::Expr::Between {
            expr: x,
            negated,
            low,
            high,
        } => {
            let b = Expr::Between(sub(x)?, sub(low)?, sub(high)?);
            negate_if(*negated, b)
        }
        sql::Expr::Like {
            negated,
            any,
            expr: x,
            pattern,
            escape_char,
        } => {
            if *any {
                return unsupported("LIKE ANY");
            }
            let pattern = match fold_constants(expr_at(pattern, aggs, d)?)? {
                Expr::Literal(Value::String(s)) => s,
                other => {
                    return Err(QueryError::Invalid(format!(
                        "the pattern of LIKE must be a string literal, not {other}"
                    )));
                }
            };
            let escape = match escape_char {
                None => None,
                Some(c) => match fold_constants(expr_at(c, aggs, d)?)? {
                    Expr::Literal(Value::String(s)) if s.chars().count() == 1 => s.chars().next(),
                    other => {
                        return Err(QueryError::Invalid(format!(
                            "ESCAPE must be one character, not {other}"
                        )));
                    }
                },
            };
            let like = Expr::Like {
                expr: Box::new(expr_at(x, aggs, d)?),
                pattern,
                escape,
            };
            negate_if(*negated, like)
        }
        sql::Expr::Function(f) => function(f, aggs, d)?,
        sql::Expr::Substring {
            expr: x,
            substring_from,
            substring_for,
            ..
        } => {
            let mut args = vec![expr_at(x, aggs, d)?];
            match substring_from {
                Some(from) => args.push(expr_at(from, aggs, d)?),
                None => ScalarFunc::Substr.check_arity(1)?,
            }
            if let Some(len) = substring_for {
                args.push(expr_at(len, aggs, d)?);
            }
            Expr::Call(ScalarFunc::Substr, args)
        }
        sql::Expr::Trim {
            expr: x,
            trim_where,
            trim_what,
            trim_characters,
        } => {
            if trim_where.is_some() || trim_what.is_some() || trim_characters.is_some() {
                return unsupported("TRIM with BOTH/LEADING/TRAILING or characters");
            }
            Expr::Call(ScalarFunc::Trim, vec![expr_at(x, aggs, d)?])
        }
        sql::Expr::Ceil { expr: x, field } | sql::Expr::Floor { expr: x, field } => {
            if !matches!(
                field,
                sql::CeilFloorKind::DateTimeField(sql::DateTimeField::NoDateTime)
            ) {
                return unsupported(format!("{e}"));
            }
            let func = if matches!(e, sql::Expr::Ceil { .. }) {
                ScalarFunc::Ceil
            } else {
                ScalarFunc::Floor
            };
            Expr::Call(func, vec![expr_at(x, aggs, d)?])
        }
        other => return unsupported(format!("expression {other}")),
    })
}

fn negate_if(negated: bool, e: Expr) -> Expr {
    if negated { Expr::negation(e) } else { e }
}

/// The plain arguments of a call (no `*`, no DISTINCT, no FILTER/OVER).
fn plain_args<'f>(f: &'f sql::Function, name: &str) -> Result<Vec<&'f sql::FunctionArg>> {
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return unsupported(format!("{name} with FILTER/OVER/WITHIN GROUP"));
    }
    match &f.args {
        sql::FunctionArguments::List(list) => {
            if list.duplicate_treatment == Some(sql::DuplicateTreatment::Distinct) {
                return unsupported(format!("{name}(DISTINCT ...)"));
            }
            if !list.clauses.is_empty() {
                return unsupported(format!("clauses in the arguments of {name}"));
            }
            Ok(list.args.iter().collect())
        }
        sql::FunctionArguments::None => Ok(Vec::new()),
        sql::FunctionArguments::Subquery(_) => {
            unsupported(format!("a subquery as {name}'s argument"))
        }
    }
}

fn function(f: &sql::Function, aggs: &mut Aggs<'_>, depth: usize) -> Result<Expr> {
    let name = f.name.to_string().to_ascii_uppercase();
    let func = match name.as_str() {
        "COUNT" => AggFunc::Count,
        "SUM" => AggFunc::Sum,
        "AVG" => AggFunc::Avg,
        "MIN" => AggFunc::Min,
        "MAX" => AggFunc::Max,
        _ => return scalar_call(f, aggs, depth),
    };
    let args = plain_args(f, &name)?;
    let [arg] = args.as_slice() else {
        return Err(QueryError::Invalid(format!(
            "{name} takes one argument, not {}",
            args.len()
        )));
    };
    let call = match arg {
        sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Wildcard) if func == AggFunc::Count => {
            AggCall {
                func: AggFunc::CountRows,
                arg: None,
            }
        }
        sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(x)) => {
            let arg = fold_constants(expr_at(
                x,
                &mut Aggs::Refuse("an aggregate's argument"),
                depth,
            )?)?;
            AggCall {
                func,
                arg: Some(arg),
            }
        }
        other => return unsupported(format!("argument {other} of {name}")),
    };
    match aggs {
        Aggs::Refuse(place) => Err(QueryError::Invalid(format!(
            "aggregate function {name} is not allowed in {place}"
        ))),
        Aggs::Collect(list) => {
            let i = match list.iter().position(|c| *c == call) {
                Some(i) => i,
                None => {
                    list.push(call);
                    list.len() - 1
                }
            };
            Ok(Expr::Aggregate(i))
        }
    }
}

/// A scalar function call: `LOWER(name)`, `COALESCE(a, b, 0)`.
fn scalar_call(f: &sql::Function, aggs: &mut Aggs<'_>, depth: usize) -> Result<Expr> {
    let Some(func) = ScalarFunc::from_name(&f.name.to_string()) else {
        return Err(QueryError::UnknownFunction(f.name.to_string()));
    };
    let args = plain_args(f, func.name())?
        .into_iter()
        .map(|a| match a {
            sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(x)) => expr_at(x, aggs, depth),
            other => unsupported(format!("argument {other} of {}", func.name())),
        })
        .collect::<Result<Vec<_>>>()?;
    func.check_arity(args.len())?;
    Ok(Expr::Call(func, args))
}

// ---- writes -------------------------------------------------------------------

fn insert(ins: &sql::Insert) -> Result<Statement> {
    let sql::TableObject::TableName(name) = &ins.table else {
        return unsupported("INSERT INTO a table function");
    };
    let collection = collection_name(name)?;
    if ins.on.is_some() || ins.returning.is_some() || !ins.assignments.is_empty() {
        return unsupported("ON CONFLICT / RETURNING / SET in INSERT");
    }
    let Some(source) = &ins.source else {
        return Err(QueryError::Invalid("INSERT needs VALUES".into()));
    };
    let sql::SetExpr::Values(values) = source.body.as_ref() else {
        return unsupported("INSERT ... SELECT");
    };
    let columns: Vec<Path> = ins
        .columns
        .iter()
        .map(|c| {
            Ok(Path::new(
                object_name(c)?
                    .into_iter()
                    .map(PathSegment::Field)
                    .collect(),
            ))
        })
        .collect::<Result<_>>()?;
    let mut docs = Vec::with_capacity(values.rows.len());
    for (n, row) in values.rows.iter().enumerate() {
        let row = &row.content;
        let mut vals = Vec::with_capacity(row.len());
        for e in row {
            let x = expr(e, &mut Aggs::Refuse("VALUES"))?;
            match x {
                Expr::Literal(v) => vals.push(v),
                other => {
                    return Err(QueryError::Invalid(format!(
                        "VALUES must hold constants, not {other}"
                    )));
                }
            }
        }
        if columns.is_empty() {
            // The document form: one JSON object per row.
            let [Value::String(text)] = vals.as_slice() else {
                return Err(QueryError::InvalidValue(format!(
                    "row {}: without a column list, each row is one JSON document as a string ('{{...}}')",
                    n + 1
                )));
            };
            let doc = Value::from_json_str(text)
                .map_err(|e| QueryError::InvalidValue(format!("row {}: {e}", n + 1)))?;
            if !matches!(doc, Value::Object(_)) {
                return Err(QueryError::InvalidValue(format!(
                    "row {}: a document must be a JSON object, not {}",
                    n + 1,
                    doc.type_name()
                )));
            }
            docs.push(doc);
        } else {
            if vals.len() != columns.len() {
                return Err(QueryError::Invalid(format!(
                    "row {} has {} values for {} columns",
                    n + 1,
                    vals.len(),
                    columns.len()
                )));
            }
            let mut doc = Value::Object(Default::default());
            for (path, v) in columns.iter().zip(vals) {
                set_path(&mut doc, path, v)?;
            }
            docs.push(doc);
        }
    }
    Ok(Statement::Insert { collection, docs })
}

/// Sets a field path in a document being built, creating objects on the way.
fn set_path(doc: &mut Value, path: &Path, v: Value) -> Result<()> {
    let Some(fields) = path.fields() else {
        return unsupported(format!(
            "column {path}: array elements in an INSERT column list"
        ));
    };
    let mut cur = doc;
    for (i, f) in fields.iter().enumerate() {
        let Value::Object(map) = cur else {
            return Err(QueryError::Invalid(format!(
                "column {path} goes through a value that is not an object"
            )));
        };
        if i + 1 == fields.len() {
            if map.insert(f.clone(), v).is_some() {
                return Err(QueryError::Invalid(format!("column {path} is given twice")));
            }
            return Ok(());
        }
        cur = map
            .entry(f.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

fn update(u: &sql::Update) -> Result<Statement> {
    let collection = table_of(&u.table)?;
    if u.from.is_some() || u.returning.is_some() || !u.order_by.is_empty() || u.limit.is_some() {
        return unsupported("UPDATE ... FROM / RETURNING / ORDER BY / LIMIT");
    }
    let mut sets = Vec::new();
    for a in &u.assignments {
        let sql::AssignmentTarget::ColumnName(name) = &a.target else {
            return unsupported("tuple assignment");
        };
        let path = Path::new(
            object_name(name)?
                .into_iter()
                .map(PathSegment::Field)
                .collect(),
        );
        if path.is_id() {
            return Err(QueryError::Invalid("_id cannot be changed".into()));
        }
        let value = expr(&a.value, &mut Aggs::Refuse("SET"))?;
        sets.push((path, value));
    }
    let filter = u
        .selection
        .as_ref()
        .map(|e| expr(e, &mut Aggs::Refuse("WHERE")))
        .transpose()?;
    Ok(Statement::Update {
        collection,
        sets,
        filter,
    })
}

fn delete(d: &sql::Delete) -> Result<Statement> {
    if !d.tables.is_empty() || d.using.is_some() || d.returning.is_some() || d.limit.is_some() {
        return unsupported("DELETE with USING / RETURNING / LIMIT");
    }
    let (sql::FromTable::WithFromKeyword(from) | sql::FromTable::WithoutKeyword(from)) = &d.from;
    let collection = match from.as_slice() {
        [one] => table_of(one)?,
        _ => return unsupported("DELETE from several collections"),
    };
    let filter = d
        .selection
        .as_ref()
        .map(|e| expr(e, &mut Aggs::Refuse("WHERE")))
        .transpose()?;
    Ok(Statement::Delete { collection, filter })
}

fn create_index(ci: &sql::CreateIndex) -> Result<Statement> {
    let Some(name) = &ci.name else {
        return Err(QueryError::Invalid("CREATE INDEX needs a name".into()));
    };
    let name = collection_name(name)?;
    let collection = collection_name(&ci.table_name)?;
    if ci.predicate.is_some() || !ci.include.is_empty() || ci.using.is_some() {
        return unsupported("partial indexes, INCLUDE and USING");
    }
    let mut fields = Vec::new();
    for col in &ci.columns {
        let path = path_of(&col.column.expr)?.ok_or_else(|| {
            QueryError::Invalid(format!("index fields are paths, not {}", col.column.expr))
        })?;
        if path.fields().is_none() {
            return Err(QueryError::Invalid(format!(
                "index field {path}: an index covers every element of an array; index the array's path"
            )));
        }
        fields.push(path.dotted_string());
    }
    Ok(Statement::CreateIndex {
        collection,
        spec: IndexSpec {
            name,
            fields,
            unique: ci.unique,
        },
    })
}
