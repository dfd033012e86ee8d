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

/// Upper bound on nesting that any configuration may allow, and the deepest
/// JSON text [`Value::from_json_str`] accepts. Values are built and dropped
/// recursively, so this bound is what keeps them from overflowing the stack.
pub const MAX_NESTING_DEPTH: usize = 100;

impl Value {
    /// Parses JSON text (RFC 8259, strictly). Numbers that are integers and fit
    /// in i64 become `Int`, other numbers `Float`; integers beyond i64 are
    /// refused rather than rounded. Refused with an error that says where:
    /// a key repeated in an object ([`ValueError::DuplicateKey`], naming the
    /// key and the object's path), nesting deeper than [`MAX_NESTING_DEPTH`],
    /// `NaN` and `Infinity`, numbers beyond the float range, and `\u` escapes
    /// of lone UTF-16 surrogates.
    ///
    /// ```
    /// use stratosdb_proof::{Value, ValueError};
    /// let err = Value::from_json_str(r#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
    /// assert!(matches!(&err, ValueError::DuplicateKey { key, path, .. } if key == "b" && path == "a"));
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"invalid JSON: duplicate key "b" in the object at a at line 1, column 16"#
    /// );
    /// ```
    pub fn from_json_str(text: &str) -> Result<Value, ValueError> {
        crate::json::parse(text.as_bytes())
    }

    /// Parses JSON text given as bytes, as [`Value::from_json_str`] does; bytes
    /// that are not UTF-8 are refused with their position.
    ///
    /// ```
    /// use stratosdb_proof::Value;
    /// let err = Value::from_json_slice(b"{\"a\": \"\xff\"}").unwrap_err();
    /// assert!(err.to_string().contains("not UTF-8 at line 1, column 8"), "{err}");
    /// ```
    pub fn from_json_slice(bytes: &[u8]) -> Result<Value, ValueError> {
        crate::json::parse(bytes)
    }

    /// Converts a parsed `serde_json::Value` (whose objects cannot hold
    /// duplicate keys any more: serde_json kept the last). Nesting deeper than
    /// [`MAX_NESTING_DEPTH`] is refused with [`ValueError::TooDeep`].
    pub fn from_json(json: serde_json::Value) -> Result<Value, ValueError> {
        from_json_at(json, 0)
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

/// [`Value::from_json`] for a value `depth` containers deep.
fn from_json_at(json: serde_json::Value, depth: usize) -> Result<Value, ValueError> {
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
        container if depth >= MAX_NESTING_DEPTH => {
            dismantle(container);
            return Err(ValueError::TooDeep(MAX_NESTING_DEPTH));
        }
        serde_json::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| from_json_at(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, from_json_at(v, depth + 1)?)))
                .collect::<Result<_, ValueError>>()?,
        ),
    })
}

/// Drops a `serde_json::Value` of any depth without recursing (its own drop
/// recurses once per level).
fn dismantle(json: serde_json::Value) {
    let mut stack = vec![json];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
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

/// Deserializes from any self-describing format (serde_json's
/// `from_str::<Value>` included) with the rules of [`Value::from_json_str`]:
/// a repeated key is an error naming it, integers beyond i64 are refused.
/// Depth is bounded by the format's own recursion limit (serde_json: 128).
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom(ValueError::IntegerOutOfRange(u.to_string())))
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Value, E> {
        Value::float(f).map_err(E::custom)
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Object::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?} in an object"
                )));
            }
            let value = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
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
