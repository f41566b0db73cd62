//! InfluxQL tokenizer used by the statement classifier.
//!
//! It mirrors the scanner of `influxdata/influxql` (the Go parser InfluxDB 1.x
//! and the 2.x `/query` endpoint use). Exactness matters more than
//! convenience here: any place where this lexer and InfluxDB disagree about
//! where a string, quoted identifier, regex or comment ends is a place where
//! text could be hidden from the proxy. Whether a `/` opens a regex is decided
//! by the parser (InfluxDB does the same), so `next`/`peek` take that flag.

use std::borrow::Cow;

use super::ScanError;
use super::keywords::keyword;

/// A token, borrowing its text from the query: the parser reads every word
/// of every query on the request path, and copies none it does not keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    /// Unquoted word that is not a keyword: an identifier, as written.
    Word(&'a str),
    /// Unquoted keyword: as written, and as listed (upper case). Whether
    /// a word is a keyword is looked up once, when it is scanned; the
    /// parser asks about most words several times.
    Keyword(&'a str, &'static str),
    /// Double-quoted identifier without escapes: its body.
    Quoted(&'a str),
    /// Double-quoted identifier with escapes: its body as written (the scan
    /// checked the escapes, [`Tok::name`] undoes them). A variant of its own,
    /// not a flag: every field of a token then sits on a word boundary, and
    /// a token copied is copied whole words at a time.
    Escaped(&'a str),
    Str,
    Int,
    Float,
    Duration,
    Param,
    Regex,
    /// Binary operator (`AND`, `OR`, `IN` arrive as `Word`).
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Semi,
    Dot,
    Colon,
    DoubleColon,
    Eof,
}

impl<'a> Tok<'a> {
    /// True when this token is an identifier, quoted or not.
    pub(super) fn is_ident(&self) -> bool {
        matches!(self, Tok::Word(_) | Tok::Quoted(_) | Tok::Escaped(_))
    }

    /// The name this token denotes where InfluxQL expects an identifier,
    /// escapes undone (copied only when it had escapes).
    pub(super) fn name(&self) -> Option<Cow<'a, str>> {
        match *self {
            Tok::Word(name) | Tok::Quoted(name) => Some(Cow::Borrowed(name)),
            Tok::Escaped(body) => Some(Cow::Owned(unquote(body))),
            _ => None,
        }
    }

    /// True when this is keyword `kw` (in any case). Asking for a word
    /// that is not a keyword never matches.
    pub(super) fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Keyword(_, listed) if listed.eq_ignore_ascii_case(kw))
    }

    /// Short description for error messages; never echoes unbounded input.
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Word(w) | Tok::Keyword(w, _) => w.chars().take(32).collect(),
            Tok::Quoted(_) | Tok::Escaped(_) => "quoted identifier".into(),
            Tok::Str => "string".into(),
            Tok::Int | Tok::Float => "number".into(),
            Tok::Duration => "duration".into(),
            Tok::Param => "bound parameter".into(),
            Tok::Regex => "regex".into(),
            Tok::Op(o) => format!("'{o}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Semi => "';'".into(),
            Tok::Dot => "'.'".into(),
            Tok::Colon => "':'".into(),
            Tok::DoubleColon => "'::'".into(),
            Tok::Eof => "end of query".into(),
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// What the escape `\c` stands for in a string or quoted identifier, as
/// InfluxDB 1.x reads it (`ScanString`); `None`: not an escape there. The
/// scan checks escapes and [`unquote`] undoes them with this one rule, so
/// the two cannot drift apart.
fn unescaped(c: char) -> Option<char> {
    match c {
        'n' => Some('\n'),
        '\\' | '"' | '\'' => Some(c),
        _ => None,
    }
}

/// A quoted identifier's body with its escapes (checked by the scan)
/// undone.
fn unquote(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            // Every escape in a scanned body is one `unescaped` knows.
            '\\' => out.extend(chars.next().and_then(unescaped)),
            c => out.push(c),
        }
    }
    out
}

pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// The last token peeked. The parser peeks most tokens before taking
    /// them; a token depends only on (position, regex flag), so the next
    /// `peek` or `next` from the same place takes it instead of scanning
    /// again. It is `Copy`, kept in place and copied out: a token is read
    /// once and never moved in and out of an `Option`.
    ahead: Ahead<'a>,
}

#[derive(Clone, Copy)]
struct Ahead<'a> {
    /// Where the token's scan started (`usize::MAX`: nothing peeked).
    start: usize,
    regex: bool,
    end: usize,
    tok: Tok<'a>,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            ahead: Ahead {
                start: usize::MAX,
                regex: false,
                end: 0,
                tok: Tok::Eof,
            },
        }
    }

    /// True when the token peeked last is the one `regex` would read here:
    /// the flag only changes how a `/` reads (a regex or a division), so a
    /// token that is neither is the same either way.
    fn ahead_here(&self, regex: bool) -> bool {
        self.ahead.start == self.pos
            && (self.ahead.regex == regex || !matches!(self.ahead.tok, Tok::Regex | Tok::Op("/")))
    }

    #[inline]
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    #[inline]
    fn peek_char(&self) -> Option<char> {
        // Queries are almost all ASCII: a byte is a character then.
        match self.src.as_bytes().get(self.pos) {
            Some(&b) if b.is_ascii() => Some(char::from(b)),
            _ => self.rest().chars().next(),
        }
    }

    #[inline]
    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// The very next character, with no whitespace skipped. InfluxDB peeks raw
    /// runes right after a `.` in dotted names, so the parser needs this too.
    pub(super) fn raw_next_is(&self, c: char) -> bool {
        self.peek_char() == Some(c)
    }

    /// Skips white space and comments. Byte by byte: every byte that ends
    /// or starts one is ASCII, and never part of a longer UTF-8 sequence.
    fn skip_trivia(&mut self) -> Result<(), ScanError> {
        let bytes = self.src.as_bytes();
        let mut pos = self.pos;
        loop {
            match (bytes.get(pos), bytes.get(pos + 1)) {
                // InfluxDB's reader turns `\r` into `\n`; other whitespace is illegal.
                (Some(b' ' | b'\t' | b'\n' | b'\r'), _) => pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    let rest = bytes.get(pos + 2..).unwrap_or_default();
                    pos = match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                        Some(i) => pos + 2 + i + 1,
                        None => bytes.len(),
                    };
                }
                // `/*` is a comment even where a regex may start: InfluxDB would
                // read a regex starting with `*` there, which never compiles, so
                // such a query is rejected by the server anyway.
                (Some(b'/'), Some(b'*')) => {
                    let rest = self.src.get(pos + 2..).unwrap_or_default();
                    let end = rest.find("*/").ok_or(ScanError::UnterminatedComment)?;
                    pos += 2 + end + 2;
                }
                _ => break,
            }
        }
        self.pos = pos;
        Ok(())
    }

    /// The next significant token, left in place (the parser peeks at most
    /// tokens several times before taking them). A scan error is not kept:
    /// it ends the query.
    pub(super) fn peek(&mut self, regex: bool) -> Result<&Tok<'a>, ScanError> {
        if !self.ahead_here(regex) {
            let start = self.pos;
            let scanned = self.scan(regex);
            let end = std::mem::replace(&mut self.pos, start);
            let tok = scanned?;
            self.ahead = Ahead {
                start,
                regex,
                end,
                tok,
            };
        }
        Ok(&self.ahead.tok)
    }

    /// Next significant token; `regex` says whether a `/` opens a regex here.
    pub(super) fn next(&mut self, regex: bool) -> Result<Tok<'a>, ScanError> {
        if self.ahead_here(regex) {
            self.pos = self.ahead.end;
            // Taken: never reused, should the parser ever come back here.
            self.ahead.start = usize::MAX;
            return Ok(self.ahead.tok);
        }
        self.scan(regex)
    }

    fn scan(&mut self, regex: bool) -> Result<Tok<'a>, ScanError> {
        self.skip_trivia()?;
        let Some(c) = self.bump() else {
            return Ok(Tok::Eof);
        };
        let tok = match c {
            c if is_ident_start(c) => {
                let word = self.bare_word(c)?;
                match keyword(word) {
                    Some(listed) => Tok::Keyword(word, listed),
                    None => Tok::Word(word),
                }
            }
            '"' => match self.quoted('"')? {
                (body, false) => Tok::Quoted(body),
                (body, true) => Tok::Escaped(body),
            },
            '\'' => {
                self.quoted('\'')?;
                Tok::Str
            }
            '0'..='9' => self.number(),
            '.' if self.peek_char().is_some_and(|c| c.is_ascii_digit()) => {
                self.digits();
                Tok::Float
            }
            '.' => Tok::Dot,
            '$' => {
                match self.peek_char() {
                    Some(c) if is_ident_start(c) => {
                        self.bump();
                        self.bare_word(c)?;
                    }
                    Some('"') => {
                        self.bump();
                        self.quoted('"')?;
                    }
                    _ => {}
                }
                Tok::Param
            }
            '/' if regex => {
                self.regex()?;
                Tok::Regex
            }
            '/' => Tok::Op("/"),
            '+' => Tok::Op("+"),
            '-' => Tok::Op("-"),
            '*' => Tok::Op("*"),
            '%' => Tok::Op("%"),
            '&' => Tok::Op("&"),
            '|' => Tok::Op("|"),
            '^' => Tok::Op("^"),
            '=' if self.eat_char('~') => Tok::Op("=~"),
            '=' => Tok::Op("="),
            '!' if self.eat_char('=') => Tok::Op("!="),
            '!' if self.eat_char('~') => Tok::Op("!~"),
            '<' if self.eat_char('=') => Tok::Op("<="),
            '<' if self.eat_char('>') => Tok::Op("!="),
            '<' => Tok::Op("<"),
            '>' if self.eat_char('=') => Tok::Op(">="),
            '>' => Tok::Op(">"),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            ';' => Tok::Semi,
            ':' if self.eat_char(':') => Tok::DoubleColon,
            ':' => Tok::Colon,
            other => return Err(ScanError::IllegalChar(other)),
        };
        Ok(tok)
    }

    #[inline]
    fn eat_char(&mut self, c: char) -> bool {
        if self.peek_char() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn bare_word(&mut self, first: char) -> Result<&'a str, ScanError> {
        let start = self.pos - first.len_utf8();
        // Identifier characters are all ASCII: one byte each.
        let bytes = self.src.as_bytes();
        while bytes
            .get(self.pos)
            .is_some_and(|&b| is_ident_char(char::from(b)))
        {
            self.pos += 1;
        }
        let word = self.src.get(start..self.pos).unwrap_or("");
        // InfluxDB reads `abc"x"` as the single identifier `x` (and `FROM"x"`
        // as an identifier, not a keyword). Nobody writes that on purpose.
        if self.peek_char() == Some('"') {
            return Err(ScanError::QuoteAfterWord);
        }
        Ok(word)
    }

    /// Body of a `'string'` or `"identifier"` (opening quote consumed) as
    /// written, and whether it has escapes. InfluxDB's escapes are checked
    /// here; anything else after a backslash is an error there too.
    fn quoted(&mut self, delim: char) -> Result<(&'a str, bool), ScanError> {
        let unterminated = if delim == '"' {
            ScanError::UnterminatedIdent
        } else {
            ScanError::UnterminatedString
        };
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.bump() {
                None | Some('\n' | '\r') => return Err(unterminated),
                Some(c) if c == delim => {
                    let body = self.src.get(start..self.pos - 1).unwrap_or("");
                    return Ok((body, escaped));
                }
                Some('\\') => match self.bump() {
                    Some(c) if unescaped(c).is_some() => escaped = true,
                    Some(c) => return Err(ScanError::BadEscape(c)),
                    None => return Err(unterminated),
                },
                Some(_) => {}
            }
        }
    }

    /// Regex body (opening `/` consumed). A backslash escapes only a following
    /// `/`; otherwise it stands alone and the next character is read afresh,
    /// so `\\/` continues the regex exactly as InfluxDB's `ScanDelimited` does.
    fn regex(&mut self) -> Result<(), ScanError> {
        loop {
            match self.bump() {
                None | Some('\n' | '\r') => return Err(ScanError::UnterminatedRegex),
                Some('/') => return Ok(()),
                Some('\\') => {
                    self.eat_char('/');
                }
                Some(_) => {}
            }
        }
    }

    /// Number, duration or float (first character consumed). Follows
    /// `scanNumber`: a `.` after the digits is consumed even with no digit after it.
    fn number(&mut self) -> Tok<'a> {
        self.digits();
        if self.eat_char('.') {
            self.digits();
            return Tok::Float;
        }
        if self
            .peek_char()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == 'µ')
        {
            while self
                .peek_char()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == 'µ')
            {
                self.bump();
            }
            return Tok::Duration;
        }
        Tok::Int
    }

    fn digits(&mut self) {
        while self.peek_char().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str, regex: bool) -> Vec<Tok<'_>> {
        lex_all(src, regex).unwrap_or_else(|e| panic!("{src:?}: {e}"))
    }

    fn lex_all(src: &str, regex: bool) -> Result<Vec<Tok<'_>>, ScanError> {
        let mut lx = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            match lx.next(regex)? {
                Tok::Eof => return Ok(out),
                t => out.push(t),
            }
        }
    }

    #[test]
    fn words_keywords_and_quoted_identifiers() {
        let toks = ok(r#"select "select" _a1 "a\"b\\c""#, false);
        assert!(toks[0].is_kw("SELECT"));
        assert_eq!(toks[0].name(), None);
        assert_eq!(toks[1].name().as_deref(), Some("select"));
        assert_eq!(toks[2].name().as_deref(), Some("_a1"));
        assert_eq!(toks[3].name().as_deref(), Some("a\"b\\c"));
    }

    #[test]
    fn quoted_identifiers_are_copied_only_when_escaped() {
        let toks = ok(r#""cpu" "ab\nc" "é" "x\"" "\\\'\\""#, false);
        assert_eq!(toks[0], Tok::Quoted("cpu"));
        assert!(matches!(toks[0].name(), Some(Cow::Borrowed("cpu"))));
        // Kept as written; the escapes are undone when the name is read.
        assert_eq!(toks[1], Tok::Escaped(r"ab\nc"));
        assert!(matches!(toks[1].name(), Some(Cow::Owned(n)) if n == "ab\nc"));
        assert!(matches!(toks[2].name(), Some(Cow::Borrowed("é"))));
        assert_eq!(toks[3].name().as_deref(), Some("x\""));
        assert_eq!(toks[4].name().as_deref(), Some("\\'\\"));
        assert_eq!(lex_all(r#""ab\"#, false), Err(ScanError::UnterminatedIdent));
        assert_eq!(
            lex_all("\"ab\nc\"", false),
            Err(ScanError::UnterminatedIdent)
        );
    }

    #[test]
    fn every_escape_the_scan_accepts_is_undone_as_influxdb_reads_it() {
        let influxdb = [('n', '\n'), ('\\', '\\'), ('"', '"'), ('\'', '\'')];
        for c in (0..0x80).filter_map(char::from_u32).chain(['é', '☃']) {
            let src = format!("\"a\\{c}b\"");
            match influxdb.iter().find(|(e, _)| *e == c) {
                Some((_, means)) => {
                    let toks = ok(&src, false);
                    assert_eq!(toks[0].name().as_deref(), Some(&*format!("a{means}b")));
                }
                None => assert!(lex_all(&src, false).is_err(), "{src:?}"),
            }
        }
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(ok(r"'it\'s; ok'", false), vec![Tok::Str]);
        assert_eq!(lex_all("'abc", false), Err(ScanError::UnterminatedString));
        assert_eq!(lex_all("\"abc", false), Err(ScanError::UnterminatedIdent));
        assert_eq!(lex_all("'a\nb'", false), Err(ScanError::UnterminatedString));
        assert_eq!(lex_all("'a\rb'", false), Err(ScanError::UnterminatedString));
        assert_eq!(lex_all(r"'a\qb'", false), Err(ScanError::BadEscape('q')));
        assert_eq!(lex_all(r#"abc"x""#, false), Err(ScanError::QuoteAfterWord));
    }

    #[test]
    fn numbers_durations_params() {
        let toks = ok("10 1.5 .5 10s 1h30m $p $\"q r\" 1.", false);
        use Tok::*;
        assert_eq!(
            toks,
            vec![Int, Float, Float, Duration, Duration, Param, Param, Float]
        );
    }

    #[test]
    fn operators_and_punctuation() {
        let toks = ok(
            "= != <> < <= > >= =~ !~ + - * / % & | ^ . , ; ( ) :: :",
            false,
        );
        assert_eq!(toks.len(), 24);
        assert_eq!(toks[2], Tok::Op("!="));
        assert_eq!(lex_all("!", false), Err(ScanError::IllegalChar('!')));
        assert_eq!(lex_all("π", false), Err(ScanError::IllegalChar('π')));
        assert_eq!(
            lex_all("a\u{a0}b", false),
            Err(ScanError::IllegalChar('\u{a0}'))
        );
    }

    #[test]
    fn regex_versus_division() {
        assert_eq!(ok("/a;b/", true), vec![Tok::Regex]);
        assert_eq!(ok("/a", false), vec![Tok::Op("/"), Tok::Word("a")]);
        assert_eq!(ok(r"/a\/b/", true), vec![Tok::Regex]);
        // `\\/` does not end the regex: the second backslash escapes the slash.
        assert_eq!(ok(r"/a\\/ x/", true), vec![Tok::Regex]);
        assert_eq!(lex_all("/a\n/", true), Err(ScanError::UnterminatedRegex));
        assert_eq!(lex_all("/abc", true), Err(ScanError::UnterminatedRegex));
    }

    #[test]
    fn comments() {
        assert_eq!(ok("a -- b ; c\nd", false).len(), 2);
        assert_eq!(ok("a -- b\rd", false).len(), 2);
        assert_eq!(ok("a /* ; */ b /**/", true).len(), 2);
        assert_eq!(
            lex_all("a /* b", false),
            Err(ScanError::UnterminatedComment)
        );
        assert_eq!(lex_all("/*/", false), Err(ScanError::UnterminatedComment));
    }

    #[test]
    fn raw_peek_and_lookahead_do_not_consume() {
        let mut lx = Lexer::new("a./b/");
        assert_eq!(lx.next(false).expect("token"), Tok::Word("a"));
        assert_eq!(lx.peek(false).expect("token"), &Tok::Dot);
        assert_eq!(lx.next(false).expect("token"), Tok::Dot);
        assert!(lx.raw_next_is('/'));
        assert_eq!(lx.next(true).expect("token"), Tok::Regex);
    }

    proptest::proptest! {
        /// Whatever was peeked before, with either regex flag, `next`
        /// reads what a fresh scan from the same place reads.
        #[test]
        fn a_peeked_token_is_what_a_fresh_scan_reads(
            src in "[a-z /*'\"0-9().=~!\\-]{0,24}",
            flags in proptest::collection::vec(proptest::prelude::any::<(bool, bool)>(), 0..12),
        ) {
            let mut lx = Lexer::new(&src);
            for (peeked, taken) in flags {
                let _ = lx.peek(peeked);
                let mut fresh = Lexer::new(&src);
                fresh.pos = lx.pos;
                let expected = fresh.scan(taken);
                let got = lx.next(taken);
                proptest::prop_assert_eq!(&got, &expected);
                if got.is_err() {
                    break;
                }
                proptest::prop_assert_eq!(lx.pos, fresh.pos);
            }
        }
    }
}
