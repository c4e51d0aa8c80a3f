//! The coordinator's layering, checked on its source: every module belongs
//! to a layer (`src/lib.rs` lists them), no file refers to a module of a
//! layer above its own, and no set of files imports one another in a
//! circle. A new top-level module must be given a layer here.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer, bottom up.
const LAYERS: &[(&str, u32)] = &[
    ("model", 0),
    ("store", 1),
    ("fleet", 2),
    ("jobs", 3),
    ("replication", 4),
    ("failover", 5),
    ("drills", 6),
    ("history", 6),
    ("api", 7),
    ("status", 7),
    ("transport", 7),
    ("server", 8),
];

/// A source file and the module path it defines (`failover::steps::fence`).
struct Module {
    file: PathBuf,
    path: Vec<String>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn modules() -> Vec<Module> {
    let mut out = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src()).unwrap();
            let mut path: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path.last().map(String::as_str) == Some("mod") {
                path.pop();
            }
            if path == ["lib"] {
                path.clear();
            }
            out.push(Module { file: p, path });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The code of `text` without comments and string literals, which may name
/// paths without importing them.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal ('"') would open a string: skip it whole. A
            // lifetime ('a) is left as it is.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with("\\") || rest.chars().nth(1) == Some('\'') {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                } else {
                    out.push('\'');
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every module path the code refers to, absolute, as written (`crate::a::b`
/// and `super::x`, with `use` groups such as `super::{a, b}` opened).
fn references(module: &Module, code: &str) -> Vec<Vec<String>> {
    // For a file `a/b.rs` (module a::b) and for `a/b/mod.rs` alike, `super`
    // is module a.
    let parent: Vec<String> = module
        .path
        .split_last()
        .map(|(_, p)| p.to_vec())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (root, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            if start > 0 && code[..start].ends_with(|c: char| is_ident(c) || c == ':') {
                continue;
            }
            let rest = &code[from..];
            let mut heads: Vec<String> = Vec::new();
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                    if !name.is_empty() && name != "self" {
                        heads.push(name);
                    }
                }
                for name in heads {
                    let mut p = base.clone();
                    p.push(name);
                    out.push(p);
                }
                continue;
            }
            let path_text: String = rest
                .chars()
                .take_while(|c| is_ident(*c) || *c == ':')
                .collect();
            let mut p = base.clone();
            p.extend(
                path_text
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            out.push(p);
        }
    }
    out
}

/// The module file a referenced path lands in: its longest prefix that is
/// a module of the crate.
fn resolve<'a>(path: &[String], by_path: &'a BTreeMap<Vec<String>, usize>) -> Option<&'a usize> {
    (1..=path.len())
        .rev()
        .find_map(|n| by_path.get(&path[..n].to_vec()))
}

fn layer_of(path: &[String]) -> Option<u32> {
    let top = path.first()?;
    LAYERS
        .iter()
        .find(|(name, _)| name == top)
        .map(|(_, layer)| *layer)
}

/// Every file and the files it imports from.
fn graph() -> (Vec<Module>, Vec<BTreeSet<usize>>) {
    let modules = modules();
    let by_path: BTreeMap<Vec<String>, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.path.clone(), i))
        .collect();
    let mut edges = vec![BTreeSet::new(); modules.len()];
    for (i, m) in modules.iter().enumerate() {
        let code = code_of(&std::fs::read_to_string(&m.file).unwrap());
        for r in references(m, &code) {
            if let Some(&j) = resolve(&r, &by_path) {
                // A parent declaring its children (`pub mod x;`) is not
                // an import; a child naming its own parent is not either.
                if j != i && !modules[j].path.is_empty() && !m.path.starts_with(&modules[j].path) {
                    edges[i].insert(j);
                }
            }
        }
    }
    (modules, edges)
}

#[test]
fn every_top_level_module_has_a_layer() {
    let unlayered: BTreeSet<String> = modules()
        .iter()
        .filter_map(|m| m.path.first())
        .filter(|top| layer_of(std::slice::from_ref(top)).is_none())
        .cloned()
        .collect();
    assert!(
        unlayered.is_empty(),
        "give these modules a layer in tests/layers.rs and src/lib.rs: {unlayered:?}"
    );
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let (modules, edges) = graph();
    let mut wrong = Vec::new();
    for (i, targets) in edges.iter().enumerate() {
        let Some(own) = layer_of(&modules[i].path) else {
            continue;
        };
        for &j in targets {
            if let Some(theirs) = layer_of(&modules[j].path) {
                if theirs > own {
                    wrong.push(format!(
                        "{} (layer {own}) imports {} (layer {theirs})",
                        modules[i].path.join("::"),
                        modules[j].path.join("::")
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_files_import_one_another_in_a_circle() {
    let (modules, edges) = graph();
    // Tarjan's strongly connected components.
    struct Walk<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        circles: Vec<Vec<usize>>,
    }
    fn visit(w: &mut Walk, v: usize) {
        w.index[v] = Some(w.next);
        w.low[v] = w.next;
        w.next += 1;
        w.stack.push(v);
        w.on_stack[v] = true;
        for &u in w.edges[v].iter() {
            match w.index[u] {
                None => {
                    visit(w, u);
                    w.low[v] = w.low[v].min(w.low[u]);
                }
                Some(iu) if w.on_stack[u] => w.low[v] = w.low[v].min(iu),
                Some(_) => {}
            }
        }
        if Some(w.low[v]) == w.index[v] {
            let mut component = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on_stack[u] = false;
                component.push(u);
                if u == v {
                    break;
                }
            }
            if component.len() > 1 {
                w.circles.push(component);
            }
        }
    }
    let n = modules.len();
    let mut w = Walk {
        edges: &edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        circles: Vec::new(),
    };
    for v in 0..n {
        if w.index[v].is_none() {
            visit(&mut w, v);
        }
    }
    let named: Vec<String> = w
        .circles
        .iter()
        .map(|c| {
            c.iter()
                .map(|&i| modules[i].path.join("::"))
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(named.is_empty(), "import circles:\n{}", named.join("\n"));
}

#[test]
fn the_checker_sees_imports_in_every_form_and_ignores_comments() {
    let m = Module {
        file: PathBuf::new(),
        path: vec!["failover".into(), "steps".into(), "fence".into()],
    };
    let code = code_of(
        "use super::{done, StepDone};\nuse crate::jobs::Lead;\n// crate::server::x\nlet s = \"crate::api\";\nlet c = '\"'; x(crate::model::clock::now_ms());\n",
    );
    let refs: Vec<String> = references(&m, &code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        refs,
        [
            "jobs::Lead",
            "model::clock::now_ms",
            "failover::steps::done",
            "failover::steps::StepDone"
        ]
    );
}
