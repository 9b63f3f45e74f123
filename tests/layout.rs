//! The code layout the README describes, checked: modules in layers that
//! import only downward, no import cycle between files, `server.rs`
//! imported by nobody, no source file over 600 lines, no function over 60
//! (tests aside). A small reader of `crate::` paths, no parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first; a module may use only modules
/// of a lower layer (and its own files).
const LAYERS: &[&[&str]] = &[
    &[
        "clock", "pem", "json", "net", "iopool", "netlink", "durable", "timeout", "workers",
    ],
    &["http"],
    &["config"],
    &["k8s"],
    &["metrics"],
    &["auth"],
    &["tls"],
    &["upstream"],
    &["cache"],
    &["proxy"],
    &["listener", "admin", "incluster"],
    &["server"],
];
const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 60;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/` with its module path (`cache::file::tee`).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src()).ok()?.with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts
                .last()
                .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
            {
                parts.pop();
            }
            Some((parts.join("::"), p))
        })
        .collect()
}

/// The source without `#[cfg(test)]` modules (they may use anything).
fn non_test(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}

/// The modules a file refers to through `crate::` paths (and `super::`,
/// resolved), mapped to the longest known module path.
fn references(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let path: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        if let Some(target) = longest_module(&path, known) {
            out.insert(target);
        }
    }
    for (i, _) in text.match_indices("super::") {
        let parent = match module.rsplit_once("::") {
            Some((p, _)) => p.to_owned(),
            None => continue,
        };
        let rest: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let full = format!("{parent}::{rest}");
        if let Some(target) = longest_module(&full, known) {
            out.insert(target);
        }
    }
    out.remove(module);
    out
}

fn longest_module(path: &str, known: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|candidate| known.contains(candidate))
}

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|layer| layer.contains(&top))
}

#[test]
fn modules_import_only_downward_and_without_cycles() {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (module, path) in &mods {
        if module.is_empty() {
            continue; // lib.rs declares the modules
        }
        let text = non_test(&std::fs::read_to_string(path).unwrap());
        let refs = references(module, &text, &known);
        let Some(own) = layer_of(module) else {
            problems.push(format!("{module}: not in any layer of tests/layout.rs"));
            continue;
        };
        for r in &refs {
            let top = |m: &str| m.split("::").next().unwrap_or("").to_owned();
            if top(r) == top(module) {
                continue;
            }
            match layer_of(r) {
                Some(l) if l < own => {}
                _ => problems.push(format!("{module} uses {r}: not a lower layer")),
            }
            if r == "server" {
                problems.push(format!(
                    "{module} uses server: wiring is imported by nobody"
                ));
            }
        }
        graph.insert(module.clone(), refs);
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn files_and_functions_are_small() {
    let mut problems = Vec::new();
    for (module, path) in modules() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            problems.push(format!(
                "{}: {lines} lines (max {MAX_FILE_LINES})",
                path.display()
            ));
        }
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        for (name, n) in long_functions(&non_test(&text)) {
            problems.push(format!("{module}::{name}: {n} lines (max {MAX_FN_LINES})"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Functions longer than the limit: from a line that starts a `fn` to the
/// line that closes it at the same indentation.
fn long_functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_fn = [
            "fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) fn ",
            "pub(crate) async fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let close = format!("{}}}", " ".repeat(indent));
        let Some(end) = lines[i + 1..].iter().position(|l| *l == close) else {
            continue;
        };
        let len = end + 2;
        if len > MAX_FN_LINES {
            let name: String = trimmed
                .split("fn ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((name, len));
        }
    }
    out
}
