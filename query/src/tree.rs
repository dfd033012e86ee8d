//! One traversal for [`Expr`]: [`Expr::map_children`] rebuilds a node from
//! its rewritten children, [`Expr::children`] lists them, and every walk
//! (alias resolution, group binding, constant folding, "does it read a path")
//! is a short closure over [`Expr::transform_up`], [`Expr::transform_down`]
//! or [`Expr::any`]. A new variant is added to these two functions, whose
//! matches are exhaustive, and every walk sees it.
//!
//! ```
//! use stratosdb_query::ast::{ArithOp, Expr};
//! // Double every literal.
//! let e = Expr::arith(ArithOp::Add, Expr::lit(1), Expr::path("a"));
//! let doubled = e
//!     .transform_up(&mut |e| {
//!         Ok::<_, ()>(match e {
//!             Expr::Literal(stratosdb_query::Value::Int(i)) => Expr::lit(i * 2),
//!             other => other,
//!         })
//!     })
//!     .unwrap();
//! assert_eq!(doubled.to_string(), "(2 + a)");
//! ```

use crate::ast::Expr;

/// What a top-down walk does after visiting a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recursion {
    /// Visit the node's children too.
    Continue,
    /// Leave the node's children as they are.
    Skip,
}

impl Expr {
    /// The node rebuilt with `f` applied to each direct child, in order.
    pub fn map_children<E>(self, mut f: impl FnMut(Expr) -> Result<Expr, E>) -> Result<Expr, E> {
        let mut b = |x: Box<Expr>| f(*x).map(Box::new);
        Ok(match self {
            Expr::Literal(_)
            | Expr::Path(_)
            | Expr::Exists(_)
            | Expr::Aggregate(_)
            | Expr::GroupKey(_) => self,
            Expr::Neg(x) => Expr::Neg(b(x)?),
            Expr::Not(x) => Expr::Not(b(x)?),
            Expr::IsNull(x) => Expr::IsNull(b(x)?),
            Expr::Compare(op, x, y) => Expr::Compare(op, b(x)?, b(y)?),
            Expr::Between(x, lo, hi) => Expr::Between(b(x)?, b(lo)?, b(hi)?),
            Expr::Like {
                expr,
                pattern,
                escape,
            } => Expr::Like {
                expr: b(expr)?,
                pattern,
                escape,
            },
            Expr::Arith(first, rest) => {
                let first = b(first)?;
                let rest = rest
                    .into_iter()
                    .map(|(op, e)| Ok((op, f(e)?)))
                    .collect::<Result<_, E>>()?;
                Expr::Arith(first, rest)
            }
            Expr::In(x, list) => {
                let x = b(x)?;
                Expr::In(x, list.into_iter().map(&mut f).collect::<Result<_, E>>()?)
            }
            Expr::And(list) => Expr::And(list.into_iter().map(f).collect::<Result<_, E>>()?),
            Expr::Or(list) => Expr::Or(list.into_iter().map(f).collect::<Result<_, E>>()?),
            Expr::Call(func, args) => {
                Expr::Call(func, args.into_iter().map(f).collect::<Result<_, E>>()?)
            }
        })
    }

    /// The direct children, in order.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Literal(_)
            | Expr::Path(_)
            | Expr::Exists(_)
            | Expr::Aggregate(_)
            | Expr::GroupKey(_) => Vec::new(),
            Expr::Neg(x) | Expr::Not(x) | Expr::IsNull(x) | Expr::Like { expr: x, .. } => {
                vec![x]
            }
            Expr::Compare(_, x, y) => vec![x, y],
            Expr::Between(x, lo, hi) => vec![x, lo, hi],
            Expr::Arith(first, rest) => std::iter::once(first.as_ref())
                .chain(rest.iter().map(|(_, e)| e))
                .collect(),
            Expr::In(x, list) => std::iter::once(x.as_ref()).chain(list).collect(),
            Expr::And(list) | Expr::Or(list) | Expr::Call(_, list) => list.iter().collect(),
        }
    }

    /// Rewrites bottom-up: children first, then `f` on the rebuilt node.
    pub fn transform_up<E>(self, f: &mut impl FnMut(Expr) -> Result<Expr, E>) -> Result<Expr, E> {
        let node = self.map_children(|c| c.transform_up(f))?;
        f(node)
    }

    /// Rewrites top-down: `f` on the node first; unless it answers
    /// [`Recursion::Skip`], then the children of what it returned.
    pub fn transform_down<E>(
        self,
        f: &mut impl FnMut(Expr) -> Result<(Expr, Recursion), E>,
    ) -> Result<Expr, E> {
        match f(self)? {
            (node, Recursion::Skip) => Ok(node),
            (node, Recursion::Continue) => node.map_children(|c| c.transform_down(f)),
        }
    }

    /// Whether `pred` holds for this node or any node below it (pre-order,
    /// stopping at the first that does).
    pub fn any(&self, pred: &mut impl FnMut(&Expr) -> bool) -> bool {
        pred(self) || self.children().into_iter().any(|c| c.any(pred))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{ArithOp, CmpOp};
    use stratosdb_engine::Value;

    #[test]
    fn transform_up_sees_every_node_once_children_first() {
        let e = Expr::and(
            Expr::cmp(CmpOp::Lt, Expr::path("a"), Expr::lit(1)),
            Expr::arith(ArithOp::Add, Expr::path("b"), Expr::lit(2)),
        );
        let mut seen = Vec::new();
        let same = e
            .clone()
            .transform_up(&mut |n| {
                seen.push(n.to_string());
                Ok::<_, ()>(n)
            })
            .unwrap();
        assert_eq!(same, e);
        assert_eq!(
            seen,
            ["a", "1", "a < 1", "b", "2", "(b + 2)", "a < 1 AND (b + 2)"]
        );
    }

    #[test]
    fn transform_down_can_skip_a_subtree() {
        let e = Expr::Not(Box::new(Expr::arith(
            ArithOp::Mul,
            Expr::lit(3),
            Expr::lit(4),
        )));
        let out = e
            .transform_down(&mut |n| {
                Ok::<_, ()>(match n {
                    Expr::Arith(..) => (Expr::lit(0), Recursion::Skip),
                    Expr::Literal(_) => unreachable!("skipped"),
                    other => (other, Recursion::Continue),
                })
            })
            .unwrap();
        assert_eq!(out, Expr::Not(Box::new(Expr::Literal(Value::Int(0)))));
    }

    #[test]
    fn children_and_map_children_agree() {
        let e = Expr::In(Box::new(Expr::path("x")), vec![Expr::lit(1), Expr::lit(2)]);
        let n = e.children().len();
        let mut count = 0;
        e.map_children(|c| {
            count += 1;
            Ok::<_, ()>(c)
        })
        .unwrap();
        assert_eq!((n, count), (3, 3));
    }
}
