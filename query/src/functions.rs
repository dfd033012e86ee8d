//! The scalar functions of the dialect: what they are called, how many
//! arguments they take, and what they compute.
//!
//! The rules every function but `COALESCE` follows (as arithmetic does):
//! a missing argument gives missing, else a null argument gives null; an
//! argument of a type the function has no meaning for is a type error
//! (`LOWER(5)`), which fails the statement. `COALESCE` returns its first
//! present, non-null argument, or null.

use stratosdb_engine::Value;

use bincode::{Decode, Encode};

use crate::error::{QueryError, Result};

/// A scalar (one row in, one value out) function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ScalarFunc {
    Lower,
    Upper,
    /// Characters (Unicode scalar values), not bytes.
    Length,
    Trim,
    /// `SUBSTR(s, start [, length])`, 1-based like SQL.
    Substr,
    /// Also the `||` operator.
    Concat,
    Abs,
    /// `ROUND(x [, digits])`, halves away from zero.
    Round,
    Floor,
    Ceil,
    Coalesce,
    ArrayLength,
}

impl ScalarFunc {
    /// The function a name (any case) stands for.
    pub fn from_name(name: &str) -> Option<ScalarFunc> {
        Some(match name.to_ascii_uppercase().as_str() {
            "LOWER" => ScalarFunc::Lower,
            "UPPER" => ScalarFunc::Upper,
            "LENGTH" | "CHAR_LENGTH" => ScalarFunc::Length,
            "TRIM" => ScalarFunc::Trim,
            "SUBSTR" | "SUBSTRING" => ScalarFunc::Substr,
            "CONCAT" => ScalarFunc::Concat,
            "ABS" => ScalarFunc::Abs,
            "ROUND" => ScalarFunc::Round,
            "FLOOR" => ScalarFunc::Floor,
            "CEIL" | "CEILING" => ScalarFunc::Ceil,
            "COALESCE" => ScalarFunc::Coalesce,
            "ARRAY_LENGTH" => ScalarFunc::ArrayLength,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ScalarFunc::Lower => "LOWER",
            ScalarFunc::Upper => "UPPER",
            ScalarFunc::Length => "LENGTH",
            ScalarFunc::Trim => "TRIM",
            ScalarFunc::Substr => "SUBSTR",
            ScalarFunc::Concat => "CONCAT",
            ScalarFunc::Abs => "ABS",
            ScalarFunc::Round => "ROUND",
            ScalarFunc::Floor => "FLOOR",
            ScalarFunc::Ceil => "CEIL",
            ScalarFunc::Coalesce => "COALESCE",
            ScalarFunc::ArrayLength => "ARRAY_LENGTH",
        }
    }

    /// How many arguments the function takes: (least, most).
    fn arity(self) -> (usize, usize) {
        match self {
            ScalarFunc::Substr => (2, 3),
            ScalarFunc::Round => (1, 2),
            ScalarFunc::Concat | ScalarFunc::Coalesce => (1, usize::MAX),
            _ => (1, 1),
        }
    }

    /// Checks the number of arguments of a call.
    pub fn check_arity(self, n: usize) -> Result<()> {
        let (least, most) = self.arity();
        if (least..=most).contains(&n) {
            return Ok(());
        }
        let wanted = match (least, most) {
            (l, usize::MAX) => format!("at least {l} argument{}", if l == 1 { "" } else { "s" }),
            (l, m) if l == m => format!("{l} argument{}", if l == 1 { "" } else { "s" }),
            (l, m) => format!("{l} to {m} arguments"),
        };
        Err(QueryError::Invalid(format!(
            "{} takes {wanted}, not {n}",
            self.name()
        )))
    }

    /// Applies the function to evaluated arguments (`None`: missing).
    pub fn call(self, args: Vec<Option<Value>>) -> Result<Option<Value>> {
        self.check_arity(args.len())?;
        if self == ScalarFunc::Coalesce {
            let first = args
                .into_iter()
                .flatten()
                .find(|v| !matches!(v, Value::Null));
            return Ok(Some(first.unwrap_or(Value::Null)));
        }
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            match a {
                None => return Ok(None),
                Some(v) => values.push(v),
            }
        }
        if values.iter().any(|v| matches!(v, Value::Null)) {
            return Ok(Some(Value::Null));
        }
        self.apply(&values).map(Some)
    }

    /// The function on present, non-null arguments (arity already checked).
    fn apply(self, args: &[Value]) -> Result<Value> {
        let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
        Ok(match self {
            ScalarFunc::Lower => Value::String(self.string(arg(0))?.to_lowercase()),
            ScalarFunc::Upper => Value::String(self.string(arg(0))?.to_uppercase()),
            ScalarFunc::Trim => Value::String(self.string(arg(0))?.trim().to_string()),
            ScalarFunc::Length => Value::Int(count(self.string(arg(0))?.chars().count())),
            ScalarFunc::ArrayLength => match arg(0) {
                Value::Array(items) => Value::Int(count(items.len())),
                other => return Err(self.type_error(other)),
            },
            ScalarFunc::Substr => {
                let s = self.string(arg(0))?;
                let start = self.integer(arg(1))?;
                let len = match args.get(2) {
                    Some(l) => Some(self.integer(l)?),
                    None => None,
                };
                Value::String(substr(s, start, len)?)
            }
            ScalarFunc::Concat => {
                let mut out = String::new();
                for a in args {
                    match a {
                        Value::String(s) => out.push_str(s),
                        Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                            out.push_str(&a.to_json_string())
                        }
                        other => return Err(self.type_error(other)),
                    }
                }
                Value::String(out)
            }
            ScalarFunc::Abs => match arg(0) {
                Value::Int(i) => Value::Int(i.checked_abs().ok_or_else(|| {
                    QueryError::Arithmetic(format!("ABS({i}) overflows a 64-bit integer"))
                })?),
                Value::Float(f) => Value::Float(f.abs()),
                other => return Err(self.type_error(other)),
            },
            ScalarFunc::Floor | ScalarFunc::Ceil => match arg(0) {
                Value::Int(i) => Value::Int(*i),
                Value::Float(f) if self == ScalarFunc::Floor => Value::Float(f.floor()),
                Value::Float(f) => Value::Float(f.ceil()),
                other => return Err(self.type_error(other)),
            },
            ScalarFunc::Round => {
                let digits = match args.get(1) {
                    Some(d) => self.integer(d)?,
                    None => 0,
                };
                round(arg(0), digits).ok_or_else(|| self.type_error(arg(0)))??
            }
            ScalarFunc::Coalesce => arg(0).clone(),
        })
    }

    fn type_error(self, v: &Value) -> QueryError {
        QueryError::Type(format!(
            "{} does not take a value of type {}",
            self.name(),
            v.type_name()
        ))
    }

    fn string(self, v: &Value) -> Result<&str> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(self.type_error(other)),
        }
    }

    fn integer(self, v: &Value) -> Result<i64> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(self.type_error(other)),
        }
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// SQL's substring: characters `start ..= start + len - 1`, 1-based; the
/// positions before 1 or past the end simply select nothing.
fn substr(s: &str, start: i64, len: Option<i64>) -> Result<String> {
    let end = match len {
        Some(l) if l < 0 => {
            return Err(QueryError::InvalidValue(format!(
                "SUBSTR length {l} is negative"
            )));
        }
        Some(l) => start.saturating_add(l),
        None => i64::MAX,
    };
    let first = start.max(1);
    if end <= first {
        return Ok(String::new());
    }
    let skip = usize::try_from(first - 1).unwrap_or(usize::MAX);
    let take = usize::try_from(end - first).unwrap_or(usize::MAX);
    Ok(s.chars().skip(skip).take(take).collect())
}

/// ROUND: None when `v` is not a number; halves go away from zero. An
/// integer stays an integer (negative `digits` round to tens, hundreds...).
fn round(v: &Value, digits: i64) -> Option<Result<Value>> {
    Some(match v {
        Value::Int(i) if digits >= 0 => Ok(Value::Int(*i)),
        Value::Int(i) => {
            let Some(factor) = u32::try_from(-digits)
                .ok()
                .and_then(|d| 10i128.checked_pow(d))
            else {
                return Some(Ok(Value::Int(0)));
            };
            let i = *i as i128;
            let rounded = (i.abs() + factor / 2) / factor * factor * i.signum();
            i64::try_from(rounded).map(Value::Int).map_err(|_| {
                QueryError::Arithmetic(format!("ROUND({i}, {digits}) overflows a 64-bit integer"))
            })
        }
        Value::Float(f) => {
            let digits = digits.clamp(-400, 400) as i32;
            let factor = 10f64.powi(digits);
            let scaled = f * factor;
            let r = if !scaled.is_finite() || factor == 0.0 {
                // Beyond the float's precision (or its range): nothing to round.
                if digits > 0 { *f } else { 0.0 }
            } else {
                scaled.round() / factor
            };
            Ok(Value::Float(if r.is_finite() { r } else { *f }))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: ScalarFunc, args: Vec<Option<Value>>) -> Result<Option<Value>> {
        f.call(args)
    }

    fn s(x: &str) -> Option<Value> {
        Some(Value::String(x.into()))
    }

    fn i(x: i64) -> Option<Value> {
        Some(Value::Int(x))
    }

    #[test]
    fn strings() {
        assert_eq!(call(ScalarFunc::Lower, vec![s("ÀbC")]).unwrap(), s("àbc"));
        assert_eq!(call(ScalarFunc::Upper, vec![s("abc")]).unwrap(), s("ABC"));
        assert_eq!(call(ScalarFunc::Trim, vec![s("  a b ")]).unwrap(), s("a b"));
        assert_eq!(call(ScalarFunc::Length, vec![s("héllo")]).unwrap(), i(5));
        let sub = |a, b, c: Option<i64>| {
            let mut args = vec![s(a), i(b)];
            if let Some(c) = c {
                args.push(i(c));
            }
            call(ScalarFunc::Substr, args)
        };
        assert_eq!(sub("hello", 2, Some(3)).unwrap(), s("ell"));
        assert_eq!(sub("hello", 2, None).unwrap(), s("ello"));
        assert_eq!(sub("hello", 0, Some(3)).unwrap(), s("he"));
        assert_eq!(sub("hello", -5, Some(3)).unwrap(), s(""));
        assert_eq!(sub("hello", 9, None).unwrap(), s(""));
        assert_eq!(sub("héllo", 2, Some(1)).unwrap(), s("é"));
        assert!(sub("hello", 1, Some(-1)).is_err());
        assert_eq!(
            call(
                ScalarFunc::Concat,
                vec![
                    s("a"),
                    i(1),
                    Some(Value::Float(2.5)),
                    Some(Value::Bool(true))
                ]
            )
            .unwrap(),
            s("a12.5true")
        );
        assert!(call(ScalarFunc::Concat, vec![s("a"), Some(Value::Array(vec![]))]).is_err());
    }

    #[test]
    fn null_missing_and_types() {
        assert_eq!(call(ScalarFunc::Lower, vec![None]).unwrap(), None);
        assert_eq!(
            call(ScalarFunc::Lower, vec![Some(Value::Null)]).unwrap(),
            Some(Value::Null)
        );
        assert_eq!(
            call(ScalarFunc::Concat, vec![s("a"), Some(Value::Null)]).unwrap(),
            Some(Value::Null)
        );
        assert_eq!(
            call(ScalarFunc::Concat, vec![Some(Value::Null), None]).unwrap(),
            None
        );
        let err = call(ScalarFunc::Lower, vec![i(5)]).unwrap_err();
        assert_eq!(err.code(), "type_error");
        assert!(err.to_string().contains("LOWER"), "{err}");
        assert_eq!(
            call(
                ScalarFunc::Coalesce,
                vec![None, Some(Value::Null), i(3), i(4)]
            )
            .unwrap(),
            i(3)
        );
        assert_eq!(
            call(ScalarFunc::Coalesce, vec![None, Some(Value::Null)]).unwrap(),
            Some(Value::Null)
        );
        assert!(ScalarFunc::Substr.check_arity(1).is_err());
        assert!(ScalarFunc::Lower.check_arity(2).is_err());
    }

    #[test]
    fn numbers() {
        let f = |x: f64| Some(Value::Float(x));
        assert_eq!(call(ScalarFunc::Abs, vec![i(-3)]).unwrap(), i(3));
        assert!(call(ScalarFunc::Abs, vec![i(i64::MIN)]).is_err());
        assert_eq!(call(ScalarFunc::Abs, vec![f(-2.5)]).unwrap(), f(2.5));
        assert_eq!(call(ScalarFunc::Floor, vec![f(-2.5)]).unwrap(), f(-3.0));
        assert_eq!(call(ScalarFunc::Ceil, vec![f(-2.5)]).unwrap(), f(-2.0));
        assert_eq!(call(ScalarFunc::Ceil, vec![i(7)]).unwrap(), i(7));
        assert_eq!(call(ScalarFunc::Round, vec![f(2.5)]).unwrap(), f(3.0));
        assert_eq!(call(ScalarFunc::Round, vec![f(-2.5)]).unwrap(), f(-3.0));
        assert_eq!(
            call(ScalarFunc::Round, vec![f(1.256), i(2)]).unwrap(),
            f(1.26)
        );
        assert_eq!(
            call(ScalarFunc::Round, vec![i(1250), i(-2)]).unwrap(),
            i(1300)
        );
        assert_eq!(
            call(ScalarFunc::Round, vec![i(-1250), i(-2)]).unwrap(),
            i(-1300)
        );
        assert_eq!(call(ScalarFunc::Round, vec![i(7), i(-30)]).unwrap(), i(0));
        assert_eq!(
            call(ScalarFunc::Round, vec![f(1.5), i(400)]).unwrap(),
            f(1.5)
        );
        assert!(call(ScalarFunc::Round, vec![s("a")]).is_err());
        assert_eq!(
            call(
                ScalarFunc::ArrayLength,
                vec![Some(Value::Array(vec![Value::Null; 3]))]
            )
            .unwrap(),
            i(3)
        );
        assert!(call(ScalarFunc::ArrayLength, vec![s("abc")]).is_err());
    }
}
