//! The inference pipeline, Kafka-free: decode and validate messages, classify them
//! with the champion on dedicated workers, watch drift, encode the records, and
//! (in [`pipeline`]) run it all in windows over any source and sink
//! (`crate::stream`).
//! Kafka and files plug in at the edges (the `kafka` and `file` modules).

pub mod decode;
pub mod pipeline;
pub mod records;
#[cfg(test)]
pub(crate) mod testing;
pub mod window;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::embed::{EmbedError, Embedder, GraphCatalog};
use crate::model::ClassifierError;
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
    /// Shared: the workers of a service serve one loaded copy.
    model: Arc<ModelVersion>,
}

impl<E: Embedder> Predictor<E> {
    /// Loads `version` (an alias or a version) and checks it against the embedder.
    pub fn load(embedder: E, registry: &Registry, version: &str) -> Result<Self, InferenceError> {
        Self::new(embedder, Arc::new(registry.load(version)?))
    }

    /// Pairs an embedder with an already loaded model, if they are compatible; the
    /// embedder takes the model's token length.
    pub fn new(mut embedder: E, model: Arc<ModelVersion>) -> Result<Self, InferenceError> {
        adopt(&mut embedder, &model)?;
        Ok(Self { embedder, model })
    }

    pub fn version(&self) -> &str {
        &self.model.card.version
    }

    pub fn model(&self) -> &ModelVersion {
        &self.model
    }

    pub fn embedder_spec(&self) -> &crate::embed::EmbeddingSpec {
        self.embedder.spec()
    }

    /// Replaces the model if it is compatible with the embedder (which then embeds at
    /// the new model's token length); otherwise keeps the current one and says why.
    pub fn swap(&mut self, model: Arc<ModelVersion>) -> Result<(), InferenceError> {
        adopt(&mut self.embedder, &model)?;
        self.model = model;
        Ok(())
    }

    /// Labels every text, in input order.
    pub fn classify(&mut self, texts: &[&str]) -> Result<Vec<Labelled>, InferenceError> {
        Ok(self.classify_with_embeddings(texts)?.labelled)
    }

    /// Labels every text and returns the embeddings too (for feature records and drift).
    pub fn classify_with_embeddings(
        &mut self,
        texts: &[&str],
    ) -> Result<Classified, InferenceError> {
        let started = std::time::Instant::now();
        let vectors = self.embedder.embed(texts)?;
        let embed = started.elapsed();
        let started = std::time::Instant::now();
        let dim = self.embedder.spec().dimension;
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        let x = ndarray::Array2::from_shape_vec((texts.len(), dim), flat).map_err(|e| {
            EmbedError::Inference(format!("embedder returned vectors of the wrong size: {e}"))
        })?;
        let labels = self.model.classifier.labels();
        let labelled = self
            .model
            .classifier
            .predict(texts, x.view())?
            .into_iter()
            .map(|p| Labelled {
                label: labels[p.label].clone(),
                confidence: p.confidence,
                probabilities: labels.iter().cloned().zip(p.probabilities).collect(),
                model_version: self.model.card.version.clone(),
            })
            .collect();
        Ok(Classified {
            labelled,
            embeddings: vectors,
            model_version: self.model.card.version.clone(),
            times: StageTimes {
                embed,
                classify: started.elapsed(),
            },
        })
    }
}

/// The follower's check before a hot swap, for every worker at once: refuses a model
/// that an embedder like `spec` cannot serve: one trained with another
/// model id, dimension or pooling, or on a graph that `graphs` cannot find. The token
/// length is not checked: [`Embedder::adopt`] takes it.
pub(crate) fn check_followable(
    spec: &crate::embed::EmbeddingSpec,
    graphs: &GraphCatalog,
    model: &ModelVersion,
) -> Result<(), InferenceError> {
    let trained = &model.card.embedding;
    let reason = match spec.unservable(trained) {
        Some(reason) => Some(reason),
        None if trained.model_sha256 != spec.model_sha256 => graphs
            .find(&trained.model_sha256)
            .err()
            .map(|e| e.to_string()),
        None => None,
    };
    match reason {
        Some(reason) => Err(InferenceError::Incompatible {
            version: model.card.version.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Makes `embedder` embed the way `model` was trained (its graph and token length:
/// a service configured for the int8 graph keeps serving a champion trained on the
/// fp32 one, on the fp32 one), or says why it cannot.
fn adopt<E: Embedder>(embedder: &mut E, model: &ModelVersion) -> Result<(), InferenceError> {
    embedder
        .adopt(&model.card.embedding)
        .map_err(|err| match err.mismatch() {
            Some(reason) => InferenceError::Incompatible {
                version: model.card.version.clone(),
                reason,
            },
            None => InferenceError::Embed(err),
        })
}

/// Labels for a batch of texts, with their embeddings and the time each stage took.
#[derive(Debug)]
pub struct Classified {
    pub labelled: Vec<Labelled>,
    pub embeddings: Vec<Vec<f32>>,
    pub model_version: String,
    pub times: StageTimes,
}

/// Time spent per CPU stage of one batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub embed: std::time::Duration,
    pub classify: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::testing::{FakeEmbedder, settings, train_champion};
    use super::*;

    fn champion(max_length: usize) -> (tempfile::TempDir, Arc<ModelVersion>) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.embedding.max_length = max_length;
        train_champion(&s, 0);
        let model = Registry::new(s.registry_dir()).load("champion").unwrap();
        assert_eq!(model.card.embedding.max_length, max_length);
        (dir, Arc::new(model))
    }

    #[test]
    fn a_predictor_embeds_at_its_models_token_length() {
        let (_dir, model) = champion(5);
        let mut predictor = Predictor::new(FakeEmbedder::new(), model.clone()).unwrap();
        assert_eq!(predictor.embedder_spec().max_length, 5);
        // "great" is the 6th word: cut off at 5, so both texts embed alike.
        let texts = ["the visit 1 was fine great", "the visit 1 was fine"];
        let labelled = predictor.classify(&texts).unwrap();
        assert_eq!(labelled[0].probabilities, labelled[1].probabilities);

        // A swap to a model of another length re-truncates; one of another graph is
        // refused and leaves the length alone.
        let mut longer = (*model).clone();
        longer.card.embedding.max_length = 64;
        longer.card.version = "v-long".into();
        predictor.swap(Arc::new(longer)).unwrap();
        assert_eq!(predictor.embedder_spec().max_length, 64);
        let labelled = predictor.classify(&texts).unwrap();
        assert_ne!(labelled[0].probabilities, labelled[1].probabilities);

        let mut other = (*model).clone();
        other.card.embedding.model_sha256 = "f".repeat(64);
        other.card.embedding.max_length = 7;
        let err = predictor.swap(Arc::new(other)).unwrap_err();
        assert!(
            err.to_string()
                .contains("no embedding graph with checksum ffffffffffff"),
            "{err}"
        );
        assert_eq!(predictor.embedder_spec().max_length, 64);
        assert_eq!(predictor.version(), "v-long");
    }
}
