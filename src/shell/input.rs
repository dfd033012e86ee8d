//! Turns lines of input into statements and backslash commands, as soon as
//! each is complete, remembering where each statement begins in the script
//! (line and column from the start of the file, `-c` text or session).
//!
//! The lexing (quotes, `--` and `/* */` comments) is the one of
//! `stratosdb_query::split_statements`, done incrementally: each line is
//! scanned once, however long the statement it belongs to.

/// One piece of input ready to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A statement without its `;`.
    Statement(Statement),
    /// A backslash command: the rest of its line, trimmed.
    Command(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    pub text: String,
    /// 1-based: the first statement of the script is number 1.
    pub number: usize,
    /// Where `text` begins in the script (1-based line, column in characters).
    pub origin: (usize, usize),
    /// Where its first non-blank character is: what messages name.
    pub at: (usize, usize),
}

/// Lexical state of the scan of the pending text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    Code,
    Quote(u8),
    LineComment,
    BlockComment,
}

/// Collects lines until statements are complete.
pub struct Assembler {
    /// Text of the statement under way (each fed line ends with `\n`).
    pending: String,
    /// Where `pending` begins in the script.
    origin: (usize, usize),
    /// How far `pending` has been scanned, and the state there.
    scanned: usize,
    lex: Lex,
    /// Whether `pending` holds anything but blanks and comments.
    content: bool,
    lines: usize,
    statements: usize,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler {
            pending: String::new(),
            origin: (1, 1),
            scanned: 0,
            lex: Lex::Code,
            content: false,
            lines: 0,
            statements: 0,
        }
    }
}

impl Assembler {
    /// True when no statement is under way (for the prompt).
    pub fn is_idle(&self) -> bool {
        !self.content
    }

    /// Forgets the statement under way (Ctrl-C at the prompt).
    pub fn discard(&mut self) {
        self.reset(String::new(), (self.lines + 1, 1));
    }

    /// Feeds one line (without its line break); returns what it completed.
    pub fn feed_line(&mut self, line: &str) -> Vec<Item> {
        self.lines += 1;
        let mut items = Vec::new();
        if !self.content && line.trim_start().starts_with('\\') {
            self.reset(String::new(), (self.lines + 1, 1));
            items.push(Item::Command(line.trim().to_string()));
            return items;
        }
        if self.pending.is_empty() {
            self.origin = (self.lines, 1);
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        while let Some(end) = self.scan() {
            if self.content {
                items.push(Item::Statement(self.take(end)));
            }
            let next = shift(self.origin, line_column(&self.pending, end + 1));
            let rest = self.pending[end + 1..].to_string();
            if rest.trim_start().starts_with('\\') {
                // A backslash command after `;` on the same line.
                self.reset(String::new(), (self.lines + 1, 1));
                items.push(Item::Command(rest.trim().to_string()));
                break;
            }
            self.reset(rest, next);
        }
        if !self.content && self.lex == Lex::Code && self.pending.trim().is_empty() {
            self.reset(String::new(), (self.lines + 1, 1));
        }
        items
    }

    /// At the end of input: the statement left without `;`, if any.
    pub fn finish(&mut self) -> Option<Statement> {
        if !self.content {
            return None;
        }
        let end = self.pending.trim_end().len();
        let stmt = self.take(end);
        self.reset(String::new(), (self.lines + 1, 1));
        Some(stmt)
    }

    fn take(&mut self, end: usize) -> Statement {
        self.statements += 1;
        let text = self.pending[..end].to_string();
        let first = text.len() - text.trim_start().len();
        Statement {
            at: shift(self.origin, line_column(&text, first)),
            text,
            number: self.statements,
            origin: self.origin,
        }
    }

    fn reset(&mut self, pending: String, origin: (usize, usize)) {
        self.pending = pending;
        self.origin = origin;
        self.scanned = 0;
        self.lex = Lex::Code;
        self.content = false;
    }

    /// Scans on from where the last scan stopped; the offset of the first
    /// `;` that ends a statement. (Fed text always ends with `\n`, so no
    /// two-byte token is cut between two scans.)
    fn scan(&mut self) -> Option<usize> {
        let bytes = self.pending.as_bytes();
        while self.scanned < bytes.len() {
            let at = self.scanned;
            let next = bytes.get(at + 1).copied();
            self.scanned += 1;
            match (self.lex, bytes[at]) {
                (Lex::Code, q @ (b'\'' | b'"' | b'`')) => {
                    self.lex = Lex::Quote(q);
                    self.content = true;
                }
                (Lex::Code, b'-') if next == Some(b'-') => {
                    self.lex = Lex::LineComment;
                    self.scanned += 1;
                }
                (Lex::Code, b'/') if next == Some(b'*') => {
                    self.lex = Lex::BlockComment;
                    self.scanned += 1;
                }
                (Lex::Code, b';') => return Some(at),
                (Lex::Code, b) if !b.is_ascii_whitespace() => self.content = true,
                (Lex::Quote(q), b) if b == q => {
                    if next == Some(q) {
                        self.scanned += 1;
                    } else {
                        self.lex = Lex::Code;
                    }
                }
                (Lex::LineComment, b'\n') => self.lex = Lex::Code,
                (Lex::BlockComment, b'*') if next == Some(b'/') => {
                    self.lex = Lex::Code;
                    self.scanned += 1;
                }
                _ => {}
            }
        }
        None
    }
}

/// 1-based line and column (in characters) of a byte offset of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A position inside a text that begins at `origin`, in the script's terms.
fn shift(origin: (usize, usize), (line, column): (usize, usize)) -> (usize, usize) {
    if line == 1 {
        (origin.0, origin.1 + column - 1)
    } else {
        (origin.0 + line - 1, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(text: &str) -> Vec<Item> {
        let mut a = Assembler::default();
        let mut items: Vec<Item> = text.lines().flat_map(|l| a.feed_line(l)).collect();
        items.extend(a.finish().map(Item::Statement));
        items
    }

    fn stmt(text: &str, number: usize, origin: (usize, usize), at: (usize, usize)) -> Item {
        Item::Statement(Statement {
            text: text.to_string(),
            number,
            origin,
            at,
        })
    }

    #[test]
    fn statements_are_numbered_and_placed_in_the_script() {
        let items = feed("SELECT 1; SELECT\n  2;\n\n  -- note\n SELECT 'a;\nb' ;");
        assert_eq!(
            items,
            [
                stmt("SELECT 1", 1, (1, 1), (1, 1)),
                stmt(" SELECT\n  2", 2, (1, 10), (1, 11)),
                stmt("  -- note\n SELECT 'a;\nb' ", 3, (4, 1), (4, 3)),
            ]
        );
    }

    #[test]
    fn backslash_commands_after_a_semicolon_and_on_their_own_line() {
        let items = feed("CREATE COLLECTION c; \\d c\n\\timing\nSELECT 1");
        assert_eq!(
            items,
            [
                stmt("CREATE COLLECTION c", 1, (1, 1), (1, 1)),
                Item::Command("\\d c".into()),
                Item::Command("\\timing".into()),
                stmt("SELECT 1", 2, (3, 1), (3, 1)),
            ]
        );
        // Inside a statement, a backslash is text.
        let items = feed("SELECT\n\\x;");
        assert_eq!(items, [stmt("SELECT\n\\x", 1, (1, 1), (1, 1))]);
    }

    #[test]
    fn blanks_comments_and_empty_statements_are_not_statements() {
        assert_eq!(feed(";;\n -- x;\n/* ; */\n"), []);
        let mut a = Assembler::default();
        assert!(a.feed_line("SELECT 'unclosed;").is_empty());
        assert!(!a.is_idle());
        let left = a.finish().expect("reported at the end");
        assert_eq!(left.text, "SELECT 'unclosed;");
        assert!(a.is_idle());
    }
}
