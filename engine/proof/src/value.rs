//! The document model: JSON values that keep the integer/float distinction and
//! have one total order, shared by comparisons, index keys and sorting.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::ValueError;

/// A JSON value as stratosdb stores it.
///
/// Integers and floats keep their type (`1` stays an integer, `1.0` a float) but
/// compare numerically, so `Int(1) == Float(1.0)`. Object keys are kept sorted
/// (byte order); documents have no meaningful key order.
///
/// The total order (used by `ORDER BY`, index keys and range scans) is
/// `null < false < true < numbers < strings < arrays < objects`; see `docs/keys.md`.
///
/// ```
/// use stratosdb_proof::Value;
/// let v = Value::from_json_str(r#"{"n": 1, "f": 1.0}"#).unwrap();
/// let obj = v.as_object().unwrap();
/// assert_eq!(obj["n"], obj["f"]); // 1 == 1.0
/// assert_eq!(v.to_json_string(), r#"{"f":1.0,"n":1}"#); // types are kept
/// ```
#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Array(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

/// A document: a JSON object (with a string `_id` once stored).
pub type Object = BTreeMap<String, Value>;

/// Upper bound on nesting that any configuration may allow. It stays below
/// serde_json's own recursion limit (128), so parsing can never overflow the stack.
pub const MAX_NESTING_DEPTH: usize = 100;

impl Value {
    /// Parses JSON text. Numbers that are integers and fit in i64 become `Int`,
    /// other numbers `Float`; integers beyond i64 are refused rather than rounded.
    pub fn from_json_str(text: &str) -> Result<Value, ValueError> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ValueError::InvalidJson(e.to_string()))?;
        Value::from_json(json)
    }

    /// Converts a parsed `serde_json::Value`.
    pub fn from_json(json: serde_json::Value) -> Result<Value, ValueError> {
        Ok(match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if n.is_u64() {
                    return Err(ValueError::IntegerOutOfRange(n.to_string()));
                } else {
                    let f = n
                        .as_f64()
                        .ok_or_else(|| ValueError::NonFiniteNumber(n.to_string()))?;
                    Value::float(f)?
                }
            }
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(Value::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| Ok((k, Value::from_json(v)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
        })
    }

    /// A float value; NaN and infinities have no JSON form and are refused.
    pub fn float(f: f64) -> Result<Value, ValueError> {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(ValueError::NonFiniteNumber(f.to_string()))
        }
    }

    /// Converts to a `serde_json::Value` (floats stay floats: `1.0` prints as `1.0`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
        }
    }

    /// Compact JSON text (keys in byte order, floats keep a fraction or exponent).
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// Depth of nesting: a scalar is 0, `[]` and `{}` are 1, `[[1]]` is 2.
    pub fn depth(&self) -> usize {
        // Iterative, so that measuring a hostile value cannot overflow the stack.
        let mut max = 0;
        let mut stack = vec![(self, 0usize)];
        while let Some((v, d)) = stack.pop() {
            match v {
                Value::Array(items) => {
                    max = max.max(d + 1);
                    stack.extend(items.iter().map(|i| (i, d + 1)));
                }
                Value::Object(map) => {
                    max = max.max(d + 1);
                    stack.extend(map.values().map(|i| (i, d + 1)));
                }
                _ => max = max.max(d),
            }
        }
        max
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The numeric value, for ints and floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_))
    }

    /// Rank of the value's type in the total order.
    pub fn type_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }

    /// The name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Looks up a dotted path (`address.city`; array elements by index, `tags.0`).
    /// A path through a non-object (or a missing key) yields `None`: "missing".
    pub fn get_path(&self, path: &[PathSegment]) -> Option<&Value> {
        let mut cur = self;
        for seg in path {
            cur = match (cur, seg) {
                (Value::Object(m), PathSegment::Field(f)) => m.get(f)?,
                (Value::Array(a), PathSegment::Index(i)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// One step of a path into a document.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    Field(String),
    Index(usize),
}

/// Compares an integer with a float exactly (no rounding of the integer).
pub fn cmp_int_float(i: i64, f: f64) -> Ordering {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // |t| < 2^63, so the cast is exact.
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            // Numeric comparison (-0.0 == 0.0); NaN never enters a Value.
            (Float(a), Float(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Int(a), Float(b)) => cmp_int_float(*a, *b),
            (Float(a), Int(b)) => cmp_int_float(*b, *a).reverse(),
            (String(a), String(b)) => a.cmp(b),
            (Array(a), Array(b)) => a.iter().cmp(b.iter()),
            (Object(a), Object(b)) => a.iter().cmp(b.iter()),
            _ => self.type_rank().cmp(&other.type_rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Object> for Value {
    fn from(m: Object) -> Self {
        Value::Object(m)
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(d)?;
        Value::from_json(json).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_compare_handles_negative_zero() {
        assert_eq!(Value::Float(-0.0), Value::Float(0.0));
        assert_eq!(Value::Int(0), Value::Float(-0.0));
        assert!(Value::Float(-1.0) < Value::Float(-0.5));
    }

    #[test]
    fn int_float_compare_is_exact_near_the_limits() {
        assert!(Value::Int(i64::MAX) < Value::Float(9_223_372_036_854_775_808.0));
        assert_eq!(
            Value::Int(i64::MIN),
            Value::Float(-9_223_372_036_854_775_808.0)
        );
        assert!(Value::Int(9_007_199_254_740_993) > Value::Float(9_007_199_254_740_992.0));
        assert!(Value::Int(2) > Value::Float(1.5));
        assert!(Value::Int(-2) < Value::Float(-1.5));
        assert!(Value::Int(1) < Value::Float(1.5));
    }

    #[test]
    fn type_order() {
        let order = [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(-5),
            Value::Float(2.5),
            Value::from("a"),
            Value::Array(vec![]),
            Value::Object(Object::new()),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn big_integers_are_refused() {
        assert!(matches!(
            Value::from_json_str("18446744073709551615"),
            Err(ValueError::IntegerOutOfRange(_))
        ));
    }
}
