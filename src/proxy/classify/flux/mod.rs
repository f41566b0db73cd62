//! Flux access analyzer: finds the buckets a Flux script reads and writes so
//! the proxy can authorize it, and refuses every construct whose target it
//! cannot pin down statically (non-literal buckets, bucket ids, remote hosts,
//! other organizations, bucket listing, non-allow-listed imports).
//!
//! There is no Flux parser here on purpose: the checks work on a token stream
//! plus bracket structure, and every rule is phrased so that a construct the
//! analyzer does not understand is refused rather than skipped. The lexer
//! mirrors the Ragel scanner of `influxdata/flux` where token boundaries
//! matter (strings, `${}` interpolation, regexes, comments, numbers), because
//! a disagreement there could hide a `from(...)` from the checks.

mod lexer;

use std::collections::{BTreeSet, HashMap};

use lexer::Tok;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FluxAccess {
    pub reads: Vec<String>,
    pub writes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FluxError {
    #[error("unterminated string literal")]
    UnterminatedString,
    #[error("unterminated regex literal")]
    UnterminatedRegex,
    #[error("unterminated string interpolation")]
    UnterminatedInterpolation,
    #[error("invalid escape sequence in string literal")]
    BadEscape,
    #[error("unexpected character {0:?}")]
    IllegalChar(char),
    #[error("unbalanced brackets")]
    Unbalanced,
    #[error("string interpolation nests too deeply")]
    TooDeep,
    #[error("unsupported syntax: {0}")]
    Unsupported(&'static str),
    #[error("bucket must be a string literal")]
    BucketNotLiteral,
    #[error("property names must be static")]
    DynamicKey,
    #[error("{0}() is not allowed")]
    ForbiddenFunction(String),
    #[error("argument {0:?} is not allowed")]
    ForbiddenArgument(String),
    #[error("import \"{0}\" is not allowed")]
    ForbiddenImport(String),
    #[error("import must name a static package path")]
    BadImport,
    #[error("from() requires a bucket argument")]
    FromWithoutBucket,
    #[error("{0}() requires a bucket argument")]
    WriteWithoutBucket(String),
    #[error("{0} may only be called directly")]
    WriteFunctionAsValue(String),
    #[error("query names no bucket")]
    NoBucket,
    #[error(
        "{0:?} is a keyword in some Flux versions and an identifier in others (0.184 and later); rename it"
    )]
    ChangedKeyword(&'static str),
    #[error("package {0:?} may only be used as {0}.<name>")]
    PackageAsValue(String),
    #[error("{0:?} may not be reached by index")]
    IndexedFunction(String),
}

/// Names whose value reads or writes buckets the analyzer must see called
/// by name: reaching them by index (`influxdb["to"]`) would hide them.
const INDEX_REFUSED: &[&str] = &["to", "wideTo", "from", "buckets", "databases"];

const ALLOWED_IMPORTS: &[&str] = &[
    "strings",
    "math",
    "date",
    "regexp",
    "array",
    "join",
    "interpolate",
    "timezone",
    "experimental",
    "experimental/aggregate",
    "influxdata/influxdb/schema",
    "influxdata/influxdb/v1",
    "influxdata/influxdb",
];

/// Call arguments that aim a call at something other than a named bucket on
/// this server and organization (`file` covers `v1.json(file:)`).
const REFUSED_ARGS: &[&str] = &["bucketID", "host", "org", "orgID", "token", "file"];

/// Functions that write: they take the bucket as a write target.
fn is_write_fn(name: &str) -> bool {
    name == "to" || name == "wideTo"
}

pub fn analyze(flux: &str) -> Result<FluxAccess, FluxError> {
    let (main, interps) = lexer::lex(flux)?;
    let mut an = Analyzer::default();
    an.run(&main)?;
    for interp in &interps {
        an.run(interp)?;
    }
    if an.reads.is_empty() {
        return Err(FluxError::NoBucket);
    }
    Ok(FluxAccess {
        reads: an.reads.into_iter().collect(),
        writes: an.writes.into_iter().collect(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Paren,
    Brace,
    Bracket,
}

/// An open bracket. Property lists (call arguments after `(` or `,`, record
/// fields after `{`, `,` or `with`) are where `name:` keys appear.
struct Frame {
    kind: Kind,
    /// Final name of the called function when this `(` opens a call.
    callee: Option<String>,
    /// The call goes through an import of the `array` package (`array.from`).
    via_array: bool,
    prop_start: bool,
    has_bucket: bool,
}

impl Frame {
    fn closer(&self) -> &'static str {
        match self.kind {
            Kind::Paren => ")",
            Kind::Brace => "}",
            Kind::Bracket => "]",
        }
    }
}

#[derive(Default)]
struct Analyzer {
    /// Import alias -> package path.
    aliases: HashMap<String, String>,
    reads: BTreeSet<String>,
    writes: BTreeSet<String>,
}

impl Analyzer {
    fn run(&mut self, toks: &[Tok]) -> Result<(), FluxError> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut i = 0;
        while let Some(tok) = toks.get(i) {
            let at_prop = stack.last().is_some_and(|f| f.prop_start);
            if let Some(f) = stack.last_mut() {
                f.prop_start = false;
            }
            let next = toks.get(i + 1);
            match tok {
                Tok::Kw("import") => {
                    i = self.import(toks, i)?;
                    continue;
                }
                Tok::Kw("builtin" | "testcase") => {
                    return Err(FluxError::Unsupported("builtin and test statements"));
                }
                // Flux 0.184 made these identifiers (`in / x / 2` is a
                // division there, a regex before): read one way here, the
                // other there.
                Tok::Kw(word @ ("in" | "empty" | "test")) => {
                    return Err(FluxError::ChangedKeyword(word));
                }
                Tok::P("[") if is_index(toks, i) => {
                    if let (Some(Tok::Str(Some(key))), Some(Tok::P("]"))) =
                        (toks.get(i + 1), toks.get(i + 2))
                        && INDEX_REFUSED.contains(&key.as_str())
                    {
                        return Err(FluxError::IndexedFunction(key.clone()));
                    }
                    stack.push(Frame {
                        kind: Kind::Bracket,
                        callee: None,
                        via_array: false,
                        prop_start: false,
                        has_bucket: false,
                    });
                }
                Tok::P(open @ ("(" | "{" | "[")) => {
                    let kind = match *open {
                        "(" => Kind::Paren,
                        "{" => Kind::Brace,
                        _ => Kind::Bracket,
                    };
                    let (callee, via_array) = match kind {
                        Kind::Paren => self.callee(toks, i),
                        _ => (None, false),
                    };
                    let prop_start = kind != Kind::Bracket;
                    stack.push(Frame {
                        kind,
                        callee,
                        via_array,
                        prop_start,
                        has_bucket: false,
                    });
                }
                Tok::P(close @ (")" | "}" | "]")) => {
                    let frame = stack.pop().ok_or(FluxError::Unbalanced)?;
                    if frame.closer() != *close {
                        return Err(FluxError::Unbalanced);
                    }
                    finish_call(&frame)?;
                }
                Tok::P(",") => {
                    if let Some(f) = stack.last_mut() {
                        f.prop_start = f.kind != Kind::Bracket;
                    }
                }
                Tok::Ident(_) | Tok::Str(_) if at_prop && next == Some(&Tok::P(":")) => {
                    i = self.property(toks, i, &mut stack)?;
                    continue;
                }
                Tok::Ident(name) => {
                    let top = stack.last_mut();
                    let shorthand = at_prop
                        && top.as_ref().is_some_and(|f| {
                            f.kind == Kind::Paren
                                && matches!(next, Some(Tok::P(p)) if *p == "," || *p == ")")
                        });
                    if shorthand && REFUSED_ARGS.contains(&name.as_str()) {
                        return Err(FluxError::ForbiddenArgument(name.clone()));
                    }
                    if let Some(f) = top.filter(|f| f.kind == Kind::Brace && name == "with") {
                        f.prop_start = true;
                    }
                    self.ident_use(toks, i, name)?;
                }
                _ => {}
            }
            i += 1;
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(FluxError::Unbalanced)
        }
    }

    /// `import "path"` or `import alias "path"`; returns the index after it.
    fn import(&mut self, toks: &[Tok], i: usize) -> Result<usize, FluxError> {
        let (alias, path, next) = match (toks.get(i + 1), toks.get(i + 2)) {
            (Some(Tok::Str(Some(path))), _) => {
                (path.rsplit('/').next().unwrap_or(path), path, i + 2)
            }
            (Some(Tok::Ident(alias)), Some(Tok::Str(Some(path)))) => (alias.as_str(), path, i + 3),
            _ => return Err(FluxError::BadImport),
        };
        if !ALLOWED_IMPORTS.contains(&path.as_str()) {
            return Err(FluxError::ForbiddenImport(path.clone()));
        }
        self.aliases.insert(alias.to_owned(), path.clone());
        Ok(next)
    }

    /// Name of the function a `(` at `i` calls, and whether it is `array.<name>`.
    fn callee(&self, toks: &[Tok], i: usize) -> (Option<String>, bool) {
        let before = |k: usize| i.checked_sub(k).and_then(|j| toks.get(j));
        let Some(Tok::Ident(name)) = before(1) else {
            return (None, false);
        };
        let via_array = before(2) == Some(&Tok::P("."))
            && matches!(before(3), Some(Tok::Ident(q)) if self.aliases.get(q).is_some_and(|p| p == "array"));
        (Some(name.clone()), via_array)
    }

    /// A `key: value` property at `i`; returns the index of the value's first token.
    fn property(
        &mut self,
        toks: &[Tok],
        i: usize,
        stack: &mut [Frame],
    ) -> Result<usize, FluxError> {
        let key = match toks.get(i) {
            Some(Tok::Ident(k) | Tok::Str(Some(k))) => k.as_str(),
            _ => return Err(FluxError::DynamicKey),
        };
        let frame = stack.last_mut().ok_or(FluxError::Unbalanced)?;
        if key == "bucket" {
            let bucket = match (toks.get(i + 2), toks.get(i + 3)) {
                (Some(Tok::Str(Some(b))), Some(Tok::P(p))) if *p == "," || *p == frame.closer() => {
                    b
                }
                _ => return Err(FluxError::BucketNotLiteral),
            };
            frame.has_bucket = true;
            let target = if frame.callee.as_deref().is_some_and(is_write_fn) {
                &mut self.writes
            } else {
                &mut self.reads
            };
            target.insert(bucket.clone());
            return Ok(i + 3);
        }
        if frame.kind == Kind::Paren && REFUSED_ARGS.contains(&key) {
            return Err(FluxError::ForbiddenArgument(key.to_owned()));
        }
        Ok(i + 2)
    }

    /// Uses of an identifier outside key position that could reach a bucket
    /// the other rules cannot see.
    fn ident_use(&self, toks: &[Tok], i: usize, name: &str) -> Result<(), FluxError> {
        let before = |k: usize| i.checked_sub(k).and_then(|j| toks.get(j));
        let member = before(1) == Some(&Tok::P("."));
        // A package is a record of functions: held in a variable, passed
        // along or indexed, its `to` or `buckets` would be called under
        // another name. Only `alias.member` is accepted.
        if !member && self.aliases.contains_key(name) {
            let dotted = toks.get(i + 1) == Some(&Tok::P("."))
                && matches!(toks.get(i + 2), Some(Tok::Ident(_)));
            if !dotted {
                return Err(FluxError::PackageAsValue(name.to_owned()));
            }
        }
        let package_member =
            member && matches!(before(2), Some(Tok::Ident(q)) if self.aliases.contains_key(q));
        let called = toks.get(i + 1) == Some(&Tok::P("("));
        match name {
            // A variable or shorthand property called `bucket` can carry any name.
            "bucket" if !member => Err(FluxError::BucketNotLiteral),
            "buckets" | "databases" if !member || package_member => {
                Err(FluxError::ForbiddenFunction(name.to_owned()))
            }
            // An aliased `to` would make its bucket look like a read.
            _ if is_write_fn(name) && !called && (!member || package_member) => {
                Err(FluxError::WriteFunctionAsValue(name.to_owned()))
            }
            _ => Ok(()),
        }
    }
}

/// True when the `[` at `i` indexes the value before it (`x["k"]`,
/// `f()["k"]`), not an array literal.
fn is_index(toks: &[Tok], i: usize) -> bool {
    i.checked_sub(1)
        .and_then(|j| toks.get(j))
        .is_some_and(|t| matches!(t, Tok::Ident(_) | Tok::P(")" | "]")))
}

fn finish_call(frame: &Frame) -> Result<(), FluxError> {
    match frame.callee.as_deref() {
        Some("from") if !frame.via_array && !frame.has_bucket => Err(FluxError::FromWithoutBucket),
        Some(name) if is_write_fn(name) && !frame.has_bucket => {
            Err(FluxError::WriteWithoutBucket(name.to_owned()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
