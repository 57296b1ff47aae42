//! A registry with a model trained on the fake embedder's reviews, for the tests of
//! training and of everything above it.

use std::path::Path;

use super::{TrainOptions, train};
use crate::config::Settings;
use crate::embed::testing::{FakeEmbedder, NEGATIVE, POSITIVE};
use crate::registry::Registry;

/// A review-like message of class `positive` (even `i`) or `negative` (odd).
pub fn review(i: usize) -> (String, &'static str) {
    let (words, stars) = if i.is_multiple_of(2) {
        (POSITIVE, 5)
    } else {
        (NEGATIVE, 1)
    };
    let text = format!(
        "visit {i} was {} and {} overall",
        words[i % words.len()],
        words[(i / 2 + 1) % words.len()]
    );
    let label = if stars == 5 { "positive" } else { "negative" };
    (
        serde_json::json!({ "review_id": format!("r{i}"), "text": text, "stars": stars })
            .to_string(),
        label,
    )
}

/// Settings for a registry and feature cache in `dir`.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.paths.registry_dir = dir.join("registry");
    s.paths.feature_cache_dir = dir.join("features");
    s.labels.ranges.retain(|r| r.label != "neutral");
    s.training.cv_folds = 3;
    s.training.alphas = vec![1.0];
    s.stream.workers = 1;
    s
}

/// Trains a model on 80 fake reviews and makes it the champion; returns its version.
pub fn train_champion(settings: &Settings, seed: usize) -> String {
    let dir = settings.paths.registry_dir.parent().unwrap().to_path_buf();
    let data = dir.join(format!("train-{seed}.jsonl"));
    let lines: Vec<String> = (seed..seed + 80).map(|i| review(i).0).collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let registry = Registry::new(settings.registry_dir());
    let options = TrainOptions {
        data,
        promote: true,
    };
    let outcome = train(settings, &mut FakeEmbedder::new(), &registry, &options).unwrap();
    assert!(outcome.promoted, "{:?}", outcome.gate_failures);
    outcome.version
}
