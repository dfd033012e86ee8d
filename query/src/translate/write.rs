//! Writes: INSERT (documents or columns), UPDATE, DELETE, and CREATE INDEX.

use sqlparser::ast as sql;
use stratosdb_engine::proof::PathSegment;
use stratosdb_engine::{IndexSpec, Value};

use crate::ast::{Expr, Path, Statement};
use crate::error::{QueryError, Result};

use super::expression::{Aggs, expr, path_of};
use super::*;

// ---- writes -------------------------------------------------------------------

pub(super) fn insert(ins: &sql::Insert) -> Result<Statement> {
    let sql::TableObject::TableName(name) = &ins.table else {
        return unsupported("INSERT INTO a table function");
    };
    let collection = collection_name(name)?;
    if ins.on.is_some() || ins.returning.is_some() || !ins.assignments.is_empty() {
        return unsupported("ON CONFLICT / RETURNING / SET in INSERT");
    }
    let Some(source) = &ins.source else {
        return Err(QueryError::Invalid("INSERT needs VALUES".into()));
    };
    let sql::SetExpr::Values(values) = source.body.as_ref() else {
        return unsupported("INSERT ... SELECT");
    };
    let columns: Vec<Path> = ins
        .columns
        .iter()
        .map(|c| {
            Ok(Path::new(
                object_name(c)?
                    .into_iter()
                    .map(PathSegment::Field)
                    .collect(),
            ))
        })
        .collect::<Result<_>>()?;
    let mut docs = Vec::with_capacity(values.rows.len());
    for (n, row) in values.rows.iter().enumerate() {
        let row = &row.content;
        let mut vals = Vec::with_capacity(row.len());
        for e in row {
            let x = expr(e, &mut Aggs::Refuse("VALUES"))?;
            match x {
                Expr::Literal(v) => vals.push(v),
                other => {
                    return Err(QueryError::Invalid(format!(
                        "VALUES must hold constants, not {other}"
                    )));
                }
            }
        }
        if columns.is_empty() {
            // The document form: one JSON object per row.
            let [Value::String(text)] = vals.as_slice() else {
                return Err(QueryError::InvalidValue(format!(
                    "row {}: without a column list, each row is one JSON document as a string ('{{...}}')",
                    n + 1
                )));
            };
            let doc = Value::from_json_str(text)
                .map_err(|e| QueryError::InvalidValue(format!("row {}: {e}", n + 1)))?;
            if !matches!(doc, Value::Object(_)) {
                return Err(QueryError::InvalidValue(format!(
                    "row {}: a document must be a JSON object, not {}",
                    n + 1,
                    doc.type_name()
                )));
            }
            docs.push(doc);
        } else {
            if vals.len() != columns.len() {
                return Err(QueryError::Invalid(format!(
                    "row {} has {} values for {} columns",
                    n + 1,
                    vals.len(),
                    columns.len()
                )));
            }
            let mut doc = Value::Object(Default::default());
            for (path, v) in columns.iter().zip(vals) {
                set_path(&mut doc, path, v)?;
            }
            docs.push(doc);
        }
    }
    Ok(Statement::Insert { collection, docs })
}

/// Sets a field path in a document being built, creating objects on the way.
fn set_path(doc: &mut Value, path: &Path, v: Value) -> Result<()> {
    let Some(fields) = path.fields() else {
        return unsupported(format!(
            "column {path}: array elements in an INSERT column list"
        ));
    };
    let mut cur = doc;
    for (i, f) in fields.iter().enumerate() {
        let Value::Object(map) = cur else {
            return Err(QueryError::Invalid(format!(
                "column {path} goes through a value that is not an object"
            )));
        };
        if i + 1 == fields.len() {
            if map.insert(f.clone(), v).is_some() {
                return Err(QueryError::Invalid(format!("column {path} is given twice")));
            }
            return Ok(());
        }
        cur = map
            .entry(f.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

pub(super) fn update(u: &sql::Update) -> Result<Statement> {
    let collection = table_of(&u.table)?;
    if u.from.is_some() || u.returning.is_some() || !u.order_by.is_empty() || u.limit.is_some() {
        return unsupported("UPDATE ... FROM / RETURNING / ORDER BY / LIMIT");
    }
    let mut sets = Vec::new();
    for a in &u.assignments {
        let sql::AssignmentTarget::ColumnName(name) = &a.target else {
            return unsupported("tuple assignment");
        };
        let path = Path::new(
            object_name(name)?
                .into_iter()
                .map(PathSegment::Field)
                .collect(),
        );
        if path.is_id() {
            return Err(QueryError::Invalid("_id cannot be changed".into()));
        }
        let value = expr(&a.value, &mut Aggs::Refuse("SET"))?;
        sets.push((path, value));
    }
    let filter = u
        .selection
        .as_ref()
        .map(|e| expr(e, &mut Aggs::Refuse("WHERE")))
        .transpose()?;
    Ok(Statement::Update {
        collection,
        sets,
        filter,
    })
}

pub(super) fn delete(d: &sql::Delete) -> Result<Statement> {
    if !d.tables.is_empty() || d.using.is_some() || d.returning.is_some() || d.limit.is_some() {
        return unsupported("DELETE with USING / RETURNING / LIMIT");
    }
    let (sql::FromTable::WithFromKeyword(from) | sql::FromTable::WithoutKeyword(from)) = &d.from;
    let collection = match from.as_slice() {
        [one] => table_of(one)?,
        _ => return unsupported("DELETE from several collections"),
    };
    let filter = d
        .selection
        .as_ref()
        .map(|e| expr(e, &mut Aggs::Refuse("WHERE")))
        .transpose()?;
    Ok(Statement::Delete { collection, filter })
}

pub(super) fn create_index(ci: &sql::CreateIndex) -> Result<Statement> {
    let Some(name) = &ci.name else {
        return Err(QueryError::Invalid("CREATE INDEX needs a name".into()));
    };
    let name = collection_name(name)?;
    let collection = collection_name(&ci.table_name)?;
    if ci.predicate.is_some() || !ci.include.is_empty() || ci.using.is_some() {
        return unsupported("partial indexes, INCLUDE and USING");
    }
    let mut fields = Vec::new();
    for col in &ci.columns {
        let path = path_of(&col.column.expr)?.ok_or_else(|| {
            QueryError::Invalid(format!("index fields are paths, not {}", col.column.expr))
        })?;
        if path.fields().is_none() {
            return Err(QueryError::Invalid(format!(
                "index field {path}: an index covers every element of an array; index the array's path"
            )));
        }
        fields.push(path.dotted_string());
    }
    Ok(Statement::CreateIndex {
        collection,
        spec: IndexSpec {
            name,
            fields,
            unique: ci.unique,
        },
    })
}
