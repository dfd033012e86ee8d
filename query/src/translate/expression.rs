//! Expressions: paths, literals, operator chains (flat), functions, and the
//! nesting limit.

use sqlparser::ast as sql;
use stratosdb_engine::Value;
use stratosdb_engine::proof::PathSegment;

use crate::ast::{AggCall, AggFunc, ArithOp, CmpOp, Expr, Path, ScalarFunc};
use crate::error::{QueryError, Result};
use crate::eval::{Ctx, eval};

use super::*;

// ---- expressions ------------------------------------------------------------

/// Where aggregate calls may appear, and where they are collected.
pub(super) enum Aggs<'a> {
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
pub(super) fn path_of(e: &sql::Expr) -> Result<Option<Path>> {
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
pub(super) fn expr(e: &sql::Expr, aggs: &mut Aggs<'_>) -> Result<Expr> {
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
