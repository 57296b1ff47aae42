//! The registry as the binary meets it: names that are not version names (from the
//! command line or a crafted alias file) are refused before anything is read through
//! them, and a champion that will not load at start gives way to the previous one.

mod common;

use common::*;

/// A version outside the registry, as an attacker would place it, and an alias file
/// that points the champion at it.
fn registry_with_escaping_alias(dir: &std::path::Path) {
    let registry = dir.join("registry");
    std::fs::create_dir_all(registry.join("versions")).unwrap();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for file in ["card.json", "model.json", "reference.json"] {
        std::fs::write(elsewhere.join(file), "{}").unwrap();
    }
    std::fs::write(
        registry.join("aliases.json"),
        r#"{"champion": "../../elsewhere", "previous": null, "history": []}"#,
    )
    .unwrap();
}

#[test]
fn classify_refuses_an_alias_file_whose_champion_is_a_path() {
    let dir = scratch("escapingalias");
    registry_with_escaping_alias(&dir);
    // The runtime is absent: the registry's error must come first.
    let (out, _, stderr) = run(triage(&dir)
        .env(
            "TRIAGE__EMBEDDING__ONNX_RUNTIME_PATH",
            dir.join("absent.so"),
        )
        .args(["classify", "hello"]));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("model version '../../elsewhere' is not a version name"),
        "{stderr}"
    );
    assert!(stderr.contains("aliases.json"), "{stderr}");
    assert!(stderr.contains("fix it by hand"), "{stderr}");
    assert!(!stderr.contains("ONNX Runtime"), "{stderr}");
    assert_no_panic(&stderr);
    for args in [["models", "show", "champion"], ["models", "list", "--json"]] {
        let (out, _, stderr) = run(triage(&dir).args(args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is not a version name"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_version_name_that_is_a_path_is_refused_on_the_command_line() {
    let dir = scratch("pathname");
    let checks: [&[&str]; 5] = [
        &["classify", "--model", "../../etc", "hello"],
        &["models", "show", "../../etc"],
        &["models", "promote", "../../etc"],
        &["models", "compare", "../../etc", "v1"],
        &["evaluate", "--model", "../../etc", "--data", "x.jsonl"],
    ];
    for args in checks {
        let (out, _, stderr) = run(triage(&dir)
            .env(
                "TRIAGE__EMBEDDING__ONNX_RUNTIME_PATH",
                dir.join("absent.so"),
            )
            .args(args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "model version '../../etc' is not a version name: versions are v1, v2, ..."
            ),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("triage models list"), "{args:?}: {stderr}");
        assert_no_panic(&stderr);
    }
}

#[test]
fn classify_serves_the_previous_champion_when_the_champion_is_damaged() {
    let dir = scratch("fallback");
    // Two folds: this is about which version serves, not how good it is. The second
    // training reads its embeddings from the feature cache.
    let fast = [("TRIAGE__TRAINING__CV_FOLDS", "2")];
    train_support(&dir, &fast);
    train_support(&dir, &fast);
    let model = dir.join("registry/versions/v2/model.json");
    let mut text = std::fs::read_to_string(&model).unwrap();
    text.push(' ');
    std::fs::write(&model, text).unwrap();

    let classify = |model: &str| {
        run(triage(&dir)
            .arg("--config")
            .arg(repo().join("config/support.toml"))
            .args(["classify", "--json", "--model", model, "where is my parcel"]))
    };
    let (out, stdout, stderr) = classify("champion");
    assert!(out.status.success(), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["model_version"], "v1", "{stdout}");
    assert!(stderr.contains("The champion will not load"), "{stderr}");
    assert!(stderr.contains("champion=v2"), "{stderr}");
    assert!(stderr.contains("sha256"), "{stderr}");
    // Asked for by name, the damaged version is refused.
    let (out, _, stderr) = classify("v2");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("v2/model.json has sha256"), "{stderr}");
}
