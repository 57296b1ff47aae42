//! The binary's unhappy paths: bad configuration, missing runtime or model files,
//! no champion. Each must end with a clear message and a non-zero exit, never a panic.

mod common;

use common::*;

#[test]
fn help_teaches_every_subcommand() {
    let dir = scratch("help");
    let (out, stdout, _) = run(triage(&dir).arg("--help"));
    assert!(out.status.success());
    for cmd in ["train", "evaluate", "classify", "models", "config"] {
        assert!(stdout.contains(cmd), "--help lacks {cmd}:\n{stdout}");
    }
    assert!(
        stdout.contains("TRIAGE__"),
        "--help should explain env overrides"
    );
    let (_, train_help, _) = run(triage(&dir).args(["train", "--help"]));
    assert!(train_help.contains("Exit status"), "{train_help}");
}

#[test]
fn unknown_key_in_config_file_is_named() {
    let dir = scratch("badkey");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[training]\nalpah = 1.0\n").unwrap();
    let (out, _, stderr) = run(triage(&dir).arg("--config").arg(&file).arg("config"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("alpah"), "{stderr}");
    assert!(stderr.contains("config/default.toml"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn impossible_value_from_environment_names_key_and_fix() {
    let dir = scratch("badvalue");
    let (out, _, stderr) = run(triage(&dir)
        .env("TRIAGE__EMBEDDING__MAX_LENGTH", "4096")
        .arg("config"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("embedding.max_length"), "{stderr}");
    assert!(stderr.contains("fix:"), "{stderr}");
}

#[test]
fn config_prints_effective_settings() {
    let dir = scratch("config");
    let (out, stdout, _) = run(triage(&dir)
        .env("TRIAGE__TRAINING__SEED", "7")
        .arg("config"));
    assert!(out.status.success());
    assert!(stdout.contains("seed = 7"), "{stdout}");
}

#[test]
fn missing_runtime_library_is_a_clear_error_not_a_panic() {
    let dir = scratch("noruntime");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, "{\"text\":\"hi\",\"stars\":5}\n").unwrap();
    let (out, _, stderr) = run(triage(&dir)
        .env(
            "TRIAGE__EMBEDDING__ONNX_RUNTIME_PATH",
            dir.join("libonnxruntime.so"),
        )
        .args(["train", "--data"])
        .arg(&data));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ONNX Runtime library not found"),
        "{stderr}"
    );
    assert!(stderr.contains("make setup"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn runtime_file_that_is_not_a_library_is_a_clear_error() {
    let dir = scratch("badruntime");
    let fake = dir.join("libonnxruntime.so");
    std::fs::write(&fake, "not a shared library").unwrap();
    let data = dir.join("d.jsonl");
    std::fs::write(&data, "{\"text\":\"hi\",\"stars\":5}\n").unwrap();
    let (out, _, stderr) = run(triage(&dir)
        .env("TRIAGE__EMBEDDING__ONNX_RUNTIME_PATH", &fake)
        .args(["train", "--data"])
        .arg(&data));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("cannot load ONNX Runtime"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn missing_model_file_is_named() {
    let dir = scratch("nomodel");
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("tokenizer.json"), "{}").unwrap();
    let data = dir.join("d.jsonl");
    std::fs::write(&data, "{\"text\":\"hi\",\"stars\":5}\n").unwrap();
    let (out, _, stderr) = run(triage(&dir)
        .env("TRIAGE__EMBEDDING__MODEL_DIR", &model_dir)
        .args(["train", "--data"])
        .arg(&data));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("model.onnx is missing"), "{stderr}");
    assert!(stderr.contains("embedding.model_dir"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn classify_without_a_champion_says_how_to_get_one() {
    let dir = scratch("nochampion");
    let (out, _, stderr) = run(triage(&dir).args(["classify", "hello"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no champion yet"), "{stderr}");
    assert!(stderr.contains("triage train"), "{stderr}");
}

#[test]
fn models_list_on_an_empty_registry_says_so() {
    let dir = scratch("empty");
    let (out, stdout, _) = run(triage(&dir).args(["models", "list"]));
    assert!(out.status.success());
    assert!(stdout.contains("no models"), "{stdout}");
    let (out, _, stderr) = run(triage(&dir).args(["models", "rollback"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no previous champion"), "{stderr}");
}
