//! The model a version stores: a logistic regression over the sentence embedding,
//! optionally blended with a second one over word n-gram features, and a decision
//! rule. [`Model::predict`] is the one function every path (stream worker,
//! `/v1/classify`, `classify`, `evaluate`, training, drift replay) calls, so they all
//! compute the same features and the same labels.

pub mod calibration;
pub mod comparison;
pub mod decision;
pub mod evaluation;
pub mod logistic;
pub mod ngrams;
pub mod routing;
pub mod solver;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

pub use decision::blend;
pub use logistic::{Classifier, ClassifierError, FitParams, Prediction, argmax};
pub use ngrams::{NgramSettings, Ngrams, NgramsError};
pub use solver::FitWork;

/// Why a model's parts do not make one model (at training, or loading `model.json`).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the n-gram model's labels {text:?} differ from the embedding model's {embedding:?}")]
    LabelsDiffer {
        embedding: Vec<String>,
        text: Vec<String>,
    },
    #[error(
        "the n-gram model does not match its vocabulary: it takes {features} features, the vocabulary has {vocabulary} n-grams"
    )]
    Vocabulary { features: usize, vocabulary: usize },
    #[error("{offsets} decision offsets for {labels} labels")]
    Offsets { offsets: usize, labels: usize },
    #[error("embedding weight {0} is outside [0, 1]")]
    Weight(f64),
    #[error("the {part} model: {source}")]
    Part {
        part: &'static str,
        #[source]
        source: ClassifierError,
    },
    #[error("not a triage model: {0}")]
    Json(#[from] serde_json::Error),
}

/// The n-gram half of a blended model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextHead {
    pub ngrams: Ngrams,
    pub classifier: Classifier,
}

/// A fitted model: `p(label) ∝ p_embedding^w · p_ngrams^(1-w) · exp(offset)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    labels: Vec<String>,
    embedding: Classifier,
    text: Option<TextHead>,
    /// Weight `w` of the embedding model's log-probabilities (1 without a text head).
    embedding_weight: f64,
    /// Per-label offsets added to the blended log-probabilities (all 0 = argmax).
    offsets: Vec<f64>,
}

impl Model {
    /// Assembles a model; the parts must share the label set, and each classifier's
    /// classes must index it.
    pub fn new(
        embedding: Classifier,
        text: Option<TextHead>,
        embedding_weight: f64,
        offsets: Vec<f64>,
    ) -> Result<Self, ModelError> {
        let part = |part: &'static str| move |source| ModelError::Part { part, source };
        embedding.validate().map_err(part("embedding"))?;
        let labels = embedding.labels().to_vec();
        if let Some(head) = &text {
            if head.classifier.labels() != labels.as_slice() {
                return Err(ModelError::LabelsDiffer {
                    embedding: labels,
                    text: head.classifier.labels().to_vec(),
                });
            }
            head.classifier.validate().map_err(part("n-gram"))?;
            if head.classifier.dimension() != head.ngrams.dimension() {
                return Err(ModelError::Vocabulary {
                    features: head.classifier.dimension(),
                    vocabulary: head.ngrams.dimension(),
                });
            }
        }
        if offsets.len() != labels.len() {
            return Err(ModelError::Offsets {
                offsets: offsets.len(),
                labels: labels.len(),
            });
        }
        let embedding_weight = if text.is_some() {
            embedding_weight
        } else {
            1.0
        };
        if !(0.0..=1.0).contains(&embedding_weight) {
            return Err(ModelError::Weight(embedding_weight));
        }
        Ok(Self {
            labels,
            embedding,
            text,
            embedding_weight,
            offsets,
        })
    }

    /// Reads `model.json`: this format, or the embedding-only format of triage 0.1
    /// (a bare logistic regression), which becomes a model without a text head.
    pub fn from_json(value: serde_json::Value) -> Result<Self, ModelError> {
        let legacy = value.get("model").is_some() && value.get("embedding").is_none();
        if legacy {
            let classifier: Classifier = serde_json::from_value(value)?;
            let offsets = vec![0.0; classifier.labels().len()];
            return Self::new(classifier, None, 1.0, offsets);
        }
        let model: Model = serde_json::from_value(value)?;
        Self::new(
            model.embedding,
            model.text,
            model.embedding_weight,
            model.offsets,
        )
    }

    /// The label set; prediction indices point into it.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Embedding dimension the model expects.
    pub fn dimension(&self) -> usize {
        self.embedding.dimension()
    }

    pub fn text_head(&self) -> Option<&TextHead> {
        self.text.as_ref()
    }

    pub fn embedding_weight(&self) -> f64 {
        self.embedding_weight
    }

    pub fn offsets(&self) -> &[f64] {
        &self.offsets
    }

    /// Labels each text from its text and its embedding (row `i` of `embeddings`).
    pub fn predict(
        &self,
        texts: &[&str],
        embeddings: ArrayView2<'_, f32>,
    ) -> Result<Vec<Prediction>, ClassifierError> {
        if texts.len() != embeddings.nrows() {
            return Err(ClassifierError::Texts {
                rows: embeddings.nrows(),
                texts: texts.len(),
            });
        }
        let from_embedding = self.embedding.predict(embeddings)?;
        let from_text = match &self.text {
            Some(head) => Some(
                head.classifier
                    .predict(head.ngrams.transform(texts).view())?,
            ),
            None => None,
        };
        Ok(from_embedding
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let t = from_text.as_ref().map(|t| t[i].probabilities.as_slice());
                blend(&e.probabilities, t, self.embedding_weight, &self.offsets)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn labels() -> Vec<String> {
        vec!["bad".into(), "good".into()]
    }

    fn params() -> FitParams {
        FitParams {
            alpha: 0.01,
            max_iterations: 200,
            gradient_tolerance: 1e-6,
        }
    }

    /// Embeddings that cannot tell the classes apart, words that can.
    fn data() -> (Vec<&'static str>, Array2<f32>, Vec<usize>) {
        let texts = vec![
            "awful food",
            "awful service",
            "really awful",
            "great food",
            "great service",
            "really great",
        ];
        let x = Array2::from_elem((6, 2), 0.5f32);
        (texts, x, vec![0, 0, 0, 1, 1, 1])
    }

    fn blended(weight: f64) -> Model {
        let (texts, x, y) = data();
        let embedding = Classifier::fit(x.view(), &y, labels(), &params()).unwrap();
        let settings = NgramSettings {
            min_df: 1,
            ..NgramSettings::default()
        };
        let ngrams = Ngrams::fit(&texts, &y, &settings);
        let classifier =
            Classifier::fit(ngrams.transform(&texts).view(), &y, labels(), &params()).unwrap();
        let head = TextHead { ngrams, classifier };
        Model::new(embedding, Some(head), weight, vec![0.0, 0.0]).unwrap()
    }

    #[test]
    fn the_text_head_decides_when_embeddings_cannot() {
        let model = blended(0.5);
        let x = Array2::from_elem((2, 2), 0.5f32);
        let preds = model.predict(&["awful", "great"], x.view()).unwrap();
        assert_eq!(preds[0].label, 0);
        assert_eq!(preds[1].label, 1);
        for p in &preds {
            assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        // With all the weight on the embedding, the words no longer matter.
        let model = blended(1.0);
        let preds = model.predict(&["awful", "great"], x.view()).unwrap();
        assert!((preds[0].probabilities[0] - preds[1].probabilities[0]).abs() < 1e-9);
    }

    #[test]
    fn json_round_trip_is_exact_and_legacy_models_still_load() {
        let model = blended(0.3);
        let value = serde_json::to_value(&model).unwrap();
        assert_eq!(Model::from_json(value).unwrap(), model);

        let (_, x, y) = data();
        let legacy = Classifier::fit(x.view(), &y, labels(), &params()).unwrap();
        let loaded = Model::from_json(serde_json::to_value(&legacy).unwrap()).unwrap();
        assert!(loaded.text_head().is_none());
        assert_eq!(loaded.embedding_weight(), 1.0);
        let first = x.select(ndarray::Axis(0), &[0]);
        assert_eq!(
            loaded.predict(&["a"], first.view()).unwrap()[0],
            legacy.predict(first.view()).unwrap()[0]
        );
    }

    #[test]
    fn mismatched_parts_are_refused_with_the_reason() {
        let model = blended(0.5);
        let err = Model::new(model.embedding.clone(), None, 1.0, vec![0.0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 decision offsets for 2 labels"), "{err}");
        let err = Model::new(
            model.embedding.clone(),
            model.text.clone(),
            1.5,
            vec![0.0; 2],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("outside [0, 1]"), "{err}");
    }

    #[test]
    fn model_files_whose_classes_do_not_match_the_labels_are_refused() {
        let model = blended(0.5);
        let refused = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut value = serde_json::to_value(&model).unwrap();
            edit(&mut value);
            Model::from_json(value).unwrap_err().to_string()
        };
        // Two labels, but the embedding model says its second class is label 2.
        let err = refused(&|v| v["embedding"]["model"]["classes"] = serde_json::json!([0, 2]));
        assert_eq!(
            err,
            "the embedding model: label index 2 is outside the label set of 2"
        );
        // A third class without weights for it.
        let err = refused(&|v| {
            v["text"]["classifier"]["model"]["classes"] = serde_json::json!([0, 1, 2])
        });
        assert_eq!(
            err,
            "the n-gram model: 3 classes but 2 intercepts and 2 weight columns"
        );
        let err = refused(&|v| v["offsets"] = serde_json::json!([0.0, 0.0, 0.0]));
        assert_eq!(err, "3 decision offsets for 2 labels");
        let err = refused(&|v| v["text"]["classifier"]["labels"] = serde_json::json!(["bad"]));
        assert!(err.starts_with("the n-gram model's labels"), "{err}");
    }

    #[test]
    fn a_classifier_with_classes_outside_its_labels_errs_instead_of_panicking() {
        let model = blended(0.5);
        let mut value = serde_json::to_value(&model.embedding).unwrap();
        value["model"]["classes"] = serde_json::json!([0, 7]);
        let corrupt: Classifier = serde_json::from_value(value).unwrap();
        let x = Array2::from_elem((1, 2), 0.5f32);
        let err = corrupt.predict(x.view()).unwrap_err();
        assert!(matches!(
            err,
            ClassifierError::UnknownLabel {
                index: 7,
                labels: 2
            }
        ));
    }

    #[test]
    fn texts_and_embeddings_must_pair_up() {
        let model = blended(0.5);
        let x = Array2::from_elem((2, 2), 0.5f32);
        let err = model.predict(&["only one"], x.view()).unwrap_err();
        assert!(matches!(err, ClassifierError::Texts { rows: 2, texts: 1 }));
    }
}
