//! Stratified k-fold cross-validation on the training split: chooses the
//! regularisation of each model by macro-F1 and keeps the out-of-fold predictions
//! that the blend weight and the decision offsets are then tuned on. Features that
//! are fitted to data (the n-gram vocabulary) are fitted inside each fold, on the
//! fold's training rows only, so the scores are not flattered by the held rows.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tracing::info;

use super::balance::rows_to_fit;
use super::split::rows_by_class;
use crate::config::ClassBalance;
use crate::model::decision::Scored;
use crate::model::evaluation::evaluate;
use crate::model::{Classifier, ClassifierError, FitParams, Prediction};

/// The fold (`0..k`) of every row: each class dealt round-robin over the folds after
/// a seeded shuffle, so every fold has the class mix of the whole.
pub fn stratified_folds(labels: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let by_class = rows_by_class(labels);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for mut rows in by_class {
        rows.shuffle(&mut rng);
        for row in rows {
            fold[row] = next % k;
            next += 1;
        }
    }
    fold
}

/// The feature rows of one fold: its training rows and its held rows, in row order.
#[derive(Debug, Clone)]
pub struct FoldData {
    pub train: Array2<f32>,
    pub held: Array2<f32>,
}

/// The training and held row indices of `fold`.
pub fn fold_rows(folds: &[usize], fold: usize) -> (Vec<usize>, Vec<usize>) {
    (0..folds.len()).partition(|&r| folds[r] != fold)
}

/// Fold data for features that need no fitting: rows of `x`.
pub fn fixed_folds(x: ArrayView2<'_, f32>, folds: &[usize]) -> Vec<FoldData> {
    let k = folds.iter().copied().max().map_or(0, |m| m + 1);
    (0..k)
        .map(|f| {
            let (train, held) = fold_rows(folds, f);
            FoldData {
                train: x.select(Axis(0), &train),
                held: x.select(Axis(0), &held),
            }
        })
        .collect()
}

/// Fits one logistic regression on `x` with the class balance applied.
pub fn fit_balanced(
    x: ArrayView2<'_, f32>,
    y: &[usize],
    labels: &[String],
    params: &FitParams,
    balance: ClassBalance,
    seed: u64,
) -> Result<Classifier, ClassifierError> {
    let rows = rows_to_fit(y, balance, seed);
    let xs = x.select(Axis(0), &rows);
    let ys: Vec<usize> = rows.iter().map(|&r| y[r]).collect();
    Classifier::fit(xs.view(), &ys, labels.to_vec(), params)
}

/// What cross-validating one model found.
#[derive(Debug, Clone)]
pub struct Selection {
    pub alpha: f64,
    /// Out-of-fold macro-F1 of every alpha tried, in the order given.
    pub scores: Vec<Scored>,
    /// Out-of-fold predictions of the chosen alpha, one per training row.
    pub out_of_fold: Vec<Prediction>,
}

/// How to cross-validate.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub alphas: &'a [f64],
    /// Fold of each row (see [`stratified_folds`]).
    pub folds: &'a [usize],
    /// Features of each fold (see [`fixed_folds`]).
    pub data: &'a [FoldData],
    pub params: FitParams,
    pub balance: ClassBalance,
    pub seed: u64,
    /// Fits run at once (each is single-threaded).
    pub threads: usize,
    /// Names the model in logs and the progress bar.
    pub name: &'a str,
}

/// Scores every alpha by out-of-fold macro-F1 and returns the best (the largest
/// alpha on ties: the simpler model).
pub fn select_alpha(
    y: &[usize],
    labels: &[String],
    plan: &Plan<'_>,
) -> Result<Selection, ClassifierError> {
    let k = plan.data.len();
    let jobs: Vec<(usize, usize)> = (0..plan.alphas.len())
        .flat_map(|a| (0..k).map(move |f| (a, f)))
        .collect();
    let bar = ProgressBar::new(jobs.len() as u64).with_style(
        ProgressStyle::with_template("cross-validating {msg} {bar:30} {pos}/{len} fits  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(plan.name.to_string());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<FoldResult>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..plan.threads.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(a, f)) = jobs.get(job) else { break };
                    let result = fit_fold(y, labels, plan, a, f);
                    if let Ok(mut r) = results.lock() {
                        r[job] = Some(result);
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let results = results.into_inner().unwrap_or_default();

    let mut per_alpha: Vec<Vec<Option<Prediction>>> = vec![vec![None; y.len()]; plan.alphas.len()];
    for (&(a, f), result) in jobs.iter().zip(results) {
        let predictions =
            result.unwrap_or_else(|| Err(ClassifierError::Fit("a fold did not run".into())))?;
        let (_, held) = fold_rows(plan.folds, f);
        for (row, p) in held.into_iter().zip(predictions) {
            per_alpha[a][row] = Some(p);
        }
    }
    let mut best: Option<(Scored, Vec<Prediction>)> = None;
    let mut scores = Vec::with_capacity(plan.alphas.len());
    for (&alpha, predictions) in plan.alphas.iter().zip(per_alpha) {
        let predictions: Vec<Prediction> = predictions.into_iter().flatten().collect();
        let predicted: Vec<usize> = predictions.iter().map(|p| p.label).collect();
        let score = Scored {
            value: alpha,
            macro_f1: evaluate(labels, y, &predicted).macro_f1,
        };
        info!(target: "triage::training", model = plan.name, alpha, cv_macro_f1 = format!("{:.4}", score.macro_f1), "Cross-validated.");
        scores.push(score);
        let better = best.as_ref().is_none_or(|(b, _)| {
            score.macro_f1 > b.macro_f1 || (score.macro_f1 == b.macro_f1 && alpha > b.value)
        });
        if better {
            best = Some((score, predictions));
        }
    }
    let (chosen, out_of_fold) =
        best.ok_or_else(|| ClassifierError::Fit("no alpha to try".into()))?;
    Ok(Selection {
        alpha: chosen.value,
        scores,
        out_of_fold,
    })
}

/// Out-of-fold predictions of one (alpha, fold) fit.
type FoldResult = Result<Vec<Prediction>, ClassifierError>;

fn fit_fold(
    y: &[usize],
    labels: &[String],
    plan: &Plan<'_>,
    alpha: usize,
    fold: usize,
) -> Result<Vec<Prediction>, ClassifierError> {
    let (train, _) = fold_rows(plan.folds, fold);
    let y_train: Vec<usize> = train.iter().map(|&r| y[r]).collect();
    let params = FitParams {
        alpha: plan.alphas[alpha],
        ..plan.params
    };
    let data = &plan.data[fold];
    let model = fit_balanced(
        data.train.view(),
        &y_train,
        labels,
        &params,
        plan.balance,
        plan.seed.wrapping_add(fold as u64),
    )?;
    model.predict(data.held.view())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn folds_are_stratified_and_cover_every_row() {
        let labels: Vec<usize> = (0..50).map(|i| usize::from(i % 5 == 0)).collect();
        let folds = stratified_folds(&labels, 5, 7);
        for f in 0..5 {
            let rows: Vec<usize> = (0..50).filter(|&r| folds[r] == f).collect();
            assert_eq!(rows.len(), 10);
            assert_eq!(rows.iter().filter(|&&r| labels[r] == 1).count(), 2);
        }
        assert_eq!(folds, stratified_folds(&labels, 5, 7));
    }

    /// Two noisy 1-D classes: a huge alpha shrinks every weight to ~0 and predicts
    /// the majority class, so cross-validation must prefer the small one.
    #[test]
    fn cross_validation_prefers_the_alpha_that_generalises() {
        let n = 60;
        let y: Vec<usize> = (0..n).map(|i| usize::from(i % 3 == 0)).collect();
        let x = Array2::from_shape_fn((n, 2), |(i, j)| {
            let centre = if y[i] == 1 { 1.0 } else { -1.0 };
            if j == 0 {
                centre + ((i * 37 % 11) as f32 - 5.0) / 10.0
            } else {
                1.0
            }
        });
        let labels: Vec<String> = vec!["a".into(), "b".into()];
        let folds = stratified_folds(&y, 3, 1);
        let data = fixed_folds(x.view(), &folds);
        let plan = Plan {
            alphas: &[1e4, 0.1],
            folds: &folds,
            data: &data,
            params: FitParams {
                alpha: 0.0,
                max_iterations: 200,
                gradient_tolerance: 1e-6,
            },
            balance: ClassBalance::None,
            seed: 1,
            threads: 2,
            name: "test",
        };
        let s = select_alpha(&y, &labels, &plan).unwrap();
        assert_eq!(s.alpha, 0.1);
        assert_eq!(s.scores.len(), 2);
        assert!(s.scores[0].macro_f1 < 0.5, "{:?}", s.scores);
        assert!(s.scores[1].macro_f1 > 0.9, "{:?}", s.scores);
        assert_eq!(s.out_of_fold.len(), n);
    }
}
