//! Multinomial logistic regression (linfa-logistic) over one block of features,
//! with the label set it was trained on.

use linfa::prelude::*;
use linfa_logistic::MultiFittedLogisticRegression;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// Hyperparameters of the logistic regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitParams {
    pub alpha: f64,
    pub max_iterations: u64,
    pub gradient_tolerance: f64,
}

/// Why fitting or predicting failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error(
        "model expects {expected} features, got {actual}; was it trained with another embedding model?"
    )]
    Dimension { expected: usize, actual: usize },
    #[error("training needs at least two classes with rows, got {0}")]
    TooFewClasses(usize),
    #[error("{rows} feature rows but {labels} labels")]
    Length { rows: usize, labels: usize },
    #[error("{rows} embedding rows but {texts} texts")]
    Texts { rows: usize, texts: usize },
    #[error("label index {index} is outside the label set of {labels}")]
    UnknownLabel { index: usize, labels: usize },
    #[error("{classes} classes but {intercepts} intercepts and {columns} weight columns")]
    Shape {
        classes: usize,
        intercepts: usize,
        columns: usize,
    },
    #[error("class index {index} appears twice")]
    DuplicateClass { index: usize },
    #[error("fitting the logistic regression failed: {0}")]
    Fit(String),
}

/// One prediction: the label index, its probability, and all probabilities
/// (indexed like [`Classifier::labels`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: usize,
    pub confidence: f64,
    pub probabilities: Vec<f64>,
}

/// A fitted classifier. Serialises to JSON bit-exactly (serde_json `float_roundtrip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classifier {
    labels: Vec<String>,
    model: MultiFittedLogisticRegression<f64, usize>,
}

impl Classifier {
    /// Fits on rows of `x` with label indices `y` into `labels`.
    pub fn fit(
        x: ArrayView2<'_, f32>,
        y: &[usize],
        labels: Vec<String>,
        params: &FitParams,
    ) -> Result<Self, ClassifierError> {
        if x.nrows() != y.len() {
            return Err(ClassifierError::Length {
                rows: x.nrows(),
                labels: y.len(),
            });
        }
        if let Some(&index) = y.iter().find(|&&i| i >= labels.len()) {
            return Err(ClassifierError::UnknownLabel {
                index,
                labels: labels.len(),
            });
        }
        let mut present: Vec<usize> = y.to_vec();
        present.sort_unstable();
        present.dedup();
        if present.len() < 2 {
            return Err(ClassifierError::TooFewClasses(present.len()));
        }
        let records: Array2<f64> = x.mapv(f64::from);
        let targets = Array1::from(y.to_vec());
        let dataset = Dataset::new(records, targets);
        let model = MultiLogisticRegression::default()
            .alpha(params.alpha)
            .max_iterations(params.max_iterations)
            .gradient_tolerance(params.gradient_tolerance)
            .fit(&dataset)
            .map_err(|e| ClassifierError::Fit(e.to_string()))?;
        Ok(Self { labels, model })
    }

    /// The label set; prediction indices point into it.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Checks what deserialisation cannot: the weights have one column per class,
    /// and every class is a distinct index into the label set. A model file that
    /// fails this would otherwise panic in [`Classifier::predict`].
    pub fn validate(&self) -> Result<(), ClassifierError> {
        let classes = self.model.classes();
        let (intercepts, columns) = (self.model.intercept().len(), self.model.params().ncols());
        if classes.len() != intercepts || classes.len() != columns {
            return Err(ClassifierError::Shape {
                classes: classes.len(),
                intercepts,
                columns,
            });
        }
        let mut seen = vec![false; self.labels.len()];
        for &index in classes {
            match seen.get_mut(index) {
                None => {
                    return Err(ClassifierError::UnknownLabel {
                        index,
                        labels: self.labels.len(),
                    });
                }
                Some(true) => return Err(ClassifierError::DuplicateClass { index }),
                Some(s) => *s = true,
            }
        }
        Ok(())
    }

    /// Number of input features the model expects.
    pub fn dimension(&self) -> usize {
        self.model.params().nrows()
    }

    /// Predicts every row of `x`. Checks the dimension and the classes first (linfa
    /// or the label lookup would panic).
    pub fn predict(&self, x: ArrayView2<'_, f32>) -> Result<Vec<Prediction>, ClassifierError> {
        if x.ncols() != self.dimension() {
            return Err(ClassifierError::Dimension {
                expected: self.dimension(),
                actual: x.ncols(),
            });
        }
        self.validate()?;
        let probs = self.model.predict_probabilities(&x.mapv(f64::from));
        let classes = self.model.classes();
        Ok(probs
            .rows()
            .into_iter()
            .map(|row| {
                // Classes absent from training data keep probability 0.
                let mut probabilities = vec![0.0; self.labels.len()];
                for (&class, &p) in classes.iter().zip(row.iter()) {
                    probabilities[class] = p;
                }
                let (label, confidence) = argmax(&probabilities);
                Prediction {
                    label,
                    confidence,
                    probabilities,
                }
            })
            .collect())
    }
}

/// Index and value of the largest element (first on ties).
pub fn argmax(values: &[f64]) -> (usize, f64) {
    values
        .iter()
        .copied()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, v)| {
            if v > best.1 { (i, v) } else { best }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn toy() -> (Array2<f32>, Vec<usize>) {
        // Three well separated clusters in 2-D.
        let x = array![
            [1.0f32, 0.0],
            [0.9, 0.1],
            [1.1, -0.1],
            [0.0, 1.0],
            [0.1, 0.9],
            [-0.1, 1.1],
            [-1.0, -1.0],
            [-0.9, -1.1],
            [-1.1, -0.9],
        ];
        (x, vec![0, 0, 0, 1, 1, 1, 2, 2, 2])
    }

    fn params() -> FitParams {
        FitParams {
            alpha: 0.01,
            max_iterations: 200,
            gradient_tolerance: 1e-6,
        }
    }

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn fits_separable_data_and_probabilities_sum_to_one() {
        let (x, y) = toy();
        let model = Classifier::fit(x.view(), &y, labels(), &params()).unwrap();
        let preds = model.predict(x.view()).unwrap();
        let got: Vec<usize> = preds.iter().map(|p| p.label).collect();
        assert_eq!(got, y);
        for p in &preds {
            assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert_eq!(p.confidence, p.probabilities[p.label]);
        }
    }

    #[test]
    fn json_round_trip_is_exact() {
        let (x, y) = toy();
        let model = Classifier::fit(x.view(), &y, labels(), &params()).unwrap();
        let json = serde_json::to_string(&model).unwrap();
        let back: Classifier = serde_json::from_str(&json).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn wrong_dimension_is_an_error_not_a_panic() {
        let (x, y) = toy();
        let model = Classifier::fit(x.view(), &y, labels(), &params()).unwrap();
        let wide = Array2::<f32>::zeros((1, 3));
        let err = model.predict(wide.view()).unwrap_err();
        assert!(matches!(
            err,
            ClassifierError::Dimension {
                expected: 2,
                actual: 3
            }
        ));
    }

    #[test]
    fn class_missing_from_training_gets_zero_probability() {
        let (x, y) = toy();
        let mut four = labels();
        four.push("d".into());
        let model = Classifier::fit(x.view(), &y, four, &params()).unwrap();
        let p = &model.predict(x.view()).unwrap()[0];
        assert_eq!(p.probabilities.len(), 4);
        assert_eq!(p.probabilities[3], 0.0);
    }

    #[test]
    fn one_class_is_refused() {
        let x = Array2::<f32>::zeros((3, 2));
        let err = Classifier::fit(x.view(), &[1, 1, 1], labels(), &params()).unwrap_err();
        assert!(matches!(err, ClassifierError::TooFewClasses(1)));
    }
}
