//! What a WHERE clause says about each field: equalities, ranges bracketed
//! by type class, IN lists, intersected where the index allows.

use std::ops::Bound;

use stratosdb_engine::Value;

use crate::ast::{CmpOp, Expr, Path};
use crate::eval::{LikePattern, same_class};

/// A condition on one field path that an index can serve.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Cons {
    /// The value is one of these (sorted, distinct).
    Points(Vec<Value>),
    Range(Bound<Value>, Bound<Value>),
}

/// The index-servable conditions among the WHERE's top-level conjuncts.
pub(super) fn extract_constraints(filter: &Expr) -> Vec<(String, Cons)> {
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
pub(super) fn nothing() -> Cons {
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
pub(super) fn field_constraint(
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
