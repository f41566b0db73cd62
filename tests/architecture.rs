//! The import rules of docs/ARCHITECTURE.md, checked against the code: every
//! `crate::<module>` path in a file under `src/` (comments and doc links
//! aside) must point to a module its own module may import, and no two
//! files may import each other around a circle.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, by layer (docs/ARCHITECTURE.md).
const LAYERS: &[(&str, u8)] = &[
    ("app", 5),
    ("lib", 5),
    ("main", 5),
    ("proxy", 4),
    ("cli", 4),
    ("tokens", 3),
    ("authz", 2),
    ("tls", 1),
    ("accept", 1),
    ("audit", 1),
    ("admin", 1),
    ("telemetry", 1),
    ("config", 0),
    ("credentials", 0),
    ("proto", 0),
    ("hardening", 0),
];

/// Imports between modules of one layer that the table allows.
const SIDEWAYS: &[(&str, &str)] = &[
    ("accept", "tls"),
    ("admin", "accept"),
    ("config", "credentials"),
    ("config", "proto"),
    ("config", "hardening"),
    ("credentials", "proto"),
    ("hardening", "credentials"),
];

/// Imports the table forbids although the layers would allow them.
const FORBIDDEN: &[(&str, &str, &str)] = &[(
    "proxy",
    "tokens",
    "the proxy asks the token service over gRPC (or through authz::Authorizer)",
)];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module {module} is not in docs/ARCHITECTURE.md's table"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/proxy/read/mod.rs` → proxy::read.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Code lines without comments (doc links are not imports).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|line| match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    })
}

/// The `crate::a::b…` paths a file names (identifier segments only).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for line in code_lines(text) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let mut path = Vec::new();
            let mut tail = rest;
            loop {
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if end == 0 {
                    break;
                }
                path.push(tail[..end].to_owned());
                match tail[end..].strip_prefix("::") {
                    Some(next) => tail = next,
                    None => break,
                }
            }
            if !path.is_empty() {
                paths.push(path);
            }
        }
    }
    paths
}

#[test]
fn modules_import_only_what_their_layer_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let module = module_path(&src, file);
        let Some(from) = module.first() else { continue };
        if from == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for path in crate_paths(&text) {
            let to = &path[0];
            if to == from {
                continue;
            }
            let (a, b) = (layer(from), layer(to));
            let sideways = SIDEWAYS.contains(&(from.as_str(), to.as_str()));
            let forbidden = FORBIDDEN
                .iter()
                .find(|(f, t, _)| f == from && t == to)
                .map(|(_, _, why)| *why);
            if let Some(why) = forbidden {
                broken.push(format!(
                    "{}: crate::{} ({why})",
                    file.display(),
                    path.join("::")
                ));
            } else if b > a || (b == a && !sideways) {
                broken.push(format!(
                    "{}: crate::{} (layer {a} may not import layer {b})",
                    file.display(),
                    path.join("::")
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against docs/ARCHITECTURE.md:\n{}",
        broken.join("\n")
    );
}

/// The source file a path reaches: the longest prefix that is a module.
fn target(modules: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<PathBuf> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n].to_vec()).cloned())
}

/// The text without comments.
fn strip_comments(text: &str) -> String {
    code_lines(text).collect::<Vec<_>>().join("\n")
}

/// Tokens of a `use` tree: identifiers and the punctuation that shapes it.
fn use_tokens(tree: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = tree.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' {
                    word.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(word);
        } else {
            if matches!(c, '{' | '}' | ',' | '*') {
                tokens.push(c.to_string());
            }
            chars.next();
        }
    }
    tokens
}

/// Expands a `use` tree's tokens into full paths (`a::{b, c::d}` →
/// `a::b`, `a::c::d`); `as` renames and `self` are dropped.
fn expand(tokens: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while let Some(token) = tokens.get(*at) {
        match token.as_str() {
            "{" => {
                *at += 1;
                loop {
                    expand(tokens, at, &path, out);
                    match tokens.get(*at).map(String::as_str) {
                        Some(",") => *at += 1,
                        Some("}") => {
                            *at += 1;
                            return;
                        }
                        _ => return,
                    }
                    if tokens.get(*at).map(String::as_str) == Some("}") {
                        *at += 1;
                        return;
                    }
                }
            }
            "," | "}" => break,
            "*" => *at += 1,
            "as" => *at += 2,
            "self" => *at += 1,
            word => {
                path.push(word.to_owned());
                *at += 1;
            }
        }
    }
    out.push(path);
}

/// Every module path a file's code names: its `use` trees and inline
/// `crate::` paths, made absolute (`super`, `self`, `crate` resolved).
fn named_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut paths = crate_paths(code);
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tokens = use_tokens(&rest[..end]);
        let mut trees = Vec::new();
        expand(&tokens, &mut 0, &[], &mut trees);
        for tree in trees {
            let mut base: Vec<String> = match tree.first().map(String::as_str) {
                Some("crate") => Vec::new(),
                Some("super") | Some("self") => module.to_vec(),
                _ => continue,
            };
            let mut segments = tree.iter().peekable();
            if tree[0] == "crate" {
                segments.next();
            }
            while let Some(segment) = segments.peek() {
                match segment.as_str() {
                    "super" => {
                        base.pop();
                        segments.next();
                    }
                    "self" => {
                        segments.next();
                    }
                    _ => break,
                }
            }
            base.extend(segments.cloned());
            paths.push(base);
        }
    }
    paths
}

#[test]
fn no_two_files_import_each_other_around_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_path(&src, f), f.clone()))
        .collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        let module = module_path(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        // Tests inside a file import whatever they test: only code above
        // the first `#[cfg(test)]` counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code = strip_comments(code);
        for path in named_paths(&code, &module) {
            let Some(to) = target(&modules, &path) else {
                continue;
            };
            let to_module = module_path(&src, &to);
            // A module and its own submodules (a folder's mod.rs and the
            // files under it) are one room: their imports are not circles.
            if &to != file && !to_module.starts_with(&module) && !module.starts_with(&to_module) {
                edges.entry(file.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge.
    let mut state: BTreeMap<&PathBuf, u8> = BTreeMap::new();
    let mut circles = Vec::new();
    fn visit<'a>(
        node: &'a PathBuf,
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<&'a PathBuf, u8>,
        stack: &mut Vec<&'a PathBuf>,
        circles: &mut Vec<String>,
    ) {
        state.insert(node, 1);
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, circles),
                1 => {
                    let at = stack.iter().position(|n| *n == next).unwrap_or(0);
                    let names: Vec<String> = stack[at..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|p| p.display().to_string())
                        .collect();
                    circles.push(names.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node, 2);
    }
    for file in &files {
        if !state.contains_key(file) {
            visit(file, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}
