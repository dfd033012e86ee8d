//! The crate's own small AST: what SQL statements and JSON filters are
//! translated into, and what the planner reads. It knows nothing of sqlparser.

use std::fmt;

use bincode::{Decode, Encode};

use stratosdb_engine::proof::PathSegment;
use stratosdb_engine::{IndexSpec, Value};

pub use crate::functions::ScalarFunc;

/// A path into a document: `address.city`, `tags[0]`, `items[1].sku`.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    segments: Vec<PathSegment>,
    /// The segments as field names when every segment is a field: such a path
    /// fans out over arrays like an index does (see [`stratosdb_engine::path_values`]).
    fields: Option<Vec<String>>,
}

impl Path {
    pub fn new(segments: Vec<PathSegment>) -> Path {
        let fields = segments
            .iter()
            .map(|s| match s {
                PathSegment::Field(f) => Some(f.clone()),
                PathSegment::Index(_) => None,
            })
            .collect();
        Path { segments, fields }
    }

    /// A dotted path of field names (`address.city`), as the filter API and
    /// index definitions write them.
    pub fn dotted(path: &str) -> Path {
        Path::new(
            path.split('.')
                .map(|s| PathSegment::Field(s.to_string()))
                .collect(),
        )
    }

    pub fn segments(&self) -> &[PathSegment] {
        &self.segments
    }

    /// The field names, if the path has no `[n]` element access.
    pub fn fields(&self) -> Option<&[String]> {
        self.fields.as_deref()
    }

    /// The dotted form an index field or a patch uses (`tags[0]` is `tags.0`).
    pub fn dotted_string(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                PathSegment::Field(f) => f.clone(),
                PathSegment::Index(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Whether this is the `_id` path.
    pub fn is_id(&self) -> bool {
        matches!(self.segments.as_slice(), [PathSegment::Field(f)] if f == "_id")
    }
}

impl fmt::Display for Path {
    /// The path as written: `address.city`, `tags[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            match s {
                PathSegment::Field(name) if i == 0 => write!(f, "{name}")?,
                PathSegment::Field(name) => write!(f, ".{name}")?,
                PathSegment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
        }
    }
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator with its operands swapped (`5 < a` is `a > 5`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

/// An expression over one document (or, after grouping, over one group).
///
/// Chains are n-ary so that a long `a AND b AND ...` or `1 + 2 + ...` is a
/// wide node, not a deep one: every walk over the tree (see
/// [`crate::tree`]) recurses only as deep as the expression is nested.
#[derive(Clone, Debug, PartialEq, Encode)]
pub enum Expr {
    Literal(Value),
    Path(Path),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    /// Every operand holds (evaluated left to right, stopping at the first
    /// that does not).
    And(Vec<Expr>),
    /// Some operand holds (left to right, stopping at the first that does).
    Or(Vec<Expr>),
    /// `first op1 x1 op2 x2 ...`, evaluated left to right:
    /// `((first op1 x1) op2 x2) ...`, the way SQL reads a chain.
    Arith(Box<Expr>, Vec<(ArithOp, Expr)>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
    Between(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `LIKE` with `%` and `_` (and an optional escape character).
    Like {
        expr: Box<Expr>,
        pattern: String,
        escape: Option<char>,
    },
    IsNull(Box<Expr>),
    /// `$exists`: true when the path reaches at least one present value.
    Exists(Path),
    /// A scalar function call; `a || b || c` is `CONCAT(a, b, c)`.
    Call(ScalarFunc, Vec<Expr>),
    /// After grouping: the value of the n-th aggregate of the query.
    Aggregate(usize),
    /// After grouping: the value of the n-th GROUP BY expression.
    GroupKey(usize),
}

impl Expr {
    pub fn path(p: &str) -> Expr {
        Expr::Path(Path::dotted(p))
    }

    pub fn lit(v: impl Into<Value>) -> Expr {
        Expr::Literal(v.into())
    }

    pub fn cmp(op: CmpOp, left: Expr, right: Expr) -> Expr {
        Expr::Compare(op, Box::new(left), Box::new(right))
    }

    /// `left AND right`, merged into one n-ary node when either side is an AND.
    pub fn and(left: Expr, right: Expr) -> Expr {
        Expr::and_all(vec![left, right])
    }

    /// `left OR right`, merged into one n-ary node when either side is an OR.
    pub fn or(left: Expr, right: Expr) -> Expr {
        Expr::or_all(vec![left, right])
    }

    /// One AND node over the operands (nested ANDs are merged in).
    pub fn and_all(operands: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(operands.len());
        for e in operands {
            match e {
                Expr::And(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        Expr::And(flat)
    }

    /// One OR node over the operands (nested ORs are merged in).
    pub fn or_all(operands: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(operands.len());
        for e in operands {
            match e {
                Expr::Or(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        Expr::Or(flat)
    }

    /// `left op right`; when `left` is already a chain, `right` extends it
    /// (a chain is a left fold, so this is the same expression).
    pub fn arith(op: ArithOp, left: Expr, right: Expr) -> Expr {
        match left {
            Expr::Arith(first, mut rest) => {
                rest.push((op, right));
                Expr::Arith(first, rest)
            }
            other => Expr::Arith(Box::new(other), vec![(op, right)]),
        }
    }

    pub fn negation(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    /// Joins expressions with AND (None for an empty list; the expression
    /// itself for one).
    pub fn all(mut exprs: Vec<Expr>) -> Option<Expr> {
        match exprs.len() {
            0 => None,
            1 => exprs.pop(),
            _ => Some(Expr::and_all(exprs)),
        }
    }

    /// The conjuncts of a chain of ANDs.
    pub fn conjuncts(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(operands) => stack.extend(operands.iter().rev()),
                other => out.push(other),
            }
        }
        out
    }

    /// Whether the expression reads nothing: no path, no group.
    pub fn is_constant(&self) -> bool {
        !self.any(&mut |e| {
            matches!(
                e,
                Expr::Path(_) | Expr::Exists(_) | Expr::Aggregate(_) | Expr::GroupKey(_)
            )
        })
    }
}

fn join(f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(Value::String(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Path(p) => write!(f, "{p}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Not(e) => write!(f, "NOT ({e})"),
            Expr::And(operands) => join(f, operands, " AND "),
            Expr::Or(operands) => {
                f.write_str("(")?;
                join(f, operands, " OR ")?;
                f.write_str(")")
            }
            Expr::Arith(first, rest) => {
                // Parentheses around every step, so precedence never needs guessing:
                // `((a + b) * c)`.
                for _ in 0..rest.len() {
                    f.write_str("(")?;
                }
                write!(f, "{first}")?;
                for (op, e) in rest {
                    write!(f, " {} {e})", op.symbol())?;
                }
                Ok(())
            }
            Expr::Compare(op, a, b) => write!(f, "{a} {} {b}", op.symbol()),
            Expr::In(e, list) => {
                write!(f, "{e} IN (")?;
                join(f, list, ", ")?;
                f.write_str(")")
            }
            Expr::Between(e, lo, hi) => write!(f, "{e} BETWEEN {lo} AND {hi}"),
            Expr::Like {
                expr,
                pattern,
                escape,
            } => {
                write!(f, "{expr} LIKE '{}'", pattern.replace('\'', "''"))?;
                if let Some(c) = escape {
                    write!(f, " ESCAPE '{c}'")?;
                }
                Ok(())
            }
            Expr::IsNull(e) => write!(f, "{e} IS NULL"),
            Expr::Exists(p) => write!(f, "EXISTS {p}"),
            Expr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                join(f, args, ", ")?;
                f.write_str(")")
            }
            Expr::Aggregate(i) => write!(f, "#agg{i}"),
            Expr::GroupKey(i) => write!(f, "#group{i}"),
        }
    }
}

/// The aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum AggFunc {
    /// `COUNT(*)`: rows.
    CountRows,
    /// `COUNT(expr)`: rows where the value is present and not null.
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggFunc {
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::CountRows | AggFunc::Count => "COUNT",
            AggFunc::Sum => "SUM",
            AggFunc::Avg => "AVG",
            AggFunc::Min => "MIN",
            AggFunc::Max => "MAX",
        }
    }
}

/// One aggregate call of a query: `SUM(price * qty)`.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct AggCall {
    pub func: AggFunc,
    /// None for `COUNT(*)`.
    pub arg: Option<Expr>,
}

impl fmt::Display for AggCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arg {
            None => write!(f, "{}(*)", self.func.name()),
            Some(a) => write!(f, "{}({a})", self.func.name()),
        }
    }
}

/// One output column: an expression and the name it is shown under.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct SelectItem {
    pub expr: Expr,
    /// The alias, or else the expression as written (`address.city`).
    pub name: String,
}

/// What a query returns for each row.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    /// `SELECT *`: the whole document.
    All,
    Items(Vec<SelectItem>),
}

/// One ORDER BY key.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct OrderKey {
    pub expr: Expr,
    pub desc: bool,
}

/// A query over one collection: what SELECT and `find` both become.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub collection: String,
    pub projection: Projection,
    pub filter: Option<Expr>,
    /// GROUP BY expressions; with `aggregates`, the query groups.
    pub group_by: Vec<Expr>,
    /// The aggregate calls that projection, HAVING and ORDER BY refer to
    /// through [`Expr::Aggregate`].
    pub aggregates: Vec<AggCall>,
    pub having: Option<Expr>,
    pub order_by: Vec<OrderKey>,
    pub distinct: bool,
    pub offset: u64,
    pub limit: Option<u64>,
}

impl Query {
    /// `SELECT * FROM collection`.
    pub fn all(collection: &str) -> Query {
        Query {
            collection: collection.to_string(),
            projection: Projection::All,
            filter: None,
            group_by: Vec::new(),
            aggregates: Vec::new(),
            having: None,
            order_by: Vec::new(),
            distinct: false,
            offset: 0,
            limit: None,
        }
    }

    /// Whether the query groups (GROUP BY or any aggregate).
    pub fn is_aggregate(&self) -> bool {
        !self.group_by.is_empty() || !self.aggregates.is_empty()
    }
}

/// A statement of the dialect.
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// `CREATE COLLECTION name [WITH (shards = N, replicas = M)]`; a store
    /// that cannot honour the options says so in its message.
    CreateCollection {
        name: String,
        shards: Option<u32>,
        replicas: Option<u32>,
    },
    DropCollection(String),
    ShowCollections,
    /// Documents to insert; all or none.
    Insert {
        collection: String,
        docs: Vec<Value>,
    },
    Select(Query),
    Explain(Query),
    Update {
        collection: String,
        /// Paths to set, each to an expression over the old document.
        sets: Vec<(Path, Expr)>,
        filter: Option<Expr>,
    },
    Delete {
        collection: String,
        filter: Option<Expr>,
    },
    CreateIndex {
        collection: String,
        spec: IndexSpec,
    },
    DropIndex {
        collection: Option<String>,
        name: String,
    },
    ShowIndexes(String),
}
