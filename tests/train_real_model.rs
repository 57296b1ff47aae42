//! Training, evaluation, classification and the registry with the real
//! all-MiniLM-L6-v2 model on subsets of the shared data. Needs `make setup`.
//!
//! One fixture trains once (300 reviews); the tests share it, so the suite embeds
//! each text only a few times.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

struct Trained {
    dir: PathBuf,
    data: PathBuf,
    stdout: String,
}

/// `triage` for the 300-review subset: 60 held-out rows are too few for the
/// production gates (0.55), which the full 5,000 reviews clear (see README), so the
/// gates are lowered here; the gate test raises them again.
fn triage_small(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = triage(dir);
    cmd.env("TRIAGE__TRAINING__MIN_MACRO_F1", "0.4")
        .env("TRIAGE__TRAINING__MIN_MACRO_RECALL", "0.4");
    cmd
}

fn trained() -> &'static Trained {
    static FIXTURE: OnceLock<Trained> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch("trained");
        let data = dir.join("reviews-300.jsonl");
        slice_lines(&shared("yelp/reviews-5k.jsonl"), &data, 0..300, false);
        let (out, stdout, stderr) = run(triage_small(&dir).args(["train", "--data"]).arg(&data));
        assert!(out.status.success(), "training failed:\n{stdout}\n{stderr}");
        Trained { dir, data, stdout }
    })
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

#[test]
fn training_prints_metrics_and_promotes_a_champion() {
    let t = trained();
    assert!(t.stdout.contains("model v1 trained"), "{}", t.stdout);
    assert!(t.stdout.contains("macro-F1"));
    assert!(
        t.stdout
            .contains("confusion (rows: truth, columns: predicted)")
    );
    assert!(t.stdout.contains("v1 is now the champion"));
    let (_, stdout, _) = run(triage(&t.dir).args(["models", "show", "champion", "--json"]));
    let card = json(&stdout);
    assert_eq!(card["version"], "v1");
    assert_eq!(
        card["labels"],
        serde_json::json!(["negative", "neutral", "positive"])
    );
    assert_eq!(card["embedding"]["dimension"], 384);
    assert_eq!(card["embedding"]["max_length"], 256);
    assert_eq!(
        card["data"]["train_rows"].as_u64().unwrap() + card["data"]["test_rows"].as_u64().unwrap(),
        300
    );
    assert_eq!(card["data"]["sha256"].as_str().unwrap().len(), 64);
    // Model selection is recorded: balancing, an alpha per model chosen from the
    // cross-validated candidates, every blend weight tried, the decision rule.
    let sel = &card["selection"];
    assert_eq!(sel["class_balance"], "none");
    assert_eq!(sel["decision"], "macro_f1");
    assert_eq!(sel["cv_folds"], 5);
    // Every configured alpha was tried, in ascending order; the grid goes on past an
    // edge that scores best, so the chosen alpha has a worse neighbour on each side
    // unless it is an edge that did not score best.
    let scores = sel["embedding"]["cv_scores"].as_array().unwrap();
    let tried: Vec<f64> = scores
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    for a in [0.3, 1.0, 3.0] {
        assert!(tried.contains(&a), "{sel}");
    }
    assert!(tried.windows(2).all(|w| w[0] < w[1]), "{sel}");
    assert_eq!(
        sel["embedding"]["grid_extended"].as_bool().unwrap(),
        tried.len() > 3,
        "{sel}"
    );
    for s in scores {
        assert!((0.0..=1.0).contains(&s["macro_f1"].as_f64().unwrap()));
    }
    let chosen = sel["embedding"]["alpha"].as_f64().unwrap();
    let at = tried.iter().position(|&a| a == chosen).unwrap();
    let f1 = |i: usize| scores[i]["macro_f1"].as_f64().unwrap();
    if tried.len() > 3 {
        let inside = at > 0 && at + 1 < tried.len();
        assert!(
            inside || !(1e-4..=1e4).contains(&chosen),
            "extended until inside or a bound: {sel}"
        );
        if inside {
            // The larger alpha wins ties.
            assert!(f1(at) >= f1(at - 1) && f1(at) > f1(at + 1), "{sel}");
        }
    }
    assert!(
        t.stdout.contains("CV macro-F1 by alpha:"),
        "train prints the grid: {}",
        t.stdout
    );
    assert_eq!(sel["weight_scores"].as_array().unwrap().len(), 11);
    let weight = sel["embedding_weight"].as_f64().unwrap();
    assert_eq!(sel["ngrams"].is_object(), weight < 1.0, "{sel}");
    let offsets = sel["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3);
    assert_eq!(offsets[0], 0.0, "offsets are relative to the first label");
    assert!(sel["cv_macro_f1"].as_f64().unwrap() > 0.0);
    // Better than chance on 60 held-out reviews: the model learned something.
    let f1 = card["metrics"]["macro_f1"].as_f64().unwrap();
    assert!(f1 > 0.45, "held-out macro-F1 {f1}");
    let reference =
        std::fs::read_to_string(t.dir.join("registry/versions/v1/reference.json")).unwrap();
    let reference = json(&reference);
    assert_eq!(reference["embedding_mean"].as_array().unwrap().len(), 384);
    assert_eq!(
        reference["sample"].as_array().unwrap().len(),
        60,
        "all 60 held-out rows, under the bound of 512"
    );
}

#[test]
fn retraining_the_same_file_uses_the_feature_cache() {
    let t = trained();
    let dir = scratch("retrain");
    // Same feature cache as the fixture, own registry.
    let (out, stdout, stderr) = run(triage_small(&dir)
        .env("TRIAGE__PATHS__FEATURE_CACHE_DIR", t.dir.join("features"))
        .args(["train", "--json", "--data"])
        .arg(&t.data));
    assert!(out.status.success(), "{stderr}");
    let outcome = json(&stdout);
    assert_eq!(outcome["card"]["timings"]["embed_cached"], true);
    // Same data and seed: same split, same model quality.
    let (_, first, _) = run(triage(&t.dir).args(["models", "show", "v1", "--json"]));
    assert_eq!(outcome["card"]["metrics"], json(&first)["metrics"]);
}

#[test]
fn evaluate_scores_the_champion_on_unseen_reviews() {
    let t = trained();
    let unseen = t.dir.join("reviews-unseen.jsonl");
    slice_lines(&shared("yelp/reviews-5k.jsonl"), &unseen, 4000..4100, false);
    let (out, stdout, stderr) = run(triage(&t.dir)
        .args(["evaluate", "--json", "--data"])
        .arg(&unseen));
    assert!(out.status.success(), "{stderr}");
    let e = json(&stdout);
    assert_eq!(e["version"], "v1");
    assert_eq!(e["metrics"]["rows"], 100);
    for key in ["accuracy", "macro_f1", "macro_precision", "macro_recall"] {
        let v = e["metrics"][key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert_eq!(e["metrics"]["per_class"].as_array().unwrap().len(), 3);
    let confusion_total: u64 = e["metrics"]["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion_total, 100);
}

/// `classify` (stdin, the serving path's `Predictor`) and `evaluate` (the batch path)
/// must compute the same features and labels: on the same 100 reviews, the labels
/// `classify` prints are exactly the predicted columns of `evaluate`'s confusion matrix.
#[test]
fn classify_and_evaluate_label_the_same_texts_alike() {
    let t = trained();
    let lines = std::fs::read_to_string(shared("yelp/reviews-5k.jsonl")).unwrap();
    let mut file = String::new();
    let mut texts = String::new();
    for line in lines.lines().skip(4100).take(100) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        // One line per text on stdin: the same text, without its line breaks, in both.
        let text = v["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        texts.push_str(&text);
        texts.push('\n');
        v["text"] = Value::String(text);
        file.push_str(&v.to_string());
        file.push('\n');
    }
    let data = t.dir.join("reviews-agree.jsonl");
    std::fs::write(&data, file).unwrap();
    let (out, stdout, stderr) = run(triage(&t.dir)
        .args(["evaluate", "--json", "--data"])
        .arg(&data));
    assert!(out.status.success(), "{stderr}");
    let confusion = json(&stdout)["metrics"]["confusion"].clone();
    let columns: Vec<u64> = (0..3)
        .map(|c| {
            confusion
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[c].as_u64().unwrap())
                .sum()
        })
        .collect();

    let input = t.dir.join("reviews-agree.txt");
    std::fs::write(&input, texts).unwrap();
    let (out, stdout, stderr) = run(triage(&t.dir)
        .args(["classify", "--json"])
        .stdin(std::fs::File::open(&input).unwrap()));
    assert!(out.status.success(), "{stderr}");
    let mut counts = [0u64; 3];
    for line in stdout.lines() {
        let label = json(line)["label"].as_str().unwrap().to_string();
        let index = ["negative", "neutral", "positive"]
            .iter()
            .position(|l| *l == label)
            .unwrap();
        counts[index] += 1;
    }
    assert_eq!(
        counts.to_vec(),
        columns,
        "classify {counts:?} vs evaluate {columns:?}"
    );

    // Configured for another token length, classify still embeds at the champion's
    // (its card's 256), so every probability is the same.
    let (out, at_64, stderr) = run(triage(&t.dir)
        .env("TRIAGE__EMBEDDING__MAX_LENGTH", "64")
        .args(["classify", "--json"])
        .stdin(std::fs::File::open(&input).unwrap()));
    assert!(out.status.success(), "{stderr}");
    let probabilities = |out: &str| -> Vec<Value> {
        out.lines()
            .map(|l| json(l)["probabilities"].clone())
            .collect()
    };
    assert_eq!(probabilities(&at_64), probabilities(&stdout));
}

#[test]
fn classify_labels_each_stdin_line_in_order() {
    let t = trained();
    let mut cmd = triage(&t.dir);
    cmd.args(["classify", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            "Absolutely wonderful food, friendly staff, we will be back!"
        )
        .unwrap();
        writeln!(stdin).unwrap();
        writeln!(
            stdin,
            "Terrible. Rude waiter, cold food, and they overcharged us."
        )
        .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "blank line skipped");
    assert_eq!(lines[0]["label"], "positive");
    assert_eq!(lines[1]["label"], "negative");
    assert_eq!(lines[0]["model_version"], "v1");
    let sum: f64 = lines[0]["probabilities"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-9);
}

#[test]
fn failing_a_gate_stores_the_model_but_does_not_promote_it() {
    let t = trained();
    let dir = scratch("gate");
    let (out, _, stderr) = run(triage_small(&dir)
        .env("TRIAGE__PATHS__FEATURE_CACHE_DIR", t.dir.join("features"))
        .env("TRIAGE__TRAINING__MIN_MACRO_F1", "0.99")
        .args(["train", "--data"])
        .arg(&t.data));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("training.min_macro_f1"), "{stderr}");
    let (_, stdout, _) = run(triage(&dir).args(["models", "list", "--json"]));
    let list = json(&stdout);
    assert_eq!(list["versions"].as_array().unwrap().len(), 1);
    assert_eq!(list["versions"][0]["passed_gates"], false);
    assert_eq!(list["aliases"]["champion"], Value::Null);
}

#[test]
fn promote_and_rollback_through_the_cli() {
    let t = trained();
    let dir = scratch("aliases");
    let cache = t.dir.join("features");
    for _ in 0..2 {
        let (out, _, stderr) = run(triage_small(&dir)
            .env("TRIAGE__PATHS__FEATURE_CACHE_DIR", &cache)
            .args(["train", "--no-promote", "--data"])
            .arg(&t.data));
        assert!(out.status.success(), "{stderr}");
    }
    run(triage(&dir).args(["models", "promote", "v1"]));
    let (out, stdout, _) = run(triage(&dir).args(["models", "promote", "v2", "--json"]));
    assert!(out.status.success());
    let a = json(&stdout);
    assert_eq!(
        (a["champion"].as_str(), a["previous"].as_str()),
        (Some("v2"), Some("v1"))
    );
    let (_, stdout, _) = run(triage(&dir).args(["models", "rollback", "--json"]));
    assert_eq!(json(&stdout)["champion"], "v1");
    let (_, stdout, _) = run(triage(&dir).args(["models", "list"]));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("v1") && l.contains("champion")),
        "{stdout}"
    );
}

#[test]
fn support_intents_train_from_csv_with_configuration_only() {
    let dir = scratch("support");
    let data = support_subset(&dir);
    let (out, stdout, stderr) = run(triage(&dir)
        .arg("--config")
        .arg(repo().join("config/support.toml"))
        .args(["train", "--json", "--data"])
        .arg(&data));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let card = &json(&stdout)["card"];
    assert_eq!(card["labels"].as_array().unwrap().len(), 11);
    let f1 = card["metrics"]["macro_f1"].as_f64().unwrap();
    assert!(f1 >= 0.9, "support macro-F1 {f1}");
}

#[test]
fn drift_eval_replays_scenarios_and_finds_the_shifts() {
    let t = trained();
    let unseen = t.dir.join("reviews-drift.jsonl");
    slice_lines(&shared("yelp/reviews-5k.jsonl"), &unseen, 4000..4100, false);
    let inject = support_subset(&t.dir);

    let (out, _, stderr) = run(triage(&t.dir)
        .args(["drift", "eval", "--prior-label", "nope", "--data"])
        .arg(&unseen));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no label \"nope\"") && stderr.contains("negative, neutral, positive"),
        "{stderr}"
    );

    let (out, stdout, stderr) = run(triage(&t.dir)
        .args(["drift", "eval", "--json", "--window", "20", "--runs", "2"])
        .args(["--stationary-windows", "20", "--prior-label", "negative"])
        .args(["--inject-text-field", "question", "--inject"])
        .arg(&inject)
        .arg("--data")
        .arg(&unseen));
    assert!(out.status.success(), "{stderr}");
    let r = json(&stdout);
    assert_eq!(r["base_messages"], 100);
    assert_eq!(r["inject_messages"], 440);
    assert_eq!(r["plan"]["window"], 20);
    let detectors: Vec<&str> = r["stationary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["detector"].as_str().unwrap())
        .collect();
    assert_eq!(
        detectors,
        [
            "prediction",
            "embedding",
            "confidence",
            "text_length",
            "any"
        ]
    );
    assert_eq!(r["stationary"][4]["windows"], 40);
    // Short support questions among long reviews: found within three windows.
    let covariate_any = &r["covariate_shift"][4];
    assert_eq!(covariate_any["within_3"], 2, "{covariate_any}");
    // Only 1-2 star reviews: the class mix moves.
    let prior = &r["prior_shift"][0];
    assert_eq!(prior["detector"], "prediction");
    assert!(prior["max"].as_u64().is_some(), "{prior}");
    assert_eq!(r["stationary_p_values"].as_array().unwrap().len(), 40);
}
