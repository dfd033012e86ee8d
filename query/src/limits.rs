//! Limits that keep any input from exhausting the stack.
//!
//! sqlparser parses a chain like `a AND b AND ...` in a loop but builds it
//! as a left-deep tree, and Rust drops such a tree recursively: tens of
//! thousands of operators in one statement overflow a 2 MiB thread when the
//! parsed statement is dropped, before or after translation. This check runs
//! on the text, before sqlparser, and refuses such a statement cleanly.
//! (Translation itself flattens chains, and refuses nesting deeper than
//! [`crate::translate::MAX_EXPR_DEPTH`].)

use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{QueryError, Result};

/// Most binary operators of one kind (one precedence level: AND, OR,
/// comparisons, `+ -`, `* / %`, `||`) one statement may hold. sqlparser builds
/// each such chain as a left-deep tree, so this bounds the tree's depth
/// (10,000-term chains pass).
pub const MAX_OPERATORS: usize = 16_384;

/// Most binary operators of all kinds together in one statement.
pub const MAX_TOTAL_OPERATORS: usize = 4 * MAX_OPERATORS;

/// Which chain an operator token extends, if it is a binary operator.
fn operator_level(token: &Token, after_operand: bool) -> Option<usize> {
    match token {
        Token::Minus => after_operand.then_some(3),
        Token::Plus => Some(3),
        Token::Mul | Token::Div | Token::Mod => Some(4),
        Token::StringConcat => Some(5),
        Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq => Some(2),
        Token::Word(w) => match w.keyword {
            Keyword::AND => Some(0),
            Keyword::OR => Some(1),
            Keyword::IS | Keyword::LIKE | Keyword::BETWEEN | Keyword::IN => Some(2),
            _ => None,
        },
        _ => None,
    }
}

/// Refuses a statement with more than [`MAX_OPERATORS`] binary operators of
/// one kind, or [`MAX_TOTAL_OPERATORS`] in all (a unary minus, as in
/// `VALUES (-1)`, does not count). Text that does not tokenize is left for
/// the parser to report.
///
/// ```
/// use stratosdb_query::limits::check_statement_text;
/// assert!(check_statement_text("SELECT * FROM t WHERE a = 1 AND b > -2").is_ok());
/// let long = vec!["a = 1"; 20_000].join(" OR ");
/// let err = check_statement_text(&format!("SELECT * FROM t WHERE {long}")).unwrap_err();
/// assert_eq!(err.code(), "limit_exceeded");
/// ```
pub fn check_statement_text(sql: &str) -> Result<()> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let mut per_level = [0usize; 6];
    let mut total = 0usize;
    // Whether the previous significant token ends an operand (so a `-` after
    // it is binary).
    let mut after_operand = false;
    for token in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        if let Some(level) = operator_level(token, after_operand) {
            per_level[level] += 1;
            total += 1;
            if per_level[level] > MAX_OPERATORS {
                return Err(QueryError::LimitExceeded {
                    what: "the number of operators of one kind in one statement".into(),
                    limit: MAX_OPERATORS,
                });
            }
            if total > MAX_TOTAL_OPERATORS {
                return Err(QueryError::LimitExceeded {
                    what: "the number of operators in one statement".into(),
                    limit: MAX_TOTAL_OPERATORS,
                });
            }
        }
        after_operand = match token {
            Token::Word(w) => {
                w.keyword == Keyword::NoKeyword
                    || matches!(w.keyword, Keyword::NULL | Keyword::TRUE | Keyword::FALSE)
            }
            Token::Number(..) | Token::SingleQuotedString(_) | Token::RParen | Token::RBracket => {
                true
            }
            _ => false,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_minus_does_not_count() {
        let rows = vec!["(-1, -2)"; 20_000].join(", ");
        assert!(check_statement_text(&format!("INSERT INTO t (a, b) VALUES {rows}")).is_ok());
        let minus = vec!["a"; MAX_OPERATORS + 2].join(" - ");
        assert!(check_statement_text(&format!("SELECT {minus} FROM t")).is_err());
    }

    #[test]
    fn operators_inside_strings_do_not_count() {
        let text = vec!["a AND b"; 20_000].join(" OR ");
        assert!(check_statement_text(&format!("SELECT '{text}' FROM t")).is_ok());
    }

    #[test]
    fn chains_of_different_kinds_count_apart() {
        let and_of_comparisons = vec!["a <> 1"; 12_000].join(" AND ");
        assert!(
            check_statement_text(&format!("SELECT * FROM t WHERE {and_of_comparisons}")).is_ok()
        );
        let too_many = vec!["a + 1 = 2 AND b * 2 > 3"; 10_000].join(" OR ");
        assert!(check_statement_text(&format!("SELECT * FROM t WHERE {too_many}")).is_err());
    }

    #[test]
    fn exactly_the_limit_passes() {
        let terms = vec!["1"; MAX_OPERATORS + 1].join(" + ");
        assert!(check_statement_text(&format!("SELECT {terms} FROM t")).is_ok());
        let terms = vec!["1"; MAX_OPERATORS + 2].join(" + ");
        assert!(check_statement_text(&format!("SELECT {terms} FROM t")).is_err());
    }
}
