use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use ndarray::{Array2, Axis};
use serde::Serialize;
use tracing::{info, warn};

use super::data_checks;
use super::fit::{Fitted, TrainingSet, fit_model};
use super::gates;
use super::split::stratified_split;
use crate::config::Settings;
use crate::drift::reference::{DriftReference, ReferencePlan, TrainingRows};
use crate::embed::{EmbedError, Embedder, EmbeddingSpec};
use crate::feature::cache::FeatureCache;
use crate::feature::readers::ReadSummary;
use crate::feature::{
    EmbedStats, FeatureError, LabelledData, LabelledExample, embed_texts, read_labelled,
};
use crate::model::evaluation::{Evaluation, evaluate};
use crate::model::{ClassifierError, FitParams, Model, Prediction};
use crate::model::{calibration, routing};
use crate::registry::card::{DataCard, DataReport, Hyperparameters, Timings};
use crate::registry::{Actor, ModelCard, Registry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("data validation failed, nothing was trained:\n  - {}", .0.join("\n  - "))]
    DataChecks(Vec<String>),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("model {version} cannot read these features: {reason}")]
    Incompatible { version: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub data: PathBuf,
    /// Promote the new version to champion if it passes the gates.
    pub promote: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub version: String,
    pub promoted: bool,
    /// Gates that failed, one line each (empty when all passed).
    pub gate_failures: Vec<String>,
    pub card: ModelCard,
}

/// Trains a model on a labelled file and stores it in the registry. A model that
/// fails a gate is stored but not promoted; the outcome says which gate failed.
pub fn train(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    registry: &Registry,
    options: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    let t = &settings.training;
    let Embedded {
        data,
        examples,
        checks,
        features,
        embed_stats,
    } = read_and_embed(settings, embedder, &options.data)?;
    let targets: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let split = stratified_split(&targets, t.test_fraction, t.seed);
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();

    let x_train = features.select(Axis(0), &split.train);
    let y_train: Vec<usize> = split.train.iter().map(|&i| targets[i]).collect();
    let train_texts: Vec<&str> = split.train.iter().map(|&i| texts[i]).collect();
    let fit_started = Instant::now();
    let Fitted {
        model,
        selection,
        out_of_fold,
        mut calibration,
        mut routing,
    } = fit_model(
        settings,
        &TrainingSet {
            embeddings: x_train.view(),
            texts: &train_texts,
            labels: &y_train,
            label_names: &data.labels,
        },
    )?;
    let fit_seconds = fit_started.elapsed().as_secs_f64();
    info!(target: "triage::training", rows = split.train.len(), seconds = format!("{fit_seconds:.2}"), "Fitted.");

    let (train_preds, train_eval) = predict_and_score(&model, &train_texts, &x_train, &y_train)?;
    let x_test = features.select(Axis(0), &split.test);
    let y_test: Vec<usize> = split.test.iter().map(|&i| targets[i]).collect();
    let test_texts: Vec<&str> = split.test.iter().map(|&i| texts[i]).collect();
    let (test_preds, metrics) = predict_and_score(&model, &test_texts, &x_test, &y_test)?;

    // The promise and the calibration on rows neither was chosen on; the promise on
    // the confidences served (calibrated when the calibration serves). The drift
    // reference below keeps the model's own confidences: live drift reads those too.
    let served_test = calibration::served(calibration.as_ref(), &test_preds);
    if let Some(c) = calibration.as_mut() {
        c.held_out = Some(calibration::held_out(&test_preds, &y_test, c.temperature));
    }
    if let Some(r) = routing.as_mut() {
        r.held_out = Some(routing::apply(
            &routing::scored(&served_test, &y_test),
            r.global.threshold,
        ));
    }
    let gate_results = gates::check(&metrics, t);
    let gate_failures = gates::failures(&gate_results);
    let reference = DriftReference::build(
        &test_preds,
        data.labels.len(),
        x_test.view(),
        // Text lengths do not depend on the model: every row of the file counts (the
        // held-out split alone is too few rows for a small training set, measured: a
        // 16-row reference made text-length PSI fire on stationary reviews).
        &texts,
        // The reference class mix: the model's predictions of rows it was not fitted
        // on. In-sample predictions repeat the training labels (a small model's
        // n-grams memorise them), and live traffic then looks drifted (measured: a
        // 1,000-review model raised 7.4 false alarms per 100 stationary windows).
        TrainingRows {
            predictions: if out_of_fold.is_empty() {
                &train_preds
            } else {
                &out_of_fold
            },
            features: x_train.view(),
        },
        &ReferencePlan {
            sample_size: t.reference_sample_size,
            mmd_sample: settings.drift.mmd_sample,
            mmd_null_draws: settings.drift.mmd_null_draws,
            seed: t.seed,
        },
    );
    let parent_version = registry.aliases()?.champion;
    let card = ModelCard {
        version: String::new(),
        created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        parent_version,
        triage_version: env!("CARGO_PKG_VERSION").into(),
        labels: data.labels.clone(),
        embedding: embedder.spec().clone(),
        data: data_card(&data.summary, split.train.len(), split.test.len(), checks),
        hyperparameters: Hyperparameters {
            fit: FitParams {
                alpha: selection.embedding.alpha,
                max_iterations: t.max_iterations,
                gradient_tolerance: t.gradient_tolerance,
            },
            test_fraction: t.test_fraction,
            seed: t.seed,
        },
        selection: Some(selection),
        train_accuracy: train_eval.accuracy,
        train_macro_f1: train_eval.macro_f1,
        metrics,
        gates: gate_results,
        passed_gates: gate_failures.is_empty(),
        timings: Timings {
            embed_seconds: embed_stats.elapsed.as_secs_f64(),
            embed_per_second: embed_stats.per_second(),
            embed_cached: embed_stats.cached,
            fit_seconds,
        },
        calibration,
        routing,
    };
    let version = registry.register(&model, card, &reference)?;
    let card = registry.card(&version)?;
    let promoted = gate_failures.is_empty() && options.promote;
    if promoted {
        registry.promote(&version, "trained and passed every gate", Actor::Training)?;
    } else if !gate_failures.is_empty() {
        warn!(target: "triage::training", version, failures = ?gate_failures, "Model failed a gate: stored, not promoted.");
    }
    Ok(TrainOutcome {
        version,
        promoted,
        gate_failures,
        card,
    })
}

/// A labelled file as training sees it: read, checked (duplicates removed) and
/// embedded through the feature cache, in the file's order.
pub struct Embedded {
    /// The file as read; its examples were moved to `examples`.
    pub data: LabelledData,
    pub examples: Vec<LabelledExample>,
    pub checks: DataReport,
    /// One row per example.
    pub features: Array2<f32>,
    pub embed_stats: EmbedStats,
}

/// Reads, checks and embeds a labelled file as `triage train` does (on the
/// configured graph and token length, with the same feature-cache key, so a file trained on once is not embedded again); the
/// checks' warnings are logged, their failures refuse the file.
pub fn read_and_embed(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    path: &Path,
) -> Result<Embedded, TrainError> {
    let t = &settings.training;
    // A model is trained on the configured graph and token length, whatever the
    // embedder last served or scored (a retrainer's embedder also scores the champion
    // on the champion's).
    let configured = EmbeddingSpec {
        max_length: settings.embedding.max_length,
        ..embedder.loaded().clone()
    };
    embedder.adopt(&configured)?;
    let mut data = read_labelled(path, settings)?;
    let (examples, checks) = data_checks::check(
        std::mem::take(&mut data.examples),
        &data.labels,
        t,
        settings.embedding.max_length,
    );
    for w in &checks.warnings {
        warn!(target: "triage::training", "{w}");
    }
    if !checks.failures.is_empty() {
        return Err(TrainError::DataChecks(checks.failures));
    }
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let cache = FeatureCache::new(settings.feature_cache_dir());
    let key = FeatureCache::key(
        &data.summary.sha256,
        &format!(
            "{}|{}",
            data.reader_fingerprint,
            serde_json::to_string(&settings.labels).unwrap_or_default()
        ),
        embedder.spec(),
    );
    let cache_arg = t.feature_cache.then_some((&cache, key.as_str()));
    let (features, embed_stats) = embed_texts(embedder, &texts, cache_arg)?;
    Ok(Embedded {
        data,
        examples,
        checks,
        features,
        embed_stats,
    })
}

fn predict_and_score(
    model: &Model,
    texts: &[&str],
    x: &Array2<f32>,
    y: &[usize],
) -> Result<(Vec<Prediction>, Evaluation), ClassifierError> {
    let preds = model.predict(texts, x.view())?;
    let predicted: Vec<usize> = preds.iter().map(|p| p.label).collect();
    let eval = evaluate(model.labels(), y, &predicted);
    Ok((preds, eval))
}

fn data_card(
    summary: &ReadSummary,
    train_rows: usize,
    test_rows: usize,
    checks: DataReport,
) -> DataCard {
    DataCard {
        path: summary.path.clone(),
        sha256: summary.sha256.clone(),
        bytes: summary.bytes,
        rows_read: summary.rows,
        rows_malformed: summary.malformed,
        malformed_by_reason: summary.malformed_by_reason.clone(),
        train_rows: train_rows as u64,
        test_rows: test_rows as u64,
        checks,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateOutcome {
    pub version: String,
    pub data: ReadSummary,
    /// Labels in the file that the model does not know (each row of them is a miss).
    pub unknown_labels: Vec<String>,
    pub metrics: Evaluation,
    pub embed_seconds: f64,
}

/// Scores a registered model on any labelled file.
pub fn evaluate_file(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    registry: &Registry,
    data_path: &std::path::Path,
    version: &str,
) -> Result<EvaluateOutcome, TrainError> {
    let mut outcomes = evaluate_versions(settings, embedder, registry, data_path, &[version])?;
    Ok(outcomes.remove(0))
}

/// Scores several registered models on the same labelled file, read once and
/// embedded once per graph and token length among the models (each model is scored
/// on embeddings like those it was trained on); one outcome per version, in order.
/// Every model's graph must be findable; the embedder is left as it was.
pub fn evaluate_versions(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    registry: &Registry,
    data_path: &std::path::Path,
    versions: &[&str],
) -> Result<Vec<EvaluateOutcome>, TrainError> {
    // Load and check every model before the file is read and embedded.
    let models = versions
        .iter()
        .map(|version| {
            let model = registry.load(version)?;
            match embedder.spec().unservable(&model.card.embedding) {
                Some(reason) => Err(TrainError::Incompatible {
                    version: model.card.version,
                    reason,
                }),
                None => Ok(model),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = read_labelled(data_path, settings)?;
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    let own = embedder.spec().clone();
    let mut embedded: Vec<(&EmbeddingSpec, Array2<f32>, EmbedStats)> = Vec::new();
    for model in &models {
        let spec = &model.card.embedding;
        if embedded
            .iter()
            .all(|(s, ..)| s.incompatibility(spec).is_some())
        {
            embedder.adopt(spec)?;
            let result = embed_texts(embedder, &texts, None);
            embedder.adopt(&own)?;
            let (features, stats) = result?;
            embedded.push((spec, features, stats));
        }
    }
    let mut outcomes = Vec::with_capacity(models.len());
    for model in &models {
        let (_, features, stats) = embedded
            .iter()
            .find(|(s, ..)| s.incompatibility(&model.card.embedding).is_none())
            .expect("every model's embedding settings were embedded above");
        // Map the file's labels into the model's label set; unknown ones are appended
        // so their rows count as misses instead of vanishing.
        let mut labels = model.classifier.labels().to_vec();
        let mut unknown_labels = Vec::new();
        let truth: Vec<usize> = data
            .examples
            .iter()
            .map(|e| {
                let name = &data.labels[e.label];
                labels.iter().position(|l| l == name).unwrap_or_else(|| {
                    labels.push(name.clone());
                    unknown_labels.push(name.clone());
                    labels.len() - 1
                })
            })
            .collect();
        if !unknown_labels.is_empty() {
            warn!(target: "triage::training", version = %model.card.version, labels = ?unknown_labels, "The file has labels the model does not know.");
        }
        let preds = model.classifier.predict(&texts, features.view())?;
        let predicted: Vec<usize> = preds.iter().map(|p| p.label).collect();
        outcomes.push(EvaluateOutcome {
            version: model.card.version.clone(),
            data: data.summary.clone(),
            unknown_labels,
            metrics: evaluate(&labels, &truth, &predicted),
            embed_seconds: stats.elapsed.as_secs_f64(),
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::testing::FakeEmbedder;
    use crate::training::testing::{settings, train_champion};

    #[test]
    fn each_model_is_scored_at_its_own_token_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.embedding.max_length = 4;
        let short = train_champion(&s, 0);
        s.embedding.max_length = 64;
        let long = train_champion(&s, 100);
        // The class word is the 5th: a model trained at 4 tokens cannot see it, one at
        // 64 can; embedded once at one length, both would score alike.
        let rows: Vec<String> = (0..40)
            .map(|i| {
                let (word, stars) = if i % 2 == 0 { ("great", 5) } else { ("awful", 1) };
                serde_json::json!({"review_id": format!("e{i}"), "text": format!("the visit {i} was {word}"), "stars": stars})
                    .to_string()
            })
            .collect();
        let file = dir.path().join("eval.jsonl");
        std::fs::write(&file, rows.join("\n") + "\n").unwrap();
        let registry = Registry::new(s.registry_dir());
        let mut embedder = FakeEmbedder::new();
        let at_32 = EmbeddingSpec {
            max_length: 32,
            ..embedder.spec().clone()
        };
        embedder.adopt(&at_32).unwrap();

        let both =
            evaluate_versions(&s, &mut embedder, &registry, &file, &[&short, &long]).unwrap();
        assert_eq!(
            embedder.spec().max_length,
            32,
            "the embedder keeps its length"
        );
        assert_eq!(both[1].metrics.accuracy, 1.0);
        assert!(
            both[0].metrics.accuracy <= 0.6,
            "{}",
            both[0].metrics.accuracy
        );
        for (outcome, version) in both.iter().zip([&short, &long]) {
            let alone = evaluate_file(&s, &mut embedder, &registry, &file, version).unwrap();
            assert_eq!(alone.metrics, outcome.metrics);
        }

        // Training takes the configured length, whatever the embedder last used.
        s.embedding.max_length = 6;
        let options = TrainOptions {
            data: dir.path().join("train-0.jsonl"),
            promote: false,
        };
        let outcome = train(&s, &mut embedder, &registry, &options).unwrap();
        assert_eq!(
            registry
                .card(&outcome.version)
                .unwrap()
                .embedding
                .max_length,
            6
        );
    }
}
