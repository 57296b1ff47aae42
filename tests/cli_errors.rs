//! The binary's unhappy paths: bad configuration, missing runtime or model files,
//! no champion. Each must end with a clear message and a non-zero exit, never a panic.

mod common;

use common::*;

#[test]
fn help_teaches_every_subcommand() {
    let dir = scratch("help");
    let (out, stdout, _) = run(triage(&dir).arg("--help"));
    assert!(out.status.success());
    for cmd in [
        "train",
        "evaluate",
        "classify",
        "models",
        "config",
        "retrain",
        "retrainer",
    ] {
        assert!(stdout.contains(cmd), "--help lacks {cmd}:\n{stdout}");
    }
    assert!(
        stdout.contains("TRIAGE__"),
        "--help should explain env overrides"
    );
    let (_, train_help, _) = run(triage(&dir).args(["train", "--help"]));
    assert!(train_help.contains("Exit status"), "{train_help}");
    let (_, retrain_help, _) = run(triage(&dir).args(["retrain", "--help"]));
    for part in ["Exit status", "Example", "labels_topic", "min_improvement"] {
        assert!(
            retrain_help.contains(part),
            "retrain --help lacks {part}:\n{retrain_help}"
        );
    }
    let (_, models_help, _) = run(triage(&dir).args(["models", "--help"]));
    for cmd in ["history", "compare", "decisions"] {
        assert!(
            models_help.contains(cmd),
            "models --help lacks {cmd}:\n{models_help}"
        );
    }
    let (_, compare_help, _) = run(triage(&dir).args(["models", "compare", "--help"]));
    assert!(compare_help.contains("Example"), "{compare_help}");
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
fn retrainer_without_a_token_refuses_to_start_and_names_the_key() {
    let dir = scratch("retrainer");
    let (out, _, stderr) = run(triage(&dir)
        .env("TRIAGE__RETRAIN__LISTEN", "127.0.0.1:0")
        .arg("retrainer"));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("retrain.webhook_token_file"), "{stderr}");
    assert!(
        stderr.contains("TRIAGE__RETRAIN__WEBHOOK_TOKEN"),
        "{stderr}"
    );
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

#[test]
fn models_history_on_an_empty_registry_says_how_a_champion_comes_about() {
    let dir = scratch("emptyhistory");
    let (out, stdout, stderr) = run(triage(&dir).args(["models", "history"]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("no champion changes recorded"), "{stdout}");
    assert!(stdout.contains("triage models promote"), "{stdout}");
    let (out, stdout, _) = run(triage(&dir).args(["models", "history", "--json"]));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["changes"], serde_json::json!([]));
    let (out, stdout, _) = run(triage(&dir).args(["models", "decisions"]));
    assert!(out.status.success());
    assert!(
        stdout.contains("no retraining decisions recorded"),
        "{stdout}"
    );
}

#[test]
fn models_compare_with_an_unknown_version_names_it_and_the_fix() {
    let dir = scratch("compareunknown");
    let (out, _, stderr) = run(triage(&dir).args(["models", "compare", "v1", "v2"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("\"v1\""), "{stderr}");
    assert!(stderr.contains("triage models list"), "{stderr}");
    assert_no_panic(&stderr);
    // With --data the versions are checked before the embedder loads: a missing
    // runtime must not be what the user hears about.
    let data = dir.join("d.jsonl");
    std::fs::write(&data, "{\"text\":\"hi\",\"stars\":5}\n").unwrap();
    let (out, _, stderr) = run(triage(&dir)
        .env(
            "TRIAGE__EMBEDDING__ONNX_RUNTIME_PATH",
            dir.join("absent.so"),
        )
        .args(["models", "compare", "champion", "v2", "--data"])
        .arg(&data));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no champion yet"), "{stderr}");
    assert!(!stderr.contains("ONNX Runtime"), "{stderr}");
}

#[test]
fn inspect_reports_malformed_rows_and_labels_without_a_model() {
    let dir = scratch("inspect");
    let data = dir.join("mixed.jsonl");
    std::fs::write(
        &data,
        concat!(
            "{\"text\":\"great\",\"stars\":5}\n",
            "{\"text\":\"meh\",\"stars\":3.0}\n",
            "not json\n",
            "{\"text\":\"odd\",\"stars\":3.5}\n",
            "{\"text\":\"bad\",\"stars\":1}\n",
            "{\"stars\":2}\n",
        ),
    )
    .unwrap();
    // A missing runtime proves inspect never loads the model.
    let (out, stdout, stderr) = run(triage(&dir)
        .env(
            "TRIAGE__EMBEDDING__ONNX_RUNTIME_PATH",
            dir.join("absent.so"),
        )
        .args(["inspect", "--json", "--data"])
        .arg(&data));
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["read"]["rows"], 6);
    assert_eq!(v["read"]["accepted"], 3);
    assert_eq!(v["read"]["malformed_by_reason"]["not_json"], 1);
    assert_eq!(v["read"]["malformed_by_reason"]["unknown_label"], 1);
    assert_eq!(v["read"]["malformed_by_reason"]["missing_text"], 1);
    let lines: Vec<u64> = v["read"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 6]);
    assert_eq!(
        v["rows_per_label"],
        serde_json::json!({"negative": 1, "neutral": 1, "positive": 1})
    );
}

#[test]
fn probe_says_why_there_is_nothing_to_ask() {
    let dir = scratch("probe");
    for (env, args, says) in [
        ("", vec!["probe"], "http.listen is empty"),
        ("127.0.0.1:9", vec!["probe", "healthz"], "is not a path"),
        // Caught by the configuration's own check first.
        (
            "not-an-address",
            vec!["probe"],
            "http.listen: \"not-an-address\" is not an address",
        ),
    ] {
        let (out, _, stderr) = run(triage(&dir).env("TRIAGE__HTTP__LISTEN", env).args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_no_panic(&stderr);
    }
}

#[test]
fn produce_refuses_impossible_replays_with_the_fix_before_touching_kafka() {
    let dir = scratch("produce-args");
    let data = dir.join("m.jsonl");
    std::fs::write(&data, "{\"review_id\":\"a\",\"text\":\"hi\",\"stars\":5}\n").unwrap();
    // No broker anywhere: each must fail on its arguments, at once.
    let cases: [(&[&str], &str); 5] = [
        (&["--scenario", "prior-shift"], "--keep"),
        (&["--scenario", "covariate-shift"], "--mix"),
        (&["--mix", "m.jsonl"], "stationary"),
        (&["--rate", "0/s"], "messages per second"),
        (&["--labels-delay-s=-1"], "--labels-delay-s"),
    ];
    for (args, fix) in cases {
        let started = std::time::Instant::now();
        let (out, stdout, stderr) = run(triage(&dir)
            .current_dir(&dir)
            .env("TRIAGE__KAFKA__BROKERS", "127.0.0.1:1")
            .args(["produce", "--file"])
            .arg(&data)
            .args(args));
        assert!(!out.status.success(), "{args:?}: {stdout}");
        assert!(stderr.contains(fix), "{args:?} should name {fix}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    let (out, _, stderr) = run(triage(&dir).args(["produce", "--file", "/nonexistent.jsonl"]));
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent.jsonl"), "{stderr}");
}
