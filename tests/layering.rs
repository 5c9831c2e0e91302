//! No import loops between the library's top-level modules (`config`, `sink`, `bridge`,
//! `http`, …): each module's `crate::<module>` references, comments and unit tests aside,
//! must form a graph without cycles, so infrastructure (`http`, `config`) takes what it serves as a parameter
//! instead of knowing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let deps = g.entry(module.clone()).or_default();
            // Unit tests (at the end of a file) may use anything.
            for line in text.lines().take_while(|l| l.trim() != "#[cfg(test)]") {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(at) = rest.find("crate::") {
                    rest = &rest[at + "crate::".len()..];
                    let names: Vec<&str> = if let Some(list) = rest.strip_prefix('{') {
                        list.split('}').next().unwrap_or("").split(',').collect()
                    } else {
                        vec![rest]
                    };
                    for n in names {
                        let name: String = n
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != module {
                            deps.insert(name);
                        }
                    }
                }
            }
        }
    }
    g
}

/// A cycle through `node`, if any: the modules on it.
fn cycle_from(
    g: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == node) {
        return Some(path[i..].to_vec());
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in g.get(node).into_iter().flatten() {
        if g.contains_key(next) {
            if let Some(c) = cycle_from(g, next, path, done) {
                return Some(c);
            }
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_top_level_modules_import_no_loop() {
    let g = graph();
    assert!(g.len() > 10, "read {} modules", g.len());
    assert!(
        g["pipeline"].contains("sink"),
        "the reader sees imports: {:?}",
        g["pipeline"]
    );
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if let Some(c) = cycle_from(&g, node, &mut Vec::new(), &mut done) {
            panic!("import loop: {} -> {}", c.join(" -> "), c[0]);
        }
    }
}
