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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    /// Unquoted word that is not a keyword: an identifier, as written.
    Word(&'a str),
    /// Unquoted keyword: as written, and as listed (upper case). Whether
    /// a word is a keyword is looked up once, when it is scanned; the
    /// parser asks about most words several times.
    Keyword(&'a str, &'static str),
    /// Double-quoted identifier, unescaped (copied only when it had escapes).
    Quoted(Cow<'a, str>),
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
    /// The name this token denotes where InfluxQL expects an identifier.
    pub(super) fn ident(&self) -> Option<&str> {
        match self {
            Tok::Quoted(s) => Some(s),
            Tok::Word(w) => Some(w),
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
            Tok::Quoted(_) => "quoted identifier".into(),
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

pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// The last token peeked: where it started, whether a `/` could open a
    /// regex there, where it ends. The parser peeks most tokens before
    /// taking them; a token depends only on (position, regex flag), so the
    /// next `peek` or `next` from the same place takes it instead of
    /// scanning again.
    ahead: Option<Ahead<'a>>,
}

struct Ahead<'a> {
    start: usize,
    regex: bool,
    /// The token (after white space and comments) began with `/`.
    slash: bool,
    end: usize,
    tok: Result<Tok<'a>, ScanError>,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Lexer {
            src,
            pos: 0,
            ahead: None,
        }
    }

    /// True when the token peeked last is the one `regex` would read here:
    /// the flag only changes how a `/` reads, so a token not starting with
    /// one is the same either way.
    fn ahead_here(&self, regex: bool) -> bool {
        self.ahead
            .as_ref()
            .is_some_and(|a| a.start == self.pos && (a.regex == regex || !a.slash))
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek_char(&self) -> Option<char> {
        // Queries are almost all ASCII: a byte is a character then.
        match self.src.as_bytes().get(self.pos) {
            Some(&b) if b.is_ascii() => Some(char::from(b)),
            _ => self.rest().chars().next(),
        }
    }

    fn peek_char2(&self) -> Option<char> {
        match self.src.as_bytes().get(self.pos..self.pos + 2) {
            Some(&[a, b]) if a.is_ascii() && b.is_ascii() => Some(char::from(b)),
            _ => self.rest().chars().nth(1),
        }
    }

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

    fn skip_trivia(&mut self) -> Result<(), ScanError> {
        loop {
            match (self.peek_char(), self.peek_char2()) {
                // InfluxDB's reader turns `\r` into `\n`; other whitespace is illegal.
                (Some(' ' | '\t' | '\n' | '\r'), _) => {
                    self.bump();
                }
                (Some('-'), Some('-')) => {
                    while let Some(c) = self.bump() {
                        if c == '\n' || c == '\r' {
                            break;
                        }
                    }
                }
                // `/*` is a comment even where a regex may start: InfluxDB would
                // read a regex starting with `*` there, which never compiles, so
                // such a query is rejected by the server anyway.
                (Some('/'), Some('*')) => {
                    self.pos += 2;
                    let end = self
                        .rest()
                        .find("*/")
                        .ok_or(ScanError::UnterminatedComment)?;
                    self.pos += end + 2;
                }
                _ => return Ok(()),
            }
        }
    }

    /// The next significant token, left in place: lent, not copied (the
    /// parser peeks at most tokens several times before taking them).
    pub(super) fn peek(&mut self, regex: bool) -> Result<&Tok<'a>, ScanError> {
        if !self.ahead_here(regex) {
            let start = self.pos;
            let tok = self.scan(regex);
            let end = self.pos;
            self.pos = start;
            // A scan error may come before the token starts: never reused
            // for the other flag then.
            let slash = matches!(tok, Ok(Tok::Regex | Tok::Op("/")) | Err(_));
            self.ahead = Some(Ahead {
                start,
                regex,
                slash,
                end,
                tok,
            });
        }
        match self.ahead.as_ref().map(|a| &a.tok) {
            Some(Ok(tok)) => Ok(tok),
            Some(Err(e)) => Err(e.clone()),
            // Filled just above.
            None => Ok(&Tok::Eof),
        }
    }

    /// Next significant token; `regex` says whether a `/` opens a regex here.
    pub(super) fn next(&mut self, regex: bool) -> Result<Tok<'a>, ScanError> {
        if self.ahead_here(regex)
            && let Some(a) = self.ahead.take()
        {
            self.pos = a.end;
            return a.tok;
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
            '"' => Tok::Quoted(self.quoted('"')?),
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

    /// Body of a `'string'` or `"identifier"` (opening quote consumed), with
    /// InfluxDB's escapes; anything else after a backslash is an error there too.
    fn quoted(&mut self, delim: char) -> Result<Cow<'a, str>, ScanError> {
        let unterminated = if delim == '"' {
            ScanError::UnterminatedIdent
        } else {
            ScanError::UnterminatedString
        };
        // Borrowed up to the first escape, if there is one.
        let start = self.pos;
        loop {
            match self.peek_char() {
                None | Some('\n' | '\r') => return Err(unterminated),
                Some(c) if c == delim => {
                    let body = self.src.get(start..self.pos).unwrap_or("");
                    self.pos += c.len_utf8();
                    return Ok(Cow::Borrowed(body));
                }
                Some('\\') => break,
                Some(c) => self.pos += c.len_utf8(),
            }
        }
        let mut out = String::from(self.src.get(start..self.pos).unwrap_or(""));
        loop {
            match self.bump() {
                None | Some('\n' | '\r') => return Err(unterminated),
                Some(c) if c == delim => return Ok(Cow::Owned(out)),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some(c @ ('\\' | '"' | '\'')) => out.push(c),
                    Some(c) => return Err(ScanError::BadEscape(c)),
                    None => return Err(unterminated),
                },
                Some(c) => out.push(c),
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
        assert_eq!(toks[0].ident(), None);
        assert_eq!(toks[1].ident(), Some("select"));
        assert_eq!(toks[2].ident(), Some("_a1"));
        assert_eq!(toks[3], Tok::Quoted("a\"b\\c".into()));
    }

    #[test]
    fn quoted_identifiers_are_copied_only_when_escaped() {
        let toks = ok(r#""cpu" "ab\nc" "é" "x\"""#, false);
        assert!(matches!(&toks[0], Tok::Quoted(Cow::Borrowed("cpu"))));
        // The text before the first escape is kept, the escape undone.
        assert_eq!(toks[1], Tok::Quoted(Cow::Owned("ab\nc".to_owned())));
        assert!(matches!(&toks[2], Tok::Quoted(Cow::Borrowed("é"))));
        assert_eq!(toks[3], Tok::Quoted(Cow::Owned("x\"".to_owned())));
        assert_eq!(lex_all(r#""ab\"#, false), Err(ScanError::UnterminatedIdent));
        assert_eq!(
            lex_all("\"ab\nc\"", false),
            Err(ScanError::UnterminatedIdent)
        );
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
                let mut fresh = Lexer { src: &src, pos: lx.pos, ahead: None };
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
