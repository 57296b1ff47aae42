//! The inference pipeline. For now: classify texts with a registered model (the
//! streaming service builds on the same [`Predictor`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::classifier::ClassifierError;
use crate::embed::{EmbedError, Embedder};
use crate::registry::{ModelVersion, Registry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error(
        "model {version} was trained with another embedder: {reason}; retrain it, or run with the embedding settings in its model card"
    )]
    Incompatible { version: String, reason: String },
}

/// A label for one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Labelled {
    pub label: String,
    pub confidence: f64,
    pub probabilities: BTreeMap<String, f64>,
    pub model_version: String,
}

/// An embedder plus a model version, checked to be compatible.
pub struct Predictor<E> {
    embedder: E,
    model: ModelVersion,
}

impl<E: Embedder> Predictor<E> {
    /// Loads `version` (an alias or a version) and checks it against the embedder.
    pub fn load(embedder: E, registry: &Registry, version: &str) -> Result<Self, InferenceError> {
        let model = registry.load(version)?;
        if let Some(reason) = embedder.spec().incompatibility(&model.card.embedding) {
            return Err(InferenceError::Incompatible {
                version: model.card.version,
                reason,
            });
        }
        Ok(Self { embedder, model })
    }

    pub fn version(&self) -> &str {
        &self.model.card.version
    }

    /// Labels every text, in input order.
    pub fn classify(&mut self, texts: &[&str]) -> Result<Vec<Labelled>, InferenceError> {
        let vectors = self.embedder.embed(texts)?;
        let dim = self.embedder.spec().dimension;
        let flat: Vec<f32> = vectors.into_iter().flatten().collect();
        let x = ndarray::Array2::from_shape_vec((texts.len(), dim), flat).map_err(|e| {
            EmbedError::Inference(format!("embedder returned vectors of the wrong size: {e}"))
        })?;
        let labels = self.model.classifier.labels();
        Ok(self
            .model
            .classifier
            .predict(x.view())?
            .into_iter()
            .map(|p| Labelled {
                label: labels[p.label].clone(),
                confidence: p.confidence,
                probabilities: labels.iter().cloned().zip(p.probabilities).collect(),
                model_version: self.model.card.version.clone(),
            })
            .collect())
    }
}
