//! The dependency order written in `src/lib.rs` holds: every `crate::` path in
//! `src/` (unit tests included) names a module in a lower layer or a leaf. The order
//! is read from lib.rs's documentation, so it is written once; a module missing from
//! it, a path to a module above, or one to a peer of the same layer fails here with
//! the file and line.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

/// The layers of lib.rs's "Dependencies run one way" sentence, top first, and its
/// leaves.
fn order() -> (Vec<Vec<String>>, Vec<String>) {
    let lib = std::fs::read_to_string(common::repo().join("src/lib.rs")).unwrap();
    let doc: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join(" ");
    let start = doc
        .find("Dependencies run one way")
        .expect("src/lib.rs states the dependency order");
    let sentence = &doc[start..];
    let sentence = &sentence[sentence.find(':').unwrap() + 1..];
    let (chain, rest) = sentence
        .split_once(';')
        .expect("the order ends with '; any of them may use the leaves ...'");
    let ticked = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let layers = chain.split("->").map(ticked).collect();
    let leaves_text = &rest[..rest.find('.').unwrap_or(rest.len())];
    (layers, ticked(leaves_text))
}

/// Every `crate::name` in `text` outside comments, with its line number.
fn paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The problems of `files` (path relative to src/, text) against the order.
fn violations(
    layers: &[Vec<String>],
    leaves: &[String],
    files: &[(String, String)],
) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut out = Vec::new();
    for (rel, text) in files {
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let is_leaf = leaves.contains(&module);
        let Some(&own) = rank.get(module.as_str()).or(is_leaf.then_some(&usize::MAX)) else {
            out.push(format!(
                "src/{rel}: module `{module}` is not in lib.rs's dependency order"
            ));
            continue;
        };
        for (line, used) in paths(text) {
            if used == module || leaves.contains(&used) {
                continue;
            }
            let ok = rank.get(used.as_str()).is_some_and(|&r| r > own);
            if !ok {
                out.push(format!(
                    "src/{rel}:{line}: `{module}` uses `crate::{used}`, which is not below it in lib.rs's dependency order"
                ));
            }
        }
    }
    out
}

#[test]
fn every_import_follows_the_dependency_order_in_lib_rs() {
    let (layers, leaves) = order();
    assert!(
        layers.len() > 10 && layers.iter().all(|l| !l.is_empty()),
        "{layers:?}"
    );
    let src = common::repo().join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            (
                p.strip_prefix(&src).unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    assert!(files.len() > 50, "{} files under src/", files.len());
    let problems = violations(&layers, &leaves, &files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_catches_an_import_upward_to_a_peer_and_from_an_unknown_module() {
    let (layers, leaves) = order();
    let file = |rel: &str, text: &str| (rel.to_string(), text.to_string());
    let files = [
        // Below: fine; a leaf: fine.
        file(
            "inference/x.rs",
            "use crate::training::train;\nuse crate::stats::Q;",
        ),
        // Upward (tests included).
        file(
            "config/x.rs",
            "#[cfg(test)]\nmod t { use crate::registry::Registry; }",
        ),
        // A peer of the same layer, in a grouped import.
        file("tools/x.rs", "use crate::{model, retrainer::webhook};"),
        // Not in the order.
        file("nowhere/x.rs", "use crate::model::Model;"),
        // A comment is not an import.
        file("model/x.rs", "// see crate::cli for the flags"),
    ];
    let problems = violations(&layers, &leaves, &files);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("src/config/x.rs:2: `config` uses `crate::registry`"));
    assert!(problems[1].starts_with("src/tools/x.rs:1: `tools` uses `crate::retrainer`"));
    assert!(problems[2].contains("`nowhere` is not in lib.rs's dependency order"));
}
