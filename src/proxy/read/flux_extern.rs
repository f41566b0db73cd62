//! The `extern` of a Flux query request: a Flux syntax tree (a `File`)
//! InfluxDB evaluates before the query. Arbitrary Flux there would run
//! unseen by the analyzer, so only what the official client libraries send
//! is accepted — and then re-serialized from what was read:
//!
//! - `option NAME = <literal>` statements: strings, integers, unsigned
//!   integers, floats, booleans, date-times, durations (also negated), and
//!   arrays of those (the Python `influxdb-client` turns query parameters
//!   into these; the query refers to them by name);
//! - `import "profiler"` with `option profiler.enabledProfilers = [<strings>]`
//!   (the client's profilers option).
//!
//! A literal cannot name a bucket the analyzer did not see: `from()` takes
//! only a string literal bucket written in the query itself.

use serde_json::{Map, Value, json};

/// One literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `StringLiteral`.
    Str(String),
    /// `IntegerLiteral` (its value is a decimal string on the wire).
    Int(String),
    /// `UnsignedIntegerLiteral`.
    UInt(String),
    /// `FloatLiteral`.
    Float(serde_json::Number),
    /// `BooleanLiteral`.
    Bool(bool),
    /// `DateTimeLiteral` (RFC 3339 text).
    DateTime(String),
    /// `DurationLiteral`: (magnitude, unit) pairs.
    Duration(Vec<(i64, String)>),
    /// `UnaryExpression` `-` of a number or duration.
    Negated(Box<Literal>),
    /// `ArrayExpression` of literals.
    Array(Vec<Literal>),
}

/// One statement of the extern.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `option NAME = literal`.
    Option {
        /// The option's name.
        name: String,
        /// Its value.
        value: Literal,
    },
    /// `option profiler.enabledProfilers = [...]`.
    Profilers(Vec<String>),
}

/// An accepted extern.
#[derive(Debug, Clone, PartialEq)]
pub struct Extern {
    /// `import "profiler"` was given.
    pub imports_profiler: bool,
    /// The statements, in order.
    pub body: Vec<Statement>,
}

const DURATION_UNITS: &[&str] = &["y", "mo", "w", "d", "h", "m", "s", "ms", "us", "µs", "ns"];

type Checked<T> = Result<T, String>;

/// The members of `v`, which must be an object of node type `kind` (when
/// given) with no keys but `keys` and `type`.
fn node<'a>(v: &'a Value, kind: Option<&str>, keys: &[&str]) -> Checked<&'a Map<String, Value>> {
    let object = v
        .as_object()
        .ok_or_else(|| "extern nodes must be objects".to_owned())?;
    if let Some(kind) = kind
        && object.get("type").and_then(Value::as_str) != Some(kind)
    {
        return Err(format!("extern: expected a {kind}"));
    }
    if let Some(key) = object
        .keys()
        .find(|k| *k != "type" && !keys.contains(&k.as_str()))
    {
        return Err(format!("extern: unexpected key {key:?}"));
    }
    Ok(object)
}

fn member<'a>(object: &'a Map<String, Value>, key: &str) -> Checked<&'a Value> {
    object
        .get(key)
        .ok_or_else(|| format!("extern: missing {key:?}"))
}

fn string(object: &Map<String, Value>, key: &str) -> Checked<String> {
    member(object, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("extern: {key:?} must be a string"))
}

fn identifier(v: &Value) -> Checked<String> {
    let name = string(node(v, Some("Identifier"), &["name"])?, "name")?;
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("extern: invalid identifier {name:?}"));
    }
    Ok(name)
}

fn integer_text(text: &str, signed: bool) -> bool {
    let digits = if signed {
        text.strip_prefix('-').unwrap_or(text)
    } else {
        text
    };
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn literal(v: &Value, depth: u8) -> Checked<Literal> {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    Ok(match kind {
        "StringLiteral" => Literal::Str(string(node(v, None, &["value"])?, "value")?),
        "IntegerLiteral" | "UnsignedIntegerLiteral" => {
            let text = string(node(v, None, &["value"])?, "value")?;
            let signed = kind == "IntegerLiteral";
            if !integer_text(&text, signed) {
                return Err(format!("extern: invalid {kind} {text:?}"));
            }
            if signed {
                Literal::Int(text)
            } else {
                Literal::UInt(text)
            }
        }
        "FloatLiteral" => match member(node(v, None, &["value"])?, "value")? {
            Value::Number(n) => Literal::Float(n.clone()),
            _ => return Err("extern: FloatLiteral value must be a number".to_owned()),
        },
        "BooleanLiteral" => match member(node(v, None, &["value"])?, "value")? {
            Value::Bool(b) => Literal::Bool(*b),
            _ => return Err("extern: BooleanLiteral value must be a boolean".to_owned()),
        },
        "DateTimeLiteral" => {
            let text = string(node(v, None, &["value"])?, "value")?;
            // RFC 3339 text; InfluxDB parses it, the proxy only keeps it a
            // plain timestamp.
            let plausible = !text.is_empty()
                && text.len() <= 40
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"-:.TZ+".contains(&b));
            if !plausible {
                return Err(format!("extern: invalid DateTimeLiteral {text:?}"));
            }
            Literal::DateTime(text)
        }
        "DurationLiteral" => {
            let values = member(node(v, None, &["values"])?, "values")?
                .as_array()
                .ok_or_else(|| "extern: DurationLiteral values must be an array".to_owned())?;
            let mut parts = Vec::with_capacity(values.len());
            for value in values {
                let d = node(value, None, &["magnitude", "unit"])?;
                let magnitude = member(d, "magnitude")?
                    .as_i64()
                    .ok_or_else(|| "extern: duration magnitude must be an integer".to_owned())?;
                let unit = string(d, "unit")?;
                if !DURATION_UNITS.contains(&unit.as_str()) {
                    return Err(format!("extern: invalid duration unit {unit:?}"));
                }
                parts.push((magnitude, unit));
            }
            if parts.is_empty() {
                return Err("extern: empty DurationLiteral".to_owned());
            }
            Literal::Duration(parts)
        }
        "UnaryExpression" => {
            let u = node(v, None, &["operator", "argument"])?;
            if string(u, "operator")? != "-" {
                return Err("extern: only unary minus is accepted".to_owned());
            }
            let argument = literal(member(u, "argument")?, depth)?;
            if !matches!(
                argument,
                Literal::Int(_) | Literal::Float(_) | Literal::Duration(_)
            ) {
                return Err("extern: unary minus applies to numbers and durations".to_owned());
            }
            Literal::Negated(Box::new(argument))
        }
        "ArrayExpression" if depth == 0 => {
            let elements = member(node(v, None, &["elements"])?, "elements")?
                .as_array()
                .ok_or_else(|| "extern: ArrayExpression elements must be an array".to_owned())?;
            Literal::Array(
                elements
                    .iter()
                    .map(|e| literal(e, depth + 1))
                    .collect::<Checked<_>>()?,
            )
        }
        other => return Err(format!("extern: {other:?} is not an accepted literal")),
    })
}

fn statement(v: &Value, imports_profiler: bool) -> Checked<Statement> {
    let option = node(v, Some("OptionStatement"), &["assignment"])?;
    let assignment = member(option, "assignment")?;
    match assignment.get("type").and_then(Value::as_str) {
        Some("VariableAssignment") => {
            let a = node(assignment, None, &["id", "init"])?;
            Ok(Statement::Option {
                name: identifier(member(a, "id")?)?,
                value: literal(member(a, "init")?, 0)?,
            })
        }
        Some("MemberAssignment") if imports_profiler => {
            let a = node(assignment, None, &["member", "init"])?;
            let m = node(
                member(a, "member")?,
                Some("MemberExpression"),
                &["object", "property"],
            )?;
            if identifier(member(m, "object")?)? != "profiler"
                || identifier(member(m, "property")?)? != "enabledProfilers"
            {
                return Err("extern: only profiler.enabledProfilers may be set".to_owned());
            }
            let Literal::Array(items) = literal(member(a, "init")?, 0)? else {
                return Err("extern: profiler.enabledProfilers must be an array".to_owned());
            };
            let names = items
                .into_iter()
                .map(|i| match i {
                    Literal::Str(s) => Ok(s),
                    _ => Err("extern: profiler names must be strings".to_owned()),
                })
                .collect::<Checked<_>>()?;
            Ok(Statement::Profilers(names))
        }
        _ => Err("extern: only option statements with literal values are accepted".to_owned()),
    }
}

impl Extern {
    /// Reads an `extern` value.
    pub fn from_json(v: &Value) -> Checked<Self> {
        let file = node(v, Some("File"), &["package", "name", "imports", "body"])
            .or_else(|_| node(v, None, &["package", "name", "imports", "body"]))?;
        for key in ["package", "name"] {
            if file.get(key).is_some_and(|v| !v.is_null()) {
                return Err(format!("extern: {key:?} is not accepted"));
            }
        }
        let empty = Vec::new();
        let list = |key: &str| -> Checked<&Vec<Value>> {
            match file.get(key) {
                None | Some(Value::Null) => Ok(&empty),
                Some(Value::Array(a)) => Ok(a),
                Some(_) => Err(format!("extern: {key:?} must be an array")),
            }
        };
        let mut imports_profiler = false;
        for import in list("imports")? {
            let i = node(import, Some("ImportDeclaration"), &["path"])?;
            let path = string(
                node(member(i, "path")?, Some("StringLiteral"), &["value"])?,
                "value",
            )?;
            if path != "profiler" || imports_profiler {
                return Err(format!("extern: import {path:?} is not accepted"));
            }
            imports_profiler = true;
        }
        let body = list("body")?
            .iter()
            .map(|s| statement(s, imports_profiler))
            .collect::<Checked<_>>()?;
        Ok(Self {
            imports_profiler,
            body,
        })
    }

    /// The canonical JSON, in the shape the client libraries send.
    pub fn to_json(&self) -> Value {
        let imports: Vec<Value> = if self.imports_profiler {
            vec![json!({
                "type": "ImportDeclaration",
                "path": {"type": "StringLiteral", "value": "profiler"}
            })]
        } else {
            Vec::new()
        };
        let body: Vec<Value> = self
            .body
            .iter()
            .map(|s| match s {
                Statement::Option { name, value } => json!({
                    "type": "OptionStatement",
                    "assignment": {
                        "type": "VariableAssignment",
                        "id": {"type": "Identifier", "name": name},
                        "init": literal_json(value),
                    }
                }),
                Statement::Profilers(names) => json!({
                    "type": "OptionStatement",
                    "assignment": {
                        "type": "MemberAssignment",
                        "member": {
                            "type": "MemberExpression",
                            "object": {"type": "Identifier", "name": "profiler"},
                            "property": {"type": "Identifier", "name": "enabledProfilers"},
                        },
                        "init": literal_json(&Literal::Array(
                            names.iter().cloned().map(Literal::Str).collect()
                        )),
                    }
                }),
            })
            .collect();
        json!({"imports": imports, "body": body})
    }
}

fn literal_json(l: &Literal) -> Value {
    match l {
        Literal::Str(s) => json!({"type": "StringLiteral", "value": s}),
        Literal::Int(s) => json!({"type": "IntegerLiteral", "value": s}),
        Literal::UInt(s) => json!({"type": "UnsignedIntegerLiteral", "value": s}),
        Literal::Float(n) => json!({"type": "FloatLiteral", "value": n}),
        Literal::Bool(b) => json!({"type": "BooleanLiteral", "value": b}),
        Literal::DateTime(s) => json!({"type": "DateTimeLiteral", "value": s}),
        Literal::Duration(parts) => json!({
            "type": "DurationLiteral",
            "values": parts
                .iter()
                .map(|(m, u)| json!({"magnitude": m, "unit": u}))
                .collect::<Vec<_>>(),
        }),
        Literal::Negated(inner) => json!({
            "type": "UnaryExpression",
            "operator": "-",
            "argument": literal_json(inner),
        }),
        Literal::Array(items) => json!({
            "type": "ArrayExpression",
            "elements": items.iter().map(literal_json).collect::<Vec<_>>(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `influxdb-client` 1.50 (Python) sends: no parameters, every
    /// parameter type, profilers.
    const CLIENT_EXTERNS: [&str; 3] = [
        r#"{"imports": [], "body": []}"#,
        r#"{"imports": [], "body": [{"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "start"}, "init": {"type": "UnaryExpression", "operator": "-", "argument": {"type": "DurationLiteral", "values": [{"magnitude": 3600000000, "unit": "us"}]}}}}, {"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "host"}, "init": {"type": "StringLiteral", "value": "a"}}}, {"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "v"}, "init": {"type": "IntegerLiteral", "value": "1"}}}, {"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "f"}, "init": {"type": "FloatLiteral", "value": 1.5}}}, {"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "b"}, "init": {"type": "BooleanLiteral", "value": true}}}, {"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "when"}, "init": {"type": "DateTimeLiteral", "value": "2024-01-01T00:00:00.000000000Z"}}}, {"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "arr"}, "init": {"type": "ArrayExpression", "elements": [{"type": "StringLiteral", "value": "a"}, {"type": "StringLiteral", "value": "b"}]}}}, {"type": "OptionStatement", "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": "pos"}, "init": {"type": "DurationLiteral", "values": [{"magnitude": 300000000, "unit": "us"}]}}}]}"#,
        r#"{"imports": [{"type": "ImportDeclaration", "path": {"type": "StringLiteral", "value": "profiler"}}], "body": [{"type": "OptionStatement", "assignment": {"type": "MemberAssignment", "member": {"type": "MemberExpression", "object": {"type": "Identifier", "name": "profiler"}, "property": {"type": "Identifier", "name": "enabledProfilers"}}, "init": {"type": "ArrayExpression", "elements": [{"type": "StringLiteral", "value": "query"}, {"type": "StringLiteral", "value": "operator"}]}}}]}"#,
    ];

    #[test]
    fn client_externs_round_trip_exactly() {
        for text in CLIENT_EXTERNS {
            let v: Value = serde_json::from_str(text).unwrap();
            let e = Extern::from_json(&v).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(e.to_json(), v, "re-serialized as the client sent it");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let option = |init: &str| {
            format!(
                r#"{{"body": [{{"type": "OptionStatement", "assignment": {{"type": "VariableAssignment", "id": {{"type": "Identifier", "name": "x"}}, "init": {init}}}}}]}}"#
            )
        };
        let cases = [
            option(r#"{"type": "CallExpression", "callee": {"type": "Identifier", "name": "from"}}"#),
            option(r#"{"type": "Identifier", "name": "y"}"#),
            option(r#"{"type": "StringLiteral", "value": "a", "extra": 1}"#),
            option(r#"{"type": "IntegerLiteral", "value": "1e3"}"#),
            option(r#"{"type": "ArrayExpression", "elements": [{"type": "ArrayExpression", "elements": []}]}"#),
            option(r#"{"type": "UnaryExpression", "operator": "not", "argument": {"type": "BooleanLiteral", "value": true}}"#),
            r#"{"imports": [{"type": "ImportDeclaration", "path": {"type": "StringLiteral", "value": "sql"}}], "body": []}"#.to_owned(),
            r#"{"body": [{"type": "ExpressionStatement", "expression": {}}]}"#.to_owned(),
            r#"{"package": {"type": "PackageClause"}, "body": []}"#.to_owned(),
            r#"{"imports": [], "body": [{"type": "OptionStatement", "assignment": {"type": "MemberAssignment", "member": {"type": "MemberExpression", "object": {"type": "Identifier", "name": "profiler"}, "property": {"type": "Identifier", "name": "enabledProfilers"}}, "init": {"type": "ArrayExpression", "elements": []}}}]}"#.to_owned(),
            r#"{"body": [], "files": []}"#.to_owned(),
        ];
        for text in &cases {
            let v: Value = serde_json::from_str(text).unwrap();
            assert!(Extern::from_json(&v).is_err(), "{text}");
        }
    }
}
