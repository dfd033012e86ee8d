//! The wire form of what a cluster sends between nodes: a [`ShardPlan`] to a
//! shard, and the shard's [`Partial`] answer back. bincode 2 (standard
//! config), behind a version byte; decoding refuses more than a fixed size,
//! trailing bytes, and expressions nested deeper than [`MAX_WIRE_EXPR_DEPTH`]
//! (so a hostile message cannot exhaust the stack).
//!
//! ```
//! use stratosdb_query::{Database, decode_shard_plan, encode_shard_plan};
//! let db = Database::open_temporary().unwrap();
//! db.execute("CREATE COLLECTION c").unwrap();
//! let plan = db.plan_sql("SELECT a FROM c WHERE a > 1 ORDER BY a LIMIT 3").unwrap();
//! let bytes = encode_shard_plan(&plan.shard);
//! assert_eq!(decode_shard_plan(&bytes).unwrap(), plan.shard);
//! ```

use std::cell::Cell;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use stratosdb_engine::Value;
use stratosdb_engine::proof::PathSegment;

use crate::ast::{ArithOp, CmpOp, Expr, Path, ScalarFunc};
use crate::error::{QueryError, Result};
use crate::exec::Partial;
use crate::plan::{QueryPlan, ShardPlan};

/// Wire-format version, the first byte of every encoded message.
const WIRE_VERSION: u8 = 1;

/// Largest encoded [`ShardPlan`] accepted (a plan is small: the query's text
/// and its index ranges).
pub const MAX_PLAN_BYTES: usize = 4 << 20;

/// Largest encoded [`Partial`] accepted (one shard's rows for one query).
pub const MAX_PARTIAL_BYTES: usize = 256 << 20;

/// Deepest expression a message may carry (the dialect itself stops at
/// [`crate::translate::MAX_EXPR_DEPTH`]; this leaves room for rewrites).
pub const MAX_WIRE_EXPR_DEPTH: usize = 256;

pub fn encode_shard_plan(plan: &ShardPlan) -> Vec<u8> {
    encode(plan)
}

pub fn decode_shard_plan(bytes: &[u8]) -> Result<ShardPlan> {
    decode::<ShardPlan, MAX_PLAN_BYTES>(bytes, "shard plan")
}

/// A whole plan (both halves), for a node that plans on behalf of another.
pub fn encode_query_plan(plan: &QueryPlan) -> Vec<u8> {
    encode(plan)
}

pub fn decode_query_plan(bytes: &[u8]) -> Result<QueryPlan> {
    decode::<QueryPlan, MAX_PLAN_BYTES>(bytes, "query plan")
}

pub fn encode_partial(partial: &Partial) -> Vec<u8> {
    encode(partial)
}

pub fn decode_partial(bytes: &[u8]) -> Result<Partial> {
    decode::<Partial, MAX_PARTIAL_BYTES>(bytes, "partial answer")
}

fn encode<T: Encode>(value: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Encoding owned data into a Vec cannot fail.
    out.extend(bincode::encode_to_vec(value, bincode::config::standard()).unwrap_or_default());
    out
}

fn decode<T: Decode<()>, const LIMIT: usize>(bytes: &[u8], what: &str) -> Result<T> {
    let malformed = |m: String| QueryError::Malformed(format!("{what}: {m}"));
    if bytes.len() > LIMIT {
        return Err(malformed(format!(
            "{} bytes, over the limit of {LIMIT}",
            bytes.len()
        )));
    }
    match bytes.split_first() {
        Some((&WIRE_VERSION, body)) => {
            let config = bincode::config::standard().with_limit::<LIMIT>();
            let (value, used) =
                bincode::decode_from_slice(body, config).map_err(|e| malformed(e.to_string()))?;
            if used != body.len() {
                return Err(malformed(format!("{} trailing bytes", body.len() - used)));
            }
            Ok(value)
        }
        Some((v, _)) => Err(malformed(format!("unknown version {v}"))),
        None => Err(malformed("empty message".into())),
    }
}

// ---- Path: its segments only (the field list is derived from them) --------------

#[derive(Encode, Decode)]
enum SegmentWire {
    Field(String),
    Index(u64),
}

impl Encode for Path {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> std::result::Result<(), EncodeError> {
        let segments: Vec<SegmentWire> = self
            .segments()
            .iter()
            .map(|s| match s {
                PathSegment::Field(f) => SegmentWire::Field(f.clone()),
                PathSegment::Index(i) => SegmentWire::Index(*i as u64),
            })
            .collect();
        segments.encode(encoder)
    }
}

impl<Context> Decode<Context> for Path {
    fn decode<D: Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        let segments: Vec<SegmentWire> = Decode::decode(decoder)?;
        segments
            .into_iter()
            .map(|s| match s {
                SegmentWire::Field(f) => Ok(PathSegment::Field(f)),
                SegmentWire::Index(i) => usize::try_from(i)
                    .map(PathSegment::Index)
                    .map_err(|_| DecodeError::Other("path index out of range")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Path::new)
    }
}

bincode::impl_borrow_decode!(Path);

// ---- Expr: decoded through a depth guard ---------------------------------------

/// The same shape as [`Expr`] (variants in the same order, so the derived
/// encoding of `Expr` decodes as this); its children are `Expr`s again, so
/// every level passes through the guard in `Expr`'s `Decode`.
#[derive(Decode)]
enum ExprWire {
    Literal(Value),
    Path(Path),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Arith(Box<Expr>, Vec<(ArithOp, Expr)>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
    Between(Box<Expr>, Box<Expr>, Box<Expr>),
    Like {
        expr: Box<Expr>,
        pattern: String,
        escape: Option<char>,
    },
    IsNull(Box<Expr>),
    Exists(Path),
    Call(ScalarFunc, Vec<Expr>),
    Aggregate(usize),
    GroupKey(usize),
}

impl From<ExprWire> for Expr {
    fn from(w: ExprWire) -> Expr {
        match w {
            ExprWire::Literal(v) => Expr::Literal(v),
            ExprWire::Path(p) => Expr::Path(p),
            ExprWire::Neg(e) => Expr::Neg(e),
            ExprWire::Not(e) => Expr::Not(e),
            ExprWire::And(v) => Expr::And(v),
            ExprWire::Or(v) => Expr::Or(v),
            ExprWire::Arith(first, rest) => Expr::Arith(first, rest),
            ExprWire::Compare(op, a, b) => Expr::Compare(op, a, b),
            ExprWire::In(e, list) => Expr::In(e, list),
            ExprWire::Between(e, lo, hi) => Expr::Between(e, lo, hi),
            ExprWire::Like {
                expr,
                pattern,
                escape,
            } => Expr::Like {
                expr,
                pattern,
                escape,
            },
            ExprWire::IsNull(e) => Expr::IsNull(e),
            ExprWire::Exists(p) => Expr::Exists(p),
            ExprWire::Call(f, args) => Expr::Call(f, args),
            ExprWire::Aggregate(i) => Expr::Aggregate(i),
            ExprWire::GroupKey(i) => Expr::GroupKey(i),
        }
    }
}

thread_local! {
    static EXPR_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts one level of expression nesting while it is decoded.
struct DepthGuard;

impl DepthGuard {
    fn enter() -> std::result::Result<DepthGuard, DecodeError> {
        EXPR_DEPTH.with(|d| {
            if d.get() >= MAX_WIRE_EXPR_DEPTH {
                return Err(DecodeError::Other(
                    "expression nested deeper than the wire limit",
                ));
            }
            d.set(d.get() + 1);
            Ok(DepthGuard)
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        EXPR_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

impl<Context> Decode<Context> for Expr {
    fn decode<D: Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        let _guard = DepthGuard::enter()?;
        ExprWire::decode(decoder).map(Expr::from)
    }
}

bincode::impl_borrow_decode!(Expr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_trailing_bytes_versions_and_size() {
        let plan = crate::plan::plan(&crate::ast::Query::all("c"), &test_catalog());
        let mut bytes = encode_shard_plan(&plan.shard);
        assert_eq!(decode_shard_plan(&bytes).unwrap(), plan.shard);
        bytes.push(0);
        let err = decode_shard_plan(&bytes).unwrap_err();
        assert_eq!(err.code(), "malformed");
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
        assert!(decode_shard_plan(&[]).is_err());
        assert!(
            decode_shard_plan(&[9, 0])
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        assert!(decode_shard_plan(&vec![WIRE_VERSION; MAX_PLAN_BYTES + 1]).is_err());
        assert!(decode_partial(&[WIRE_VERSION, 200, 200, 200]).is_err());
    }

    #[test]
    fn refuses_expressions_nested_too_deeply() {
        let mut e = Expr::lit(1);
        for _ in 0..MAX_WIRE_EXPR_DEPTH + 5 {
            e = Expr::Not(Box::new(e));
        }
        let mut plan = crate::plan::plan(&crate::ast::Query::all("c"), &test_catalog()).shard;
        plan.filter = Some(e);
        let err = decode_shard_plan(&encode_shard_plan(&plan)).unwrap_err();
        assert!(err.to_string().contains("deeper"), "{err}");
        // The guard unwinds: a shallow plan decodes afterwards on this thread.
        plan.filter = Some(Expr::Not(Box::new(Expr::lit(true))));
        assert_eq!(decode_shard_plan(&encode_shard_plan(&plan)).unwrap(), plan);
    }

    fn test_catalog() -> stratosdb_engine::CollectionInfo {
        stratosdb_engine::CollectionInfo {
            name: "c".into(),
            number: 1,
            count: 0,
            next_index_number: 0,
            indexes: Vec::new(),
            building: Vec::new(),
        }
    }
}
