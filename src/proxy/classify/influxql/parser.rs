//! Recursive-descent recogniser for InfluxQL statements, following the
//! grammar of `influxdata/influxql` clause by clause so that every `/` is read
//! as a regex exactly where InfluxDB's parser reads one.

use std::borrow::Cow;

use super::lexer::{Lexer, Tok};
use super::{DbRef, ScanError, Scoped, Statement};

mod admin;
mod show;

/// Subqueries and parenthesised expressions recurse; bound it so hostile
/// input cannot overflow the stack.
const MAX_DEPTH: usize = 64;

pub(super) fn unexpected(tok: &Tok<'_>, expected: &'static str) -> ScanError {
    ScanError::Unexpected {
        found: tok.describe(),
        expected,
    }
}

/// `items` as the sorted set they stand for.
pub(super) fn set_of<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort_unstable();
    items.dedup();
    items
}

/// Adds `item` to `items`, made a set whenever a long list is full: a
/// query naming one database thousands of times keeps one entry, not
/// thousands (amortized `O(n log n)` however many are distinct).
fn note<T: Ord>(items: &mut Vec<T>, item: T) {
    if items.len() >= 64 && items.len() == items.capacity() {
        items.sort_unstable();
        items.dedup();
    }
    items.push(item);
}

/// A dotted name (`db.rp.measurement`) as read: its first three segments,
/// borrowed from the query unless they had escapes (unused ones empty),
/// and how many segments it had. Read for every name of every query, so
/// it is kept in place rather than in a `Vec`.
struct Dotted<'a> {
    segs: [Cow<'a, str>; 3],
    len: usize,
}

impl<'a> Dotted<'a> {
    fn push(&mut self, seg: Cow<'a, str>) {
        // A fourth segment is only counted: the name is refused then.
        if let Some(slot) = self.segs.get_mut(self.len) {
            *slot = seg;
        }
        self.len += 1;
    }
}

pub(super) struct Parser<'a> {
    lex: Lexer<'a>,
    depth: usize,
    /// What the statement reads, writes and names with a retention policy,
    /// as met (most statements name one or two); made sets by [`set_of`].
    reads: Vec<DbRef>,
    writes: Vec<DbRef>,
    scoped: Vec<Scoped>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Parser {
            lex: Lexer::new(src),
            depth: 0,
            reads: Vec::new(),
            writes: Vec::new(),
            scoped: Vec::new(),
        }
    }

    pub(super) fn peek(&mut self) -> Result<&Tok<'a>, ScanError> {
        self.lex.peek(false)
    }

    pub(super) fn bump(&mut self) -> Result<Tok<'a>, ScanError> {
        self.lex.next(false)
    }

    /// Consumes a regex if one starts here. Only called where InfluxDB's parser
    /// calls `parseRegex`, so the regex/division decision matches the server.
    fn eat_regex(&mut self) -> Result<bool, ScanError> {
        if *self.lex.peek(true)? == Tok::Regex {
            self.lex.next(true)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn regex_or_expr(&mut self) -> Result<(), ScanError> {
        if !self.eat_regex()? {
            self.expr()?;
        }
        Ok(())
    }

    /// Right-hand side of `=~` / `!~`: a regex, or a bound parameter that
    /// InfluxDB may substitute with one.
    fn regex_operand(&mut self) -> Result<(), ScanError> {
        let got = self.lex.next(true)?;
        if matches!(got, Tok::Regex | Tok::Param) {
            Ok(())
        } else {
            Err(unexpected(&got, "regex"))
        }
    }

    fn eat_if(&mut self, f: impl Fn(&Tok<'_>) -> bool) -> Result<bool, ScanError> {
        let hit = f(self.peek()?);
        if hit {
            self.bump()?;
        }
        Ok(hit)
    }

    fn eat(&mut self, tok: &Tok<'_>) -> Result<bool, ScanError> {
        self.eat_if(|t| t == tok)
    }

    fn eat_kw(&mut self, kw: &str) -> Result<bool, ScanError> {
        self.eat_if(|t| t.is_kw(kw))
    }

    fn expect_if(
        &mut self,
        f: impl Fn(&Tok<'_>) -> bool,
        what: &'static str,
    ) -> Result<Tok<'a>, ScanError> {
        let got = self.bump()?;
        if f(&got) {
            Ok(got)
        } else {
            Err(unexpected(&got, what))
        }
    }

    fn expect(&mut self, tok: &Tok<'_>, what: &'static str) -> Result<(), ScanError> {
        self.expect_if(|t| t == tok, what).map(drop)
    }

    fn expect_kw(&mut self, kw: &'static str) -> Result<(), ScanError> {
        self.expect_if(|t| t.is_kw(kw), kw).map(drop)
    }

    fn ident(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let got = self.bump()?;
        got.name().ok_or_else(|| unexpected(&got, "identifier"))
    }

    fn comma_list(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        loop {
            item(self)?;
            if !self.eat(&Tok::Comma)? {
                return Ok(());
            }
        }
    }

    fn enter(&mut self) -> Result<(), ScanError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ScanError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    pub(super) fn statement(&mut self) -> Result<Statement, ScanError> {
        self.reads.clear();
        self.writes.clear();
        self.scoped.clear();
        let word = match self.bump()? {
            Tok::Keyword(_, listed) => listed,
            other => return Err(ScanError::Unsupported(other.describe())),
        };
        match word {
            "SELECT" => self.select(false)?,
            "EXPLAIN" => {
                self.eat_kw("ANALYZE")?;
                self.eat_kw("VERBOSE")?;
                self.expect_kw("SELECT")?;
                self.select(false)?;
            }
            "SHOW" => return self.show(),
            _ => return self.admin(word),
        }
        Ok(self.data())
    }

    fn data(&mut self) -> Statement {
        Statement::Data {
            reads: set_of(std::mem::take(&mut self.reads)),
            writes: set_of(std::mem::take(&mut self.writes)),
            scoped: set_of(std::mem::take(&mut self.scoped)),
        }
    }

    /// SELECT body, the SELECT keyword already consumed; clause order as in InfluxDB.
    fn select(&mut self, into_required: bool) -> Result<(), ScanError> {
        self.enter()?;
        self.comma_list(|p| {
            p.regex_or_expr()?;
            if p.eat_kw("AS")? {
                p.ident()?;
            }
            Ok(())
        })?;
        if self.eat_kw("INTO")? {
            self.target()?;
        } else if into_required {
            return Err(unexpected(self.peek()?, "INTO"));
        }
        if !self.eat_kw("FROM")? {
            return Err(ScanError::MissingFrom);
        }
        self.sources(true)?;
        self.where_clause()?;
        self.group_by()?;
        if self.next_is_named("fill")? {
            self.expr()?;
        }
        self.order_by()?;
        for kw in ["LIMIT", "OFFSET", "SLIMIT", "SOFFSET"] {
            self.opt_int(kw)?;
        }
        if self.next_is_named("tz")? {
            self.expr()?;
        }
        self.leave();
        Ok(())
    }

    /// `fill(...)` and `tz(...)` are ordinary identifiers, quoted or not.
    fn next_is_named(&mut self, name: &str) -> Result<bool, ScanError> {
        Ok(self
            .peek()?
            .name()
            .is_some_and(|s| s.eq_ignore_ascii_case(name)))
    }

    fn target(&mut self) -> Result<(), ScanError> {
        let first = self.ident()?;
        let mut name = self.segments(first)?;
        if name.len < 3 && self.eat(&Tok::Colon)? {
            self.expect_kw("MEASUREMENT")?;
            name.push(Cow::Borrowed(""));
        }
        let [db, rp, _] = &name.segs;
        let db = (name.len == 3).then_some(&**db);
        note(&mut self.writes, DbRef::from_name(db));
        if let Some(db) = db {
            self.scope(db, rp, true);
        }
        Ok(())
    }

    /// Records that `database` (when named) is used with retention policy
    /// `policy` (empty: none).
    fn scope(&mut self, database: &str, policy: &str, write: bool) {
        if database.is_empty() {
            return;
        }
        note(
            &mut self.scoped,
            Scoped {
                database: database.to_owned(),
                policy: (!policy.is_empty()).then(|| policy.to_owned()),
                write,
            },
        );
    }

    fn sources(&mut self, subqueries: bool) -> Result<(), ScanError> {
        self.comma_list(|p| {
            if let Some(db) = p.source(subqueries)? {
                note(&mut p.reads, db);
            }
            Ok(())
        })
    }

    /// One FROM source, as `parseSource`: `/re/`, `(SELECT ...)`, or up to three
    /// dotted segments, where fewer than three may be followed by a regex and
    /// `db.rp./re/` names `db`. A subquery records its own reads; `None` then.
    fn source(&mut self, subqueries: bool) -> Result<Option<DbRef>, ScanError> {
        if self.eat_regex()? {
            return Ok(Some(DbRef::Default));
        }
        if subqueries && self.eat(&Tok::LParen)? {
            self.expect_kw("SELECT")?;
            self.select(false)?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(None);
        }
        // A bound parameter here could become any identifier, database
        // included, so only literal names are accepted.
        let first = self.ident()?;
        let name = self.segments(first)?;
        let named = match name.len {
            3 => true,
            2 => self.eat_regex()?,
            _ => {
                self.eat_regex()?;
                false
            }
        };
        let [db, rp, _] = &name.segs;
        let db = named.then_some(&**db);
        if let Some(db) = db {
            self.scope(db, rp, false);
        }
        Ok(Some(DbRef::from_name(db)))
    }

    /// Remaining segments of a dotted name, as `parseSegmentedIdents`: a `/`
    /// touching the dot ends the name (a regex in FROM, a division elsewhere),
    /// so does `:` (`INTO db.rp.:MEASUREMENT`), and `..` is an empty segment.
    fn segments(&mut self, first: Cow<'a, str>) -> Result<Dotted<'a>, ScanError> {
        let mut name = Dotted {
            segs: [first, Cow::Borrowed(""), Cow::Borrowed("")],
            len: 1,
        };
        while *self.peek()? == Tok::Dot {
            self.bump()?;
            if self.lex.raw_next_is('/') {
                break;
            }
            match self.peek()? {
                Tok::Dot => name.push(Cow::Borrowed("")),
                Tok::Colon | Tok::DoubleColon => break,
                _ => {
                    let seg = self.ident()?;
                    name.push(seg);
                }
            }
        }
        if name.len > 3 {
            return Err(ScanError::TooManySegments);
        }
        Ok(name)
    }

    fn where_clause(&mut self) -> Result<(), ScanError> {
        if self.eat_kw("WHERE")? {
            self.expr()?;
        }
        Ok(())
    }

    fn group_by(&mut self) -> Result<(), ScanError> {
        if !self.eat_kw("GROUP")? {
            return Ok(());
        }
        self.expect_kw("BY")?;
        self.comma_list(Self::regex_or_expr)
    }

    fn order_by(&mut self) -> Result<(), ScanError> {
        if !self.eat_kw("ORDER")? {
            return Ok(());
        }
        self.expect_kw("BY")?;
        if !(self.eat_kw("ASC")? || self.eat_kw("DESC")?) {
            self.sort_field()?;
        }
        while self.eat(&Tok::Comma)? {
            self.sort_field()?;
        }
        Ok(())
    }

    fn sort_field(&mut self) -> Result<(), ScanError> {
        self.ident()?;
        let _ = self.eat_kw("ASC")? || self.eat_kw("DESC")?;
        Ok(())
    }

    fn opt_int(&mut self, kw: &str) -> Result<(), ScanError> {
        if self.eat_kw(kw)? {
            self.expect(&Tok::Int, "integer")?;
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<(), ScanError> {
        self.unary()?;
        loop {
            let op = match self.peek()? {
                Tok::Op(op) => op,
                t if t.is_kw("AND") || t.is_kw("OR") || t.is_kw("IN") => "",
                _ => return Ok(()),
            };
            self.bump()?;
            if op == "=~" || op == "!~" {
                self.regex_operand()?;
            } else {
                self.unary()?;
            }
        }
    }

    fn unary(&mut self) -> Result<(), ScanError> {
        self.enter()?;
        let got = self.bump()?;
        match &got {
            Tok::LParen => {
                self.expr()?;
                self.expect(&Tok::RParen, "')'")?;
            }
            t if t.is_kw("DISTINCT") => {
                if self.eat(&Tok::LParen)? {
                    self.call_args()?;
                } else {
                    self.ident()?;
                }
            }
            t if t.is_kw("TRUE") || t.is_kw("FALSE") => {}
            t if t.is_ident() => {
                if self.eat(&Tok::LParen)? {
                    self.call_args()?;
                } else {
                    self.segments(Cow::Borrowed(""))?;
                    if self.eat(&Tok::DoubleColon)? {
                        let word = |t: &Tok<'_>| matches!(t, Tok::Word(_) | Tok::Keyword(..));
                        self.expect_if(word, "type")?;
                    }
                }
            }
            Tok::Str | Tok::Int | Tok::Float | Tok::Duration | Tok::Param => {}
            Tok::Op("*") => {
                if self.eat(&Tok::DoubleColon)? {
                    self.expect_if(|t| t.is_kw("FIELD") || t.is_kw("TAG"), "FIELD or TAG")?;
                }
            }
            Tok::Op("+" | "-") => {
                let next = self.peek()?;
                let ok = matches!(next, Tok::Int | Tok::Float | Tok::Duration | Tok::LParen)
                    || next.is_ident();
                if !ok {
                    return Err(unexpected(next, "number, duration, identifier or '('"));
                }
                self.unary()?;
            }
            other => return Err(unexpected(other, "expression")),
        }
        self.leave();
        Ok(())
    }

    /// Arguments after `name(`; each argument position may hold a regex.
    fn call_args(&mut self) -> Result<(), ScanError> {
        if *self.lex.peek(true)? != Tok::Regex && self.eat(&Tok::RParen)? {
            return Ok(());
        }
        self.comma_list(Self::regex_or_expr)?;
        self.expect(&Tok::RParen, "')'")
    }
}
