//! Multinomial logistic regression (linfa-logistic) over one block of features,
//! with the label set it was trained on.

use linfa_logistic::MultiFittedLogisticRegression;
use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};
use serde::{Deserialize, Serialize};

use super::solver::{FitWork, Objective, Stopping, minimise};

/// Hyperparameters of the logistic regression. `alpha` is the L2 strength on the
/// summed loss (as linfa-logistic); `gradient_tolerance` bounds the largest
/// gradient component of the mean loss (see [`super::solver`]).
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
    /// Fits on rows of `x` with label indices `y` into `labels`, from zero weights,
    /// on one thread.
    pub fn fit(
        x: ArrayView2<'_, f32>,
        y: &[usize],
        labels: Vec<String>,
        params: &FitParams,
    ) -> Result<Self, ClassifierError> {
        Self::fit_from(x, y, labels, params, None, 1).map(|(model, _)| model)
    }

    /// Fits as [`Classifier::fit`] does, starting from the weights of `start` (a fit
    /// on the same features, e.g. at a neighbouring alpha: a warm start), with the
    /// rows shared by `threads`. Also says what the fit cost.
    pub fn fit_from(
        x: ArrayView2<'_, f32>,
        y: &[usize],
        labels: Vec<String>,
        params: &FitParams,
        start: Option<&Classifier>,
        threads: usize,
    ) -> Result<(Self, FitWork), ClassifierError> {
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
        // Like linfa-logistic: the classes are the label indices present, in order.
        let mut classes: Vec<usize> = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return Err(ClassifierError::TooFewClasses(classes.len()));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(ClassifierError::Fit(
                "a feature is NaN or infinite; check the embeddings".into(),
            ));
        }
        if !(params.alpha.is_finite() && params.alpha >= 0.0) {
            return Err(ClassifierError::Fit(format!(
                "alpha {} must be finite and not negative (training.alphas)",
                params.alpha
            )));
        }
        let mut column = vec![usize::MAX; labels.len()];
        for (c, &label) in classes.iter().enumerate() {
            column[label] = c;
        }
        let targets = y.iter().map(|&label| column[label]).collect();
        let objective = Objective::new(x, targets, classes.len(), params.alpha, threads);
        let initial = start.and_then(|s| s.start_for(x.ncols(), &classes));
        let stopping = Stopping {
            max_iterations: params.max_iterations,
            gradient_tolerance: params.gradient_tolerance,
        };
        let (solution, work) = minimise(&objective, initial, stopping);
        let (d1, k) = objective.shape();
        let solution = solution
            .into_shape_with_order((d1, k))
            .map_err(|e| ClassifierError::Fit(e.to_string()))?;
        // linfa-logistic's fitted model has no public constructor; its serde form
        // (the registry's format) is the stable way in.
        let model = serde_json::from_value(serde_json::json!({
            "intercept": solution.row(d1 - 1).to_owned(),
            "params": solution.slice_axis(Axis(0), Slice::from(..d1 - 1)).to_owned(),
            "classes": classes,
        }))
        .map_err(|e| ClassifierError::Fit(format!("building the fitted model: {e}")))?;
        Ok((Self { labels, model }, work))
    }

    /// This model's weights as a starting point for a fit over `features` columns
    /// and `classes` (zeros for a class this model lacks); `None` when the
    /// features differ.
    fn start_for(&self, features: usize, classes: &[usize]) -> Option<Array1<f64>> {
        if self.dimension() != features {
            return None;
        }
        let (w, b) = (self.model.params(), self.model.intercept());
        let mut start = Array2::<f64>::zeros((features + 1, classes.len()));
        for (c, label) in classes.iter().enumerate() {
            if let Some(mine) = self.model.classes().iter().position(|l| l == label) {
                start
                    .column_mut(c)
                    .slice_axis_mut(Axis(0), Slice::from(..features))
                    .assign(&w.column(mine));
                start[[features, c]] = b[mine];
            }
        }
        start
            .into_shape_with_order(features * classes.len() + classes.len())
            .ok()
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
