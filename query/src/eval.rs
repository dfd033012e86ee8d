//! Evaluating expressions on a document (or a group), with the dialect's
//! semantics: missing is not null; `< <= > >=` and BETWEEN compare only
//! values of one type class (numbers with numbers, strings with strings, ...;
//! null with nothing), while `=`, `<>`, IN and ORDER BY use the one total
//! order across types; and a comparison on a path that reaches several
//! values (through arrays) is true when any reached value satisfies it — the
//! same rule the indexes follow, so an index scan and a full scan always
//! agree. See `docs/query.md`.

use std::borrow::Cow;
use std::cmp::Ordering;

use stratosdb_engine::{Value, path_values};

use crate::ast::{ArithOp, CmpOp, Expr, Path};
use crate::error::{QueryError, Result};

/// What an expression is evaluated against: a document, or (after grouping)
/// the group's keys and aggregate values.
#[derive(Clone, Copy, Default)]
pub struct Ctx<'a> {
    pub doc: Option<&'a Value>,
    pub group: &'a [Option<Value>],
    pub aggs: &'a [Option<Value>],
}

impl<'a> Ctx<'a> {
    pub fn doc(doc: &'a Value) -> Ctx<'a> {
        Ctx {
            doc: Some(doc),
            group: &[],
            aggs: &[],
        }
    }

    pub fn group(group: &'a [Option<Value>], aggs: &'a [Option<Value>]) -> Ctx<'a> {
        Ctx {
            doc: None,
            group,
            aggs,
        }
    }
}

/// The value at a path, without fanning out over arrays (`None`: missing).
/// This is what a projection, ORDER BY, GROUP BY or arithmetic sees.
pub fn lookup<'v>(doc: &'v Value, path: &Path) -> Option<&'v Value> {
    doc.get_path(path.segments())
}

/// Evaluates to a value (`None`: missing). Boolean operators give `Bool`.
pub fn eval(expr: &Expr, ctx: Ctx<'_>) -> Result<Option<Value>> {
    Ok(match expr {
        Expr::Literal(v) => Some(v.clone()),
        Expr::Path(p) => ctx.doc.and_then(|d| lookup(d, p)).cloned(),
        Expr::Aggregate(i) => ctx.aggs.get(*i).cloned().flatten(),
        Expr::GroupKey(i) => ctx.group.get(*i).cloned().flatten(),
        Expr::Neg(e) => negate(eval(e, ctx)?)?,
        Expr::Arith(first, rest) => {
            let mut acc = eval(first, ctx)?;
            for (op, e) in rest {
                acc = arith(*op, acc, eval(e, ctx)?)?;
            }
            acc
        }
        Expr::Call(func, args) => {
            let args = args
                .iter()
                .map(|a| eval(a, ctx))
                .collect::<Result<Vec<_>>>()?;
            func.call(args)?
        }
        _ => Some(Value::Bool(matches(expr, ctx)?)),
    })
}

/// Whether a predicate holds: only `true` passes (missing, null or any other
/// value does not).
pub fn matches(expr: &Expr, ctx: Ctx<'_>) -> Result<bool> {
    Ok(match expr {
        Expr::And(operands) => {
            for e in operands {
                if !matches(e, ctx)? {
                    return Ok(false);
                }
            }
            true
        }
        Expr::Or(operands) => {
            for e in operands {
                if matches(e, ctx)? {
                    return Ok(true);
                }
            }
            false
        }
        Expr::Not(e) => !matches(e, ctx)?,
        Expr::Compare(op, a, b) => {
            let left = reach(a, ctx)?;
            let right = reach(b, ctx)?;
            left.iter().flatten().any(|l| {
                right
                    .iter()
                    .flatten()
                    .any(|r| compare(*op, l.as_ref(), r.as_ref()))
            })
        }
        Expr::In(e, list) => {
            let reached = reach(e, ctx)?;
            let mut values = Vec::with_capacity(list.len());
            for item in list {
                if let Some(v) = eval(item, ctx)? {
                    values.push(v);
                }
            }
            reached
                .iter()
                .flatten()
                .any(|v| values.iter().any(|x| x == v.as_ref()))
        }
        Expr::Between(e, lo, hi) => {
            let (Some(lo), Some(hi)) = (eval(lo, ctx)?, eval(hi, ctx)?) else {
                return Ok(false);
            };
            reach(e, ctx)?
                .iter()
                .flatten()
                .any(|v| compare(CmpOp::Ge, v.as_ref(), &lo) && compare(CmpOp::Le, v.as_ref(), &hi))
        }
        Expr::Like {
            expr,
            pattern,
            escape,
        } => {
            let pattern = LikePattern::new(pattern, *escape);
            reach(expr, ctx)?
                .iter()
                .flatten()
                .any(|v| matches!(v.as_ref(), Value::String(s) if pattern.matches(s)))
        }
        Expr::IsNull(e) => reach(e, ctx)?
            .iter()
            .any(|v| matches!(v.as_deref(), None | Some(Value::Null))),
        Expr::Exists(p) => match (ctx.doc, p.fields()) {
            (Some(doc), Some(fields)) => path_values(doc, fields).iter().any(Option::is_some),
            (Some(doc), None) => lookup(doc, p).is_some(),
            (None, _) => false,
        },
        other => matches!(eval(other, ctx)?, Some(Value::Bool(true))),
    })
}

/// The values an operand of a comparison stands for: every value a field
/// path reaches (fanning out over arrays, like an index), or the one value of
/// any other expression.
fn reach<'a>(expr: &Expr, ctx: Ctx<'a>) -> Result<Vec<Option<Cow<'a, Value>>>> {
    if let (Expr::Path(p), Some(doc)) = (expr, ctx.doc) {
        return Ok(match p.fields() {
            Some(fields) => path_values(doc, fields)
                .into_iter()
                .map(|v| v.map(Cow::Borrowed))
                .collect(),
            None => vec![lookup(doc, p).map(Cow::Borrowed)],
        });
    }
    Ok(vec![eval(expr, ctx)?.map(Cow::Owned)])
}

/// Whether `< <= > >=` may compare the two values: both of one type class
/// (integers and floats are one class), neither null.
pub fn same_class(l: &Value, r: &Value) -> bool {
    !matches!(l, Value::Null) && l.type_rank() == r.type_rank()
}

/// A comparison of two present values: `=` and `<>` in the total order,
/// `< <= > >=` only within a type class (false across classes).
pub fn compare(op: CmpOp, l: &Value, r: &Value) -> bool {
    if !matches!(op, CmpOp::Eq | CmpOp::Ne) && !same_class(l, r) {
        return false;
    }
    let ord = l.cmp(r);
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

fn negate(v: Option<Value>) -> Result<Option<Value>> {
    Ok(match v {
        None => None,
        Some(Value::Null) => Some(Value::Null),
        Some(Value::Int(i)) => Some(Value::Int(i.checked_neg().ok_or_else(|| {
            QueryError::Arithmetic(format!("-({i}) overflows a 64-bit integer"))
        })?)),
        Some(Value::Float(f)) => Some(Value::Float(-f)),
        Some(other) => {
            return Err(QueryError::Type(format!(
                "cannot negate a value of type {}",
                other.type_name()
            )));
        }
    })
}

/// Arithmetic: missing in, missing out; null in, null out; two integers stay
/// an integer (overflow is an error) except `/`, which always gives a float;
/// anything else that is not a number is a type error.
pub fn arith(op: ArithOp, a: Option<Value>, b: Option<Value>) -> Result<Option<Value>> {
    let (Some(a), Some(b)) = (a, b) else {
        return Ok(None);
    };
    if matches!(a, Value::Null) || matches!(b, Value::Null) {
        return Ok(Some(Value::Null));
    }
    let symbol = match op {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
        ArithOp::Mod => "%",
    };
    if let (Value::Int(x), Value::Int(y)) = (&a, &b)
        && op != ArithOp::Div
    {
        let (x, y) = (*x, *y);
        if op == ArithOp::Mod && y == 0 {
            return Err(QueryError::Arithmetic("division by zero".into()));
        }
        let r = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            _ => x.checked_rem(y),
        };
        return r.map(|r| Some(Value::Int(r))).ok_or_else(|| {
            QueryError::Arithmetic(format!("{x} {symbol} {y} overflows a 64-bit integer"))
        });
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => {
            if matches!(op, ArithOp::Div | ArithOp::Mod) && y == 0.0 {
                return Err(QueryError::Arithmetic("division by zero".into()));
            }
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => x / y,
                ArithOp::Mod => x % y,
            };
            Value::float(r)
                .map(Some)
                .map_err(|_| QueryError::Arithmetic(format!("{x} {symbol} {y} is not finite")))
        }
        _ => Err(QueryError::Type(format!(
            "cannot compute {} {symbol} {}",
            a.type_name(),
            b.type_name()
        ))),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum LikeToken {
    Any,
    One,
    Lit(char),
}

/// A compiled LIKE pattern: `%` is any run of characters, `_` one character.
pub struct LikePattern(Vec<LikeToken>);

impl LikePattern {
    pub fn new(pattern: &str, escape: Option<char>) -> LikePattern {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                c if Some(c) == escape => LikeToken::Lit(chars.next().unwrap_or(c)),
                '%' => LikeToken::Any,
                '_' => LikeToken::One,
                c => LikeToken::Lit(c),
            });
        }
        LikePattern(tokens)
    }

    /// The literal text every match starts with (for an index range).
    pub fn literal_prefix(&self) -> String {
        self.0
            .iter()
            .map_while(|t| match t {
                LikeToken::Lit(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    pub fn matches(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        let p = &self.0;
        let (mut si, mut pi) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            let step = pi < p.len()
                && match p[pi] {
                    LikeToken::One => true,
                    LikeToken::Lit(c) => c == s[si],
                    LikeToken::Any => false,
                };
            if step {
                si += 1;
                pi += 1;
            } else if pi < p.len() && p[pi] == LikeToken::Any {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|t| *t == LikeToken::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let m = |p: &str, s: &str| LikePattern::new(p, None).matches(s);
        assert!(m("a%", "abc"));
        assert!(m("%c", "abc"));
        assert!(m("a_c", "abc"));
        assert!(!m("a_c", "abbc"));
        assert!(m("%b%", "abc"));
        assert!(m("%", ""));
        assert!(!m("_", ""));
        assert!(m("a%b%c", "aXbYbZc"));
        assert!(LikePattern::new("10\\%", Some('\\')).matches("10%"));
        assert!(!LikePattern::new("10\\%", Some('\\')).matches("100"));
        assert_eq!(LikePattern::new("ab%c", None).literal_prefix(), "ab");
    }

    #[test]
    fn arithmetic_rules() {
        let i = |n| Some(Value::Int(n));
        assert_eq!(arith(ArithOp::Add, i(2), i(3)).unwrap(), i(5));
        assert_eq!(
            arith(ArithOp::Div, i(7), i(2)).unwrap(),
            Some(Value::Float(3.5))
        );
        assert_eq!(arith(ArithOp::Mod, i(7), i(2)).unwrap(), i(1));
        assert!(arith(ArithOp::Add, i(i64::MAX), i(1)).is_err());
        assert!(arith(ArithOp::Div, i(1), i(0)).is_err());
        assert_eq!(arith(ArithOp::Add, None, i(1)).unwrap(), None);
        assert_eq!(
            arith(ArithOp::Add, Some(Value::Null), i(1)).unwrap(),
            Some(Value::Null)
        );
        assert!(arith(ArithOp::Add, Some("a".into()), i(1)).is_err());
    }
}
