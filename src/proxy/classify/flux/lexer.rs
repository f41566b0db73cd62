//! Flux tokenizer for the access analyzer. It follows the Ragel scanner of
//! `influxdata/flux` wherever a token boundary decides what is code and what
//! is text: strings with `${}` interpolation, regexes, comments and numbers.

use super::FluxError;

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "empty", "in", "import", "package", "return", "option", "builtin",
    "testcase", "test", "if", "then", "else", "exists",
];

const PUNCTUATION: &[&str] = &[
    "|>", "<-", "<=", ">=", "==", "!=", "=~", "!~", "=>", "+", "-", "*", "%", "^", "<", ">", "=",
    "(", ")", "[", "]", "{", "}", ":", ",", ".",
];

const DURATION_UNITS: &[&str] = &["mo", "ms", "us", "µs", "ns", "y", "w", "d", "h", "m", "s"];

const MAX_INTERPOLATION_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Kw(&'static str),
    /// `None` when the literal interpolates `${...}`, so its value is not static.
    Str(Option<String>),
    Num,
    Regex,
    P(&'static str),
}

fn push(buf: &mut Vec<u8>, c: char) {
    buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// The token `k` places before the end of `toks`.
fn back(toks: &[Tok], k: usize) -> Option<&Tok> {
    toks.len().checked_sub(k).and_then(|i| toks.get(i))
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    /// Token streams of every `${...}`, analyzed as code of their own.
    interps: Vec<Vec<Tok>>,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, s: &str) -> bool {
        let hit = self.rest().starts_with(s);
        if hit {
            self.pos += s.len();
        }
        hit
    }

    fn skip_trivia(&mut self) {
        loop {
            if self.eat("//") {
                let end = self.rest().find('\n').unwrap_or(self.rest().len());
                self.pos += end;
            } else if self.peek().is_some_and(|c| " \t\n\r\x0b\x0c".contains(c)) {
                self.bump();
            } else {
                return;
            }
        }
    }

    /// Tokens up to end of input, or up to the `}` closing an interpolation.
    fn tokens(&mut self, in_interp: bool) -> Result<Vec<Tok>, FluxError> {
        let mut out = Vec::new();
        let mut braces = 0usize;
        loop {
            self.skip_trivia();
            let Some(c) = self.peek() else {
                return if in_interp {
                    Err(FluxError::UnterminatedInterpolation)
                } else {
                    Ok(out)
                };
            };
            if in_interp && c == '}' && braces == 0 {
                self.bump();
                return Ok(out);
            }
            let tok = self.token(c, &out)?;
            match tok {
                Tok::P("{") => braces += 1,
                Tok::P("}") => braces = braces.saturating_sub(1),
                _ => {}
            }
            out.push(tok);
        }
    }

    fn token(&mut self, c: char, prev: &[Tok]) -> Result<Tok, FluxError> {
        if c.is_alphabetic() || c == '_' {
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                self.bump();
            }
            let word = self.src.get(start..self.pos).unwrap_or("");
            return Ok(match KEYWORDS.iter().find(|k| **k == word) {
                Some(k) => Tok::Kw(k),
                None => Tok::Ident(word.to_owned()),
            });
        }
        let float_dot = c == '.'
            && self
                .rest()
                .chars()
                .nth(1)
                .is_some_and(|d| d.is_ascii_digit());
        if c.is_ascii_digit() || float_dot {
            self.number();
            return Ok(Tok::Num);
        }
        if self.eat("\"") {
            return self.string();
        }
        if c == '/' {
            self.bump();
            if !Self::regex_allowed(prev)? {
                return Ok(Tok::P("/"));
            }
            return self.regex();
        }
        match PUNCTUATION.iter().find(|p| self.rest().starts_with(**p)) {
            Some(p) => {
                self.pos += p.len();
                Ok(Tok::P(p))
            }
            None => Err(FluxError::IllegalChar(c)),
        }
    }

    /// Flux's parser scans `/` as a regex only where it expects an operand;
    /// after an operand it is division. Decided from the previous tokens,
    /// including the statement starts after `import "p"` and `package x`.
    fn regex_allowed(prev: &[Tok]) -> Result<bool, FluxError> {
        Ok(match back(prev, 1) {
            None => true,
            Some(Tok::Kw(word @ ("empty" | "in" | "test"))) => {
                return Err(FluxError::ChangedKeyword(word));
            }
            Some(Tok::Kw(_)) => true,
            Some(Tok::P(p)) => !matches!(*p, ")" | "]" | "}" | "<-"),
            Some(Tok::Str(_)) => {
                let alias = matches!(back(prev, 2), Some(Tok::Ident(_)));
                let import = back(prev, if alias { 3 } else { 2 });
                import == Some(&Tok::Kw("import"))
            }
            Some(Tok::Ident(_)) => back(prev, 2) == Some(&Tok::Kw("package")),
            Some(Tok::Num | Tok::Regex) => false,
        })
    }

    /// Regex body after the opening `/`. The scanner takes the longest match,
    /// so the regex ends at the first `/` not preceded by a backslash (any
    /// `\/` can be read as an escape). Without such a `/` the scanner would
    /// fall back to a shorter match; refuse that instead of imitating it.
    fn regex(&mut self) -> Result<Tok, FluxError> {
        let mut prev = '/';
        while let Some(c) = self.bump() {
            if c == '/' && prev != '\\' {
                return Ok(Tok::Regex);
            }
            prev = c;
        }
        Err(FluxError::UnterminatedRegex)
    }

    /// String body after the opening quote, following `string_lit`: escapes
    /// `\n \r \t \\ \" \${ \xNN`; `$` followed by anything but `{` is literal
    /// and swallows that next character (so `"$\"` is a complete string).
    fn string(&mut self) -> Result<Tok, FluxError> {
        let mut buf = Vec::new();
        let mut interpolated = false;
        loop {
            match self.bump().ok_or(FluxError::UnterminatedString)? {
                '"' => break,
                '\\' => match self.bump() {
                    Some('n') => buf.push(b'\n'),
                    Some('r') => buf.push(b'\r'),
                    Some('t') => buf.push(b'\t'),
                    Some(c @ ('\\' | '"')) => push(&mut buf, c),
                    Some('$') if self.eat("{") => buf.extend_from_slice(b"${"),
                    Some('x') => {
                        let hi = self.bump().and_then(|c| c.to_digit(16));
                        let lo = self.bump().and_then(|c| c.to_digit(16));
                        match (hi, lo) {
                            (Some(hi), Some(lo)) => buf.extend(u8::try_from(hi * 16 + lo).ok()),
                            _ => return Err(FluxError::BadEscape),
                        }
                    }
                    _ => return Err(FluxError::BadEscape),
                },
                '$' if self.eat("{") => {
                    interpolated = true;
                    self.depth += 1;
                    if self.depth > MAX_INTERPOLATION_DEPTH {
                        return Err(FluxError::TooDeep);
                    }
                    let inner = self.tokens(true)?;
                    self.depth -= 1;
                    self.interps.push(inner);
                }
                '$' => {
                    push(&mut buf, '$');
                    if let Some(c) = self.peek().filter(|&c| c != '"') {
                        self.bump();
                        push(&mut buf, c);
                    }
                }
                c => push(&mut buf, c),
            }
        }
        if interpolated {
            return Ok(Tok::Str(None));
        }
        String::from_utf8(buf)
            .map(|s| Tok::Str(Some(s)))
            .map_err(|_| FluxError::BadEscape)
    }

    fn digits(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        self.pos > start
    }

    /// Numbers, durations and date-times, matched exactly: a sloppy match
    /// could swallow a following identifier (`1buckets()` is `1` then `buckets()`).
    fn number(&mut self) {
        if self.date_time() {
            return;
        }
        let start = self.pos;
        self.digits();
        if self.eat(".") {
            self.digits();
            return;
        }
        // A duration is (digits unit)+; otherwise the token is the integer.
        let mut end = self.pos;
        self.pos = start;
        while self.digits() {
            match DURATION_UNITS.iter().find(|u| self.rest().starts_with(**u)) {
                Some(u) => {
                    self.pos += u.len();
                    end = self.pos;
                }
                None => break,
            }
        }
        self.pos = end;
    }

    /// `YYYY-MM-DD` with an optional `Thh:mm:ss[.f][Z|±hh:mm]`.
    fn date_time(&mut self) -> bool {
        let fits = |s: &str, pat: &str| {
            s.len() >= pat.len()
                && s.bytes().zip(pat.bytes()).all(|(c, p)| {
                    if p == b'9' {
                        c.is_ascii_digit()
                    } else {
                        c == p
                    }
                })
        };
        if !fits(self.rest(), "9999-99-99") {
            return false;
        }
        self.pos += 10;
        if fits(self.rest(), "T99:99:99") {
            self.pos += 9;
            if self.eat(".") {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
            }
            if !self.eat("Z") && (fits(self.rest(), "+99:99") || fits(self.rest(), "-99:99")) {
                self.pos += 6;
            }
        }
        true
    }
}

/// Tokens of the script, and separately those of every `${...}` in it.
pub(super) fn lex(src: &str) -> Result<(Vec<Tok>, Vec<Vec<Tok>>), FluxError> {
    let mut lexer = Lexer {
        src,
        pos: 0,
        depth: 0,
        interps: Vec::new(),
    };
    let main = lexer.tokens(false)?;
    Ok((main, lexer.interps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap_or_else(|e| panic!("{src:?}: {e}")).0
    }

    fn id(s: &str) -> Tok {
        Tok::Ident(s.into())
    }

    fn st(s: &str) -> Tok {
        Tok::Str(Some(s.into()))
    }

    #[test]
    fn strings_and_interpolation() {
        assert_eq!(
            toks(r#""a$b" "$" "x$\" "\"\\\x41\${}\n""#),
            [st("a$b"), st("$"), st("x$\\"), st("\"\\A${}\n")]
        );
        assert_eq!(toks("\"multi\nline ☃\""), [st("multi\nline ☃")]);
        let (main, interps) = lex(r#""a ${ f(s: "}") } b ${ {x: 1}.x }""#).unwrap_or_default();
        assert_eq!(main, [Tok::Str(None)]);
        assert_eq!(interps.len(), 2);
        assert_eq!(
            interps[0],
            [
                id("f"),
                Tok::P("("),
                id("s"),
                Tok::P(":"),
                st("}"),
                Tok::P(")")
            ]
        );
    }

    #[test]
    fn regex_or_division_by_position() {
        use Tok::*;
        assert_eq!(toks("a / b / 2"), [id("a"), P("/"), id("b"), P("/"), Num]);
        assert_eq!(toks("(a) / 2"), [P("("), id("a"), P(")"), P("/"), Num]);
        assert_eq!(toks("r =~ /\"/"), [id("r"), P("=~"), Regex]);
        assert_eq!(toks("f(x: /a\\/b/, y: /c/)")[4], Regex);
        assert_eq!(toks("import \"s\"\n/\"/"), [Kw("import"), st("s"), Regex]);
        assert_eq!(toks("import a \"s\" /x/").last(), Some(&Regex));
        assert_eq!(toks("package main\n/x/").last(), Some(&Regex));
        assert_eq!(toks("return /x/").last(), Some(&Regex));
        assert_eq!(toks("/a\\\\/ /b/"), [Regex, id("b"), P("/")]);
        assert_eq!(toks("x // /\"\ny"), [id("x"), id("y")]);
    }

    #[test]
    fn numbers_do_not_swallow_identifiers() {
        use Tok::*;
        assert_eq!(toks("1buckets"), [Num, id("buckets")]);
        assert_eq!(
            toks("1h30m 1mo 5µs .5 1. 0.25"),
            [Num, Num, Num, Num, Num, Num]
        );
        assert_eq!(
            toks("1.5h 1d5 1mfrom"),
            [Num, id("h"), Num, Num, Num, id("from")]
        );
        assert_eq!(
            toks("2021-01-01T00:00:00.5+01:00 2021-01-01T00:00:00Z 2021-01-01"),
            [Num, Num, Num]
        );
        assert_eq!(toks("2021-01-01Tx"), [Num, id("Tx")]);
    }

    #[test]
    fn lexical_errors() {
        for (src, e) in [
            ("\"abc", FluxError::UnterminatedString),
            ("x =~ /a\\/", FluxError::UnterminatedRegex),
            ("x =~ /a", FluxError::UnterminatedRegex),
            ("\"${x", FluxError::UnterminatedInterpolation),
            ("\"${x\"", FluxError::UnterminatedString),
            ("\"\\q\"", FluxError::BadEscape),
            ("\"\\$x\"", FluxError::BadEscape),
            ("\"\\xff\"", FluxError::BadEscape),
            ("\"\\x4\"", FluxError::BadEscape),
            ("@edition", FluxError::IllegalChar('@')),
            ("a ? b", FluxError::IllegalChar('?')),
            ("a # b", FluxError::IllegalChar('#')),
            ("a ! b", FluxError::IllegalChar('!')),
            ("x = empty /a/", FluxError::ChangedKeyword("empty")),
        ] {
            assert_eq!(lex(src).map(|_| ()), Err(e), "{src:?}");
        }
        let deep = format!("{}{}", "\"${".repeat(20), "}\"".repeat(20));
        assert_eq!(lex(&deep).map(|_| ()), Err(FluxError::TooDeep));
    }
}
