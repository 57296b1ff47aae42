//! Loads real traffic for the drift scenarios: labelled in-distribution messages and
//! messages from another source, embedded (through the feature cache) and classified
//! by the model under test.

use std::path::Path;

use ndarray::Array2;
use tracing::info;

use super::scenarios::{Message, Pools};
use crate::config::{DataFormat, Settings};
use crate::embed::{EmbedError, Embedder};
use crate::feature::cache::FeatureCache;
use crate::feature::readers::{ReadError, ReaderSpec, read_file};
use crate::feature::{FeatureError, embed_texts, read_labelled};
use crate::model::ClassifierError;
use crate::registry::ModelVersion;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error("model {version} has no label {label:?}; --prior-label takes one of: {known}")]
    UnknownLabel {
        version: String,
        label: String,
        known: String,
    },
    #[error(
        "model {version} was trained with another embedder: {reason}; run with the embedding settings in its model card"
    )]
    Incompatible { version: String, reason: String },
    #[error("{path} has no rows with label {label:?}, so there is no prior shift to replay")]
    NoPriorRows { path: String, label: String },
    #[error("{path} has no usable rows in field {field:?}; set --inject-text-field")]
    NoInjectRows { path: String, field: String },
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplaySources<'a> {
    /// Labelled, in-distribution file the model was not trained on.
    pub data: &'a Path,
    /// The prior-shift class (a label of the model); default its first label.
    pub prior_label: Option<&'a str>,
    /// Messages from another source, and the field that holds their text.
    pub inject: Option<(&'a Path, &'a str)>,
}

/// The pools plus the prior-shift label that was used.
pub struct Replay {
    pub pools: Pools,
    pub prior_label: String,
}

pub fn load(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    model: &ModelVersion,
    sources: &ReplaySources<'_>,
) -> Result<Replay, ReplayError> {
    let labels = model.classifier.labels();
    let version = &model.card.version;
    // Embedded as the model was trained: its graph and token length.
    embedder
        .adopt(&model.card.embedding)
        .map_err(|err| match err.mismatch() {
            Some(reason) => ReplayError::Incompatible {
                version: version.clone(),
                reason,
            },
            None => ReplayError::Embed(err),
        })?;
    let prior_label = sources
        .prior_label
        .map(str::to_string)
        .or_else(|| labels.first().cloned())
        .unwrap_or_default();
    let prior_index = labels
        .iter()
        .position(|l| *l == prior_label)
        .ok_or_else(|| ReplayError::UnknownLabel {
            version: version.clone(),
            label: prior_label.clone(),
            known: labels.join(", "),
        })?;

    let cache = FeatureCache::new(settings.feature_cache_dir());
    let data = read_labelled(sources.data, settings)?;
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    let key = FeatureCache::key(
        &data.summary.sha256,
        &format!("replay|{}", data.reader_fingerprint),
        embedder.spec(),
    );
    let (features, _) = embed_texts(embedder, &texts, Some((&cache, &key)))?;
    // File labels mapped to the model's; a label the model does not know has no truth.
    let truth: Vec<Option<usize>> = data
        .examples
        .iter()
        .map(|e| labels.iter().position(|l| *l == data.labels[e.label]))
        .collect();
    let base = classify(model, &features, &texts, &truth)?;
    let prior: Vec<usize> = truth
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == Some(prior_index))
        .map(|(i, _)| i)
        .collect();
    if prior.is_empty() {
        return Err(ReplayError::NoPriorRows {
            path: sources.data.display().to_string(),
            label: prior_label,
        });
    }

    let mut inject = Vec::new();
    if let Some((path, field)) = sources.inject {
        let mut data_settings = settings.data.clone();
        data_settings.text_field = field.to_string();
        // Another source: its format goes by its extension, not by [data].
        data_settings.format = DataFormat::Auto;
        let spec = ReaderSpec::new(&data_settings, None);
        let mut inject_texts: Vec<String> = Vec::new();
        let summary = read_file(path, &spec, |record| {
            inject_texts.push(record.text);
            Ok(())
        })?;
        info!(target: "triage::drift", "{summary}");
        if inject_texts.is_empty() {
            return Err(ReplayError::NoInjectRows {
                path: path.display().to_string(),
                field: field.to_string(),
            });
        }
        let refs: Vec<&str> = inject_texts.iter().map(String::as_str).collect();
        let key = FeatureCache::key(
            &summary.sha256,
            &format!("replay|{}", spec.fingerprint(path)),
            embedder.spec(),
        );
        let (features, _) = embed_texts(embedder, &refs, Some((&cache, &key)))?;
        inject = classify(model, &features, &refs, &vec![None; refs.len()])?;
    }
    Ok(Replay {
        pools: Pools {
            base,
            prior,
            inject,
        },
        prior_label,
    })
}

fn classify(
    model: &ModelVersion,
    features: &Array2<f32>,
    texts: &[&str],
    truth: &[Option<usize>],
) -> Result<Vec<Message>, ClassifierError> {
    let predictions = model.classifier.predict(texts, features.view())?;
    Ok(predictions
        .into_iter()
        .zip(features.rows())
        .zip(texts.iter().zip(truth))
        .map(|((p, row), (text, &truth))| Message {
            label: p.label,
            confidence: p.confidence,
            embedding: row.to_vec(),
            text_length: text.chars().count(),
            truth,
        })
        .collect())
}
