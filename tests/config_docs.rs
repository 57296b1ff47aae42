//! Documentation that must follow the code, checked so that it cannot drift:
//! `config/default.toml` against `Settings::default()` (key by key, both ways),
//! `docs/configuration.md` against `config/default.toml`, and the source-layout table
//! of `docs/architecture.md` against the files under `src/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use triage::config::Settings;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// Every key path of `table` (`section.key`, `features.ngrams.min_n`), sections
/// included, into `all`; those that hold a value (anything but a non-empty table: an
/// empty map such as `kafka.librdkafka_options` is a value) into `values`.
fn key_paths(
    prefix: &str,
    table: &toml::Table,
    all: &mut BTreeSet<String>,
    values: &mut BTreeSet<String>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        all.insert(path.clone());
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => key_paths(&path, inner, all, values),
            _ => {
                values.insert(path);
            }
        }
    }
}

/// (every key path, the value keys) of a TOML document.
fn toml_keys(table: &toml::Table) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut all, mut values) = (BTreeSet::new(), BTreeSet::new());
    key_paths("", table, &mut all, &mut values);
    (all, values)
}

fn default_file_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = read("config/default.toml");
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("config/default.toml does not parse: {e}"));
    toml_keys(&table)
}

fn code_default_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let value = toml::Value::try_from(Settings::default())
        .unwrap_or_else(|e| panic!("Settings::default() does not serialise to TOML: {e}"));
    let toml::Value::Table(table) = value else {
        panic!("Settings::default() serialises to {value:?}, not a table");
    };
    toml_keys(&table)
}

fn listed(keys: impl IntoIterator<Item = String>) -> String {
    keys.into_iter().collect::<Vec<_>>().join(", ")
}

/// `config/default.toml` must name every setting the code has and no other. The test
/// beside the loader compares the loaded values, which cannot see a key deleted from
/// the file: the code's default fills the gap.
#[test]
fn default_file_and_code_defaults_have_the_same_keys() {
    let (in_file, _) = default_file_keys();
    let (in_code, _) = code_default_keys();
    let missing: Vec<String> = in_code.difference(&in_file).cloned().collect();
    let extra: Vec<String> = in_file.difference(&in_code).cloned().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "config/default.toml and Settings::default() differ.\n  \
         in the code, not in config/default.toml: [{}]\n  \
         in config/default.toml, not in the code: [{}]\n  \
         fix: write each missing key, commented and with its default, in its section of \
         config/default.toml; remove keys the code no longer has",
        listed(missing),
        listed(extra),
    );
}

/// The keys named in the first column of docs/configuration.md's key table. A cell may
/// name several keys of one section: `` `drift.class_share_min`, `class_share_max` ``.
fn documented_keys() -> BTreeSet<String> {
    let text = read("docs/configuration.md");
    let mut lines = text.lines().skip_while(|l| !l.starts_with("| key |"));
    assert!(
        lines.next().is_some(),
        "docs/configuration.md has no table headed `| key | default | meaning |`"
    );
    let mut keys = BTreeSet::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        let mut section = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            if let Some((prefix, _)) = name.rsplit_once('.') {
                section = prefix.to_string();
                keys.insert(name.to_string());
            } else {
                assert!(
                    !section.is_empty(),
                    "docs/configuration.md: `{name}` in `{cell}` has no section; write it as `section.{name}`"
                );
                keys.insert(format!("{section}.{name}"));
            }
        }
    }
    keys
}

#[test]
fn every_key_of_the_default_file_is_in_the_configuration_docs_and_no_other() {
    let (_, in_file) = default_file_keys();
    let documented = documented_keys();
    let undocumented: Vec<String> = in_file.difference(&documented).cloned().collect();
    let stale: Vec<String> = documented.difference(&in_file).cloned().collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/configuration.md's key table and config/default.toml differ.\n  \
         not in the docs: [{}]\n  \
         in the docs, not in config/default.toml: [{}]\n  \
         fix: add a row `| `section.key` | default | meaning |` for each undocumented key; \
         remove or rename the stale rows",
        listed(undocumented),
        listed(stale),
    );
}

/// The paths under `src/` that the source-layout table of docs/architecture.md names,
/// each with the row it is in. The first column holds paths from `src/` (a later bare
/// name is beside the one before it: `` `src/feature/cache.rs`, `pipeline.rs` ``); the
/// second names files and folders relative to the row's folder (`` `onnx.rs` ``,
/// `` `commands/` ``) or from `src/`.
fn architecture_table() -> Vec<(PathBuf, String)> {
    let text = read("docs/architecture.md");
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("| path | what |"));
    assert!(
        lines.next().is_some(),
        "docs/architecture.md has no source-layout table headed `| path | what |`"
    );
    let is_path = |name: &str| {
        (name.ends_with(".rs") || name.ends_with('/'))
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.'))
    };
    let mut named = Vec::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let mut cells = line.split('|').skip(1);
        let (first, rest) = (
            cells.next().unwrap_or_default(),
            cells.next().unwrap_or_default(),
        );
        let row: String = line.chars().take(60).collect();
        // A bare name in the first column is beside the path before it; names in the
        // second column are relative to the row's first path (its folder).
        let dir_of = |path: &Path, name: &str| {
            if name.ends_with('/') {
                path.to_path_buf()
            } else {
                path.parent().unwrap().to_path_buf()
            }
        };
        let (mut beside, mut base): (Option<PathBuf>, Option<PathBuf>) = (None, None);
        for name in first.split('`').skip(1).step_by(2) {
            let path = if name.starts_with("src/") {
                PathBuf::from(name)
            } else {
                beside.as_ref().map(|b| b.join(name)).unwrap_or_else(|| {
                    panic!("docs/architecture.md: `{name}` in row {row:?} has no path before it; write it from src/")
                })
            };
            beside = Some(dir_of(&path, name));
            base.get_or_insert_with(|| dir_of(&path, name));
            named.push((path, row.clone()));
        }
        let base = base.unwrap_or_else(|| {
            panic!("docs/architecture.md: row {row:?} names no path in its first column")
        });
        for name in rest.split('`').skip(1).step_by(2).filter(|n| is_path(n)) {
            let path = if name.starts_with("src/") {
                PathBuf::from(name)
            } else {
                base.join(name)
            };
            named.push((path, row.clone()));
        }
    }
    named
}

/// Module folders (holding a `.rs` file at any depth) and the files the table must
/// name: every `.rs` file in `src/` and in a folder directly under it, `mod.rs` aside
/// (its folder is named). Deeper files are covered by their folder.
fn source_tree(
    dir: &Path,
    depth: usize,
    folders: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
) -> bool {
    let mut has_rust = false;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| dir.join(e.unwrap().file_name()))
        .collect();
    entries.sort();
    for path in entries {
        if repo().join(&path).is_dir() {
            if source_tree(&path, depth + 1, folders, files) {
                folders.push(path);
                has_rust = true;
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            has_rust = true;
            if depth <= 1 && path.file_name().is_some_and(|n| n != "mod.rs") {
                files.push(path);
            }
        }
    }
    has_rust
}

#[test]
fn every_path_the_architecture_table_names_exists() {
    let mut gone: Vec<String> = architecture_table()
        .into_iter()
        .filter(|(path, _)| !repo().join(path).exists())
        .map(|(path, row)| format!("{} (row {row:?})", path.display()))
        .collect();
    // Paths from src/ anywhere in the text, outside the table too.
    let text = read("docs/architecture.md");
    for name in text.split('`').skip(1).step_by(2) {
        if name.starts_with("src/") && !repo().join(name).exists() {
            gone.push(name.to_string());
        }
    }
    assert!(
        gone.is_empty(),
        "docs/architecture.md names paths that do not exist:\n  {}\n  \
         fix: rename or remove them in the table (a bare name is relative to the row's folder)",
        gone.join("\n  ")
    );
}

#[test]
fn the_architecture_table_names_every_module_folder_and_file() {
    let named: BTreeSet<PathBuf> = architecture_table()
        .into_iter()
        .map(|(path, _)| PathBuf::from(path.to_string_lossy().trim_end_matches('/')))
        .collect();
    let (mut folders, mut files) = (Vec::new(), Vec::new());
    source_tree(Path::new("src"), 0, &mut folders, &mut files);
    assert!(
        folders.len() > 5 && files.len() > 20,
        "src/ looks empty: {folders:?} {files:?}"
    );
    let unnamed: Vec<String> = folders
        .iter()
        .map(|f| format!("{}/", f.display()))
        .chain(files.iter().map(|f| f.display().to_string()))
        .filter(|p| !named.contains(Path::new(p.trim_end_matches('/'))))
        .collect();
    assert!(
        unnamed.is_empty(),
        "docs/architecture.md's source-layout table does not name:\n  {}\n  \
         fix: say in the table what each one is for (in its folder's row: `file.rs`)",
        unnamed.join("\n  ")
    );
}
