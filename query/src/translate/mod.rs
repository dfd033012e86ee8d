//! sqlparser's AST to the crate's own ([`crate::ast`]). This is where the
//! dialect is decided: what is a path, which functions exist, what a
//! statement may contain. Anything outside the dialect is refused by name.
//!
//! - this file: statements, and the names they carry;
//! - `select.rs`: SELECT (projection, grouping, ORDER BY, LIMIT);
//! - `expression.rs`: expressions, paths, literals, functions, depth limits;
//! - `write.rs`: INSERT, UPDATE, DELETE and CREATE INDEX.

mod expression;
mod select;
mod write;

use sqlparser::ast as sql;

use crate::ast::Statement;
use crate::error::{QueryError, Result};

/// How deeply an expression may nest. Chains of one operator (`a AND b AND
/// ...`, `1 + 2 - 3 ...`, `a || b || ...`) are flat and do not count, so a
/// WHERE of thousands of terms is fine; what nests deeper than this (the
/// sqlparser itself stops parentheses at 50) is refused with
/// [`QueryError::LimitExceeded`] rather than risking the stack.
pub const MAX_EXPR_DEPTH: usize = 64;

fn unsupported<T>(what: impl std::fmt::Display) -> Result<T> {
    Err(QueryError::Unsupported(what.to_string()))
}

/// Translates one parsed SQL statement.
pub fn statement(stmt: &sql::Statement) -> Result<Statement> {
    match stmt {
        sql::Statement::Query(q) => Ok(Statement::Select(query(q)?)),
        sql::Statement::Explain {
            statement, analyze, ..
        } => {
            if *analyze {
                return unsupported("EXPLAIN ANALYZE");
            }
            match statement.as_ref() {
                sql::Statement::Query(q) => Ok(Statement::Explain(query(q)?)),
                other => unsupported(format!("EXPLAIN of {other}: only SELECT can be explained")),
            }
        }
        sql::Statement::Insert(insert) => self::insert(insert),
        sql::Statement::Update(update) => self::update(update),
        sql::Statement::Delete(delete) => self::delete(delete),
        sql::Statement::CreateIndex(ci) => create_index(ci),
        sql::Statement::Drop {
            object_type: sql::ObjectType::Index,
            names,
            ..
        } => {
            let [name] = names.as_slice() else {
                return unsupported("DROP INDEX of several indexes at once");
            };
            let parts = object_name(name)?;
            match parts.as_slice() {
                [index] => Ok(Statement::DropIndex {
                    collection: None,
                    name: index.clone(),
                }),
                [collection, index] => Ok(Statement::DropIndex {
                    collection: Some(collection.clone()),
                    name: index.clone(),
                }),
                _ => unsupported(format!("index name {name}")),
            }
        }
        sql::Statement::Drop {
            object_type: sql::ObjectType::Table,
            ..
        } => unsupported("DROP TABLE: write DROP COLLECTION name"),
        sql::Statement::CreateTable(_) => unsupported("CREATE TABLE: write CREATE COLLECTION name"),
        other => {
            let text = other.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            unsupported(format!("statement {head}"))
        }
    }
}

fn object_name(name: &sql::ObjectName) -> Result<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            sql::ObjectNamePart::Identifier(id) => Ok(id.value.clone()),
            other => unsupported(format!("name {other}")),
        })
        .collect()
}

fn collection_name(name: &sql::ObjectName) -> Result<String> {
    match object_name(name)?.as_slice() {
        [one] => Ok(one.clone()),
        _ => unsupported(format!("qualified collection name {name}")),
    }
}

fn table_of(twj: &sql::TableWithJoins) -> Result<String> {
    if !twj.joins.is_empty() {
        return unsupported("JOIN");
    }
    match &twj.relation {
        sql::TableFactor::Table {
            name, alias, args, ..
        } => {
            if alias.is_some() {
                return unsupported("collection aliases");
            }
            if args.is_some() {
                return unsupported("table functions");
            }
            collection_name(name)
        }
        other => unsupported(format!("FROM {other}")),
    }
}

pub use expression::fold_constants;
pub use select::query;
use write::*;
