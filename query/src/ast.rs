//! The crate's own small AST: what SQL statements and JSON filters are
//! translated into, and what the planner reads. It knows nothing of sqlparser.

use std::fmt;

use stratosdb_engine::proof::PathSegment;
use stratosdb_engine::{IndexSpec, Value};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
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
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    Path(Path),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
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

    pub fn and(left: Expr, right: Expr) -> Expr {
        Expr::And(Box::new(left), Box::new(right))
    }

    pub fn negation(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    /// Joins expressions with AND (None for an empty list).
    pub fn all(exprs: Vec<Expr>) -> Option<Expr> {
        exprs.into_iter().reduce(Expr::and)
    }

    /// The conjuncts of a chain of ANDs.
    pub fn conjuncts(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(l, r) => {
                    stack.push(r);
                    stack.push(l);
                }
                other => out.push(other),
            }
        }
        out
    }

    /// Whether the expression reads the document (a path) or a group.
    pub fn is_constant(&self) -> bool {
        match self {
            Expr::Literal(_) => true,
            Expr::Path(_) | Expr::Exists(_) | Expr::Aggregate(_) | Expr::GroupKey(_) => false,
            Expr::Neg(e) | Expr::Not(e) | Expr::IsNull(e) | Expr::Like { expr: e, .. } => {
                e.is_constant()
            }
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Arith(_, a, b) | Expr::Compare(_, a, b) => {
                a.is_constant() && b.is_constant()
            }
            Expr::In(e, list) => e.is_constant() && list.iter().all(Expr::is_constant),
            Expr::Between(e, lo, hi) => e.is_constant() && lo.is_constant() && hi.is_constant(),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(Value::String(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Path(p) => write!(f, "{p}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Not(e) => write!(f, "NOT ({e})"),
            Expr::And(a, b) => write!(f, "{a} AND {b}"),
            Expr::Or(a, b) => write!(f, "({a} OR {b})"),
            Expr::Arith(op, a, b) => {
                let op = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                    ArithOp::Mod => "%",
                };
                write!(f, "({a} {op} {b})")
            }
            Expr::Compare(op, a, b) => {
                let op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                write!(f, "{a} {op} {b}")
            }
            Expr::In(e, list) => {
                let items: Vec<String> = list.iter().map(|e| e.to_string()).collect();
                write!(f, "{e} IN ({})", items.join(", "))
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
            Expr::Aggregate(i) => write!(f, "#agg{i}"),
            Expr::GroupKey(i) => write!(f, "#group{i}"),
        }
    }
}

/// The aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug, PartialEq)]
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
    CreateCollection(String),
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
