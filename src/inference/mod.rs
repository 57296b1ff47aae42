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
use crate::model::{ClassifierError, calibration};
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
    #[error(
        "challenger {version} refused for shadowing: {reason}; retrain it on the champion's embedding settings"
    )]
    ShadowRefused { version: String, reason: String },
}

/// A label for one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Labelled {
    pub label: String,
    /// The top class's probability as served: calibrated when the model card's
    /// calibration serves ([`crate::model::calibration`]), like `probabilities`.
    pub confidence: f64,
    pub probabilities: BTreeMap<String, f64>,
    /// The model's own (uncalibrated) top-class confidence: what drift and the
    /// rollout guard read, the scale their references and thresholds were set on.
    /// Equal to `confidence` when no calibration serves.
    #[serde(skip)]
    pub raw_confidence: f64,
    pub model_version: String,
    /// The challenger's label for the same text, when one is shadowed: it travels
    /// with the prediction record for the late-label join, and is never published
    /// as the label (nor in an HTTP answer).
    #[serde(skip)]
    pub shadow: Option<ShadowLabel>,
    /// Whether the label is applied by itself (`auto`: its confidence is at or above
    /// the card's routing threshold for `review.target_precision`) or goes to a
    /// person (`review`). A model whose card has no threshold labels every text
    /// `auto`, as before routing.
    pub route: Route,
}

/// Where a label goes: applied automatically, or to the review queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Auto,
    Review,
}

impl Route {
    /// `auto` or `review`, as records and metrics say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Review => "review",
        }
    }

    /// The route of a label of `confidence` under the card's threshold (None: auto;
    /// at the threshold: auto).
    pub fn of(confidence: f64, threshold: Option<f64>) -> Self {
        match threshold {
            Some(t) if confidence < t => Self::Review,
            _ => Self::Auto,
        }
    }
}

/// The challenger's prediction for one text, scored on the champion's embeddings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowLabel {
    pub model_version: String,
    pub label: String,
    /// As served (calibrated by the challenger's card when it serves one).
    pub confidence: f64,
    /// The challenger's own confidence, which the guard pairs with the champion's.
    pub raw_confidence: f64,
    pub probabilities: BTreeMap<String, f64>,
}

/// An embedder plus a model version, checked to be compatible.
pub struct Predictor<E> {
    embedder: E,
    /// Shared: the workers of a service serve one loaded copy.
    model: Arc<ModelVersion>,
    /// The challenger scored beside the model on the same embeddings; its card's
    /// embedding spec equals the model's (checked in [`Predictor::set_shadow`]).
    shadow: Option<Arc<ModelVersion>>,
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
        Ok(Self {
            embedder,
            model,
            shadow: None,
        })
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
        // A shadow reads the champion's embeddings: one that cannot read the new
        // champion's is dropped (the follower re-checks it and says why).
        if self
            .shadow
            .as_ref()
            .is_some_and(|s| shadow_refusal(&self.model, s).is_some())
        {
            self.shadow = None;
        }
        Ok(())
    }

    /// Scores `shadow` beside the model from the next batch on, on the same
    /// embeddings (None stops it). Refused, keeping no shadow, when its embedding spec
    /// is not the model's: it could not read the model's vectors.
    pub fn set_shadow(&mut self, shadow: Option<Arc<ModelVersion>>) -> Result<(), InferenceError> {
        self.shadow = None;
        if let Some(challenger) = &shadow
            && let Some(reason) = shadow_refusal(&self.model, challenger)
        {
            return Err(InferenceError::ShadowRefused {
                version: challenger.card.version.clone(),
                reason,
            });
        }
        self.shadow = shadow;
        Ok(())
    }

    /// The challenger scored in shadow, if any.
    pub fn shadow_version(&self) -> Option<&str> {
        self.shadow.as_ref().map(|s| s.card.version.as_str())
    }

    /// Labels every text, in input order.
    pub fn classify(&mut self, texts: &[&str]) -> Result<Vec<Labelled>, InferenceError> {
        Ok(self.classify_with_embeddings(texts)?.labelled)
    }

    /// Labels every text and returns the embeddings too (for feature records and
    /// drift); a shadowed challenger labels them too.
    pub fn classify_with_embeddings(
        &mut self,
        texts: &[&str],
    ) -> Result<Classified, InferenceError> {
        self.classify_scoring(texts, true)
    }

    /// Like [`Predictor::classify_with_embeddings`] with the champion alone: for
    /// answers no label join will ever see (HTTP classify), where a shadow's labels
    /// would be work for nothing.
    pub fn classify_champion(&mut self, texts: &[&str]) -> Result<Classified, InferenceError> {
        self.classify_scoring(texts, false)
    }

    fn classify_scoring(
        &mut self,
        texts: &[&str],
        with_shadow: bool,
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
        let threshold = self.model.card.routing.as_ref().map(|r| r.global.threshold);
        let calibration = self.model.card.calibration.as_ref();
        let labelled = self
            .model
            .classifier
            .predict(texts, x.view())?
            .into_iter()
            .map(|mut p| {
                let raw_confidence = p.confidence;
                calibration::serve(calibration, &mut p);
                Labelled {
                    label: labels[p.label].clone(),
                    confidence: p.confidence,
                    probabilities: labels.iter().cloned().zip(p.probabilities).collect(),
                    raw_confidence,
                    model_version: self.model.card.version.clone(),
                    shadow: None,
                    route: Route::of(p.confidence, threshold),
                }
            })
            .collect::<Vec<_>>();
        let labelled = if with_shadow {
            self.score_shadow(texts, x.view(), labelled)
        } else {
            labelled
        };
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

impl<E> Predictor<E> {
    /// Adds the shadow's labels to the champion's, from the same embedding matrix (no
    /// second embedding: that is nearly all the cost). A shadow that fails leaves the
    /// champion's labels as they are: it must never cost a window.
    fn score_shadow(
        &self,
        texts: &[&str],
        x: ndarray::ArrayView2<'_, f32>,
        mut labelled: Vec<Labelled>,
    ) -> Vec<Labelled> {
        let Some(shadow) = &self.shadow else {
            return labelled;
        };
        let predictions = match shadow.classifier.predict(texts, x) {
            Ok(predictions) => predictions,
            Err(err) => {
                tracing::warn!(challenger = %shadow.card.version, error = %err, "The shadow could not score this batch; its labels are left out.");
                return labelled;
            }
        };
        let labels = shadow.classifier.labels();
        for (l, mut p) in labelled.iter_mut().zip(predictions) {
            let raw_confidence = p.confidence;
            calibration::serve(shadow.card.calibration.as_ref(), &mut p);
            l.shadow = Some(ShadowLabel {
                model_version: shadow.card.version.clone(),
                label: labels[p.label].clone(),
                confidence: p.confidence,
                raw_confidence,
                probabilities: labels.iter().cloned().zip(p.probabilities).collect(),
            });
        }
        labelled
    }
}

/// Why `challenger` cannot be scored on `champion`'s embeddings, if it cannot: its
/// card's embedding spec must be the champion's (model id, graph checksum, dimension,
/// pooling, token length and truncation).
pub(crate) fn shadow_refusal(champion: &ModelVersion, challenger: &ModelVersion) -> Option<String> {
    champion
        .card
        .embedding
        .incompatibility(&challenger.card.embedding)
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

    #[test]
    fn a_served_calibration_tempers_the_served_confidence_and_routes_on_it() {
        let (_dir, model) = champion(64);
        let texts = ["the visit 1 was fine great", "the visit 2 was awful"];
        let raw = Predictor::new(FakeEmbedder::new(), model.clone())
            .unwrap()
            .classify(&texts)
            .unwrap();
        // A cooling temperature (2), served, and a routing threshold between the first
        // text's raw and tempered confidences.
        let mut calibration = calibration::calibrate(&[], &[]);
        calibration.temperature = 2.0;
        let mut served = (*model).clone();
        let mut card_routing = crate::model::routing::route(&[], 2, 0.95);
        let mut tempered = crate::model::Prediction {
            label: 0,
            confidence: 0.0,
            probabilities: raw[0].probabilities.values().copied().collect(),
        };
        calibration::temper(&mut tempered, 2.0);
        card_routing.global.threshold = (raw[0].confidence + tempered.confidence) / 2.0;
        served.card.routing = Some(card_routing);
        let classify = |card: &ModelVersion| {
            Predictor::new(FakeEmbedder::new(), Arc::new(card.clone()))
                .unwrap()
                .classify(&texts)
                .unwrap()
        };
        calibration.served = false;
        served.card.calibration = Some(calibration.clone());
        let unserved = classify(&served);
        assert_eq!(unserved[0].confidence, raw[0].confidence);
        assert_eq!(unserved[0].route, Route::Auto);

        calibration.served = true;
        served.card.calibration = Some(calibration);
        let labelled = classify(&served);
        for (l, r) in labelled.iter().zip(&raw) {
            assert_eq!(l.label, r.label, "a temperature keeps the label");
            assert_eq!(
                l.raw_confidence, r.confidence,
                "drift and the guard read this"
            );
            assert!(l.confidence < r.confidence, "{l:?} {r:?}");
            assert!((l.probabilities.values().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        assert!((labelled[0].confidence - tempered.confidence).abs() < 1e-12);
        assert_eq!(
            labelled[0].route,
            Route::Review,
            "routed on the served confidence"
        );
    }

    #[test]
    fn a_shadow_is_scored_on_the_same_embeddings_and_never_changes_the_published_label() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        train_champion(&s, 0);
        train_champion(&s, 40);
        let registry = Registry::new(s.registry_dir());
        let v1 = Arc::new(registry.load("v1").unwrap());
        let v2 = Arc::new(registry.load("v2").unwrap());
        let texts: Vec<String> = (0..12)
            .map(|i| {
                let line: serde_json::Value =
                    serde_json::from_str(&super::testing::review(i).0).unwrap();
                line["text"].as_str().unwrap().to_string()
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut predictor = Predictor::new(FakeEmbedder::new(), v1.clone()).unwrap();
        let alone = predictor.classify(&texts).unwrap();
        assert!(alone.iter().all(|l| l.shadow.is_none()));

        predictor.set_shadow(Some(v2.clone())).unwrap();
        assert_eq!(predictor.shadow_version(), Some("v2"));
        // Answers no join will see (HTTP classify) are the champion's alone.
        let champion_only = predictor.classify_champion(&texts).unwrap().labelled;
        assert_eq!(champion_only, alone);
        let shadowed = predictor.classify(&texts).unwrap();
        let mut by_v2 = Predictor::new(FakeEmbedder::new(), v2.clone()).unwrap();
        let v2_alone = by_v2.classify(&texts).unwrap();
        for ((with, without), v2_label) in shadowed.iter().zip(&alone).zip(&v2_alone) {
            let mut published = with.clone();
            let shadow = published.shadow.take().unwrap();
            assert_eq!(&published, without, "the champion's label is untouched");
            assert_eq!(shadow.model_version, "v2");
            assert_eq!(
                (&shadow.label, shadow.confidence, &shadow.probabilities),
                (
                    &v2_label.label,
                    v2_label.confidence,
                    &v2_label.probabilities
                ),
                "the shadow scores what v2 alone would"
            );
        }
        // Not in an HTTP answer.
        assert!(
            serde_json::to_value(&shadowed[0])
                .unwrap()
                .get("shadow")
                .is_none()
        );

        let mut other = (*v2).clone();
        other.card.embedding.max_length = 7;
        let err = predictor.set_shadow(Some(Arc::new(other))).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, InferenceError::ShadowRefused { .. }),
            "{err:?}"
        );
        assert!(
            text.contains("refused for shadowing: embedding.max_length"),
            "{text}"
        );
        assert!(
            text.ends_with("retrain it on the champion's embedding settings"),
            "{text}"
        );
        assert_eq!(predictor.shadow_version(), None);
        predictor.set_shadow(None).unwrap();
        assert!(predictor.classify(&texts).unwrap()[0].shadow.is_none());
    }
}
