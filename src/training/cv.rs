//! Stratified k-fold cross-validation on the training split: chooses the
//! regularisation of each model by macro-F1 and keeps the out-of-fold predictions
//! that the blend weight and the decision offsets are then tuned on. Features that
//! are fitted to data (the n-gram vocabulary) are fitted inside each fold, on the
//! fold's training rows only, so the scores are not flattered by the held rows.

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
use crate::model::{Classifier, ClassifierError, FitParams, FitWork, Prediction};

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

/// How one logistic regression is fitted beside its data.
#[derive(Debug, Clone, Copy)]
pub struct FitRun<'a> {
    pub params: FitParams,
    pub balance: ClassBalance,
    /// Seeds the oversampling.
    pub seed: u64,
    /// A model to start from (a warm start), e.g. the same fold at the previous alpha.
    pub start: Option<&'a Classifier>,
    /// Threads the fit shares its rows between.
    pub threads: usize,
}

/// Fits one logistic regression on `x` with the class balance applied.
pub fn fit_balanced(
    x: ArrayView2<'_, f32>,
    y: &[usize],
    labels: &[String],
    run: &FitRun<'_>,
) -> Result<(Classifier, FitWork), ClassifierError> {
    let rows = rows_to_fit(y, run.balance, run.seed);
    let ys: Vec<usize> = rows.iter().map(|&r| y[r]).collect();
    let fit = |x: ArrayView2<'_, f32>| {
        Classifier::fit_from(x, &ys, labels.to_vec(), &run.params, run.start, run.threads)
    };
    if run.balance == ClassBalance::None {
        // Every row once, in order: no copy.
        return fit(x);
    }
    let xs = x.select(Axis(0), &rows);
    fit(xs.view())
}

/// The smallest and largest alpha an extended grid may reach: beyond them the
/// model is as good as unregularised, or as good as constant.
pub const ALPHA_BOUNDS: (f64, f64) = (1e-4, 1e4);

/// What cross-validating one model found.
#[derive(Debug, Clone)]
pub struct Selection {
    pub alpha: f64,
    /// Out-of-fold macro-F1 of every alpha tried, from the smallest alpha up.
    pub scores: Vec<Scored>,
    /// Whether alphas beyond the configured grid were tried because the best was
    /// at an edge.
    pub extended: bool,
    /// Out-of-fold predictions of the chosen alpha, one per training row.
    pub out_of_fold: Vec<Prediction>,
    /// A fold's model at the chosen alpha: a warm start for the final fit.
    pub start: Option<Classifier>,
    /// The fits cross-validation ran.
    pub work: FitWork,
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
    /// Threads each fit shares its rows between.
    pub threads: usize,
    /// Names the model in logs and the progress bar.
    pub name: &'a str,
}

/// One alpha cross-validated: its score, predictions and fold models.
struct Tried {
    score: Scored,
    /// Mean out-of-fold log-loss: breaks macro-F1 ties.
    log_loss: f64,
    out_of_fold: Vec<Prediction>,
    models: Vec<Classifier>,
}

/// Scores every alpha by out-of-fold macro-F1 and returns the best (on ties, the
/// lower out-of-fold log-loss: the better probabilities). When the best is the smallest or the largest
/// alpha of the grid, the grid is extended past it in steps of about 3 along
/// 1, 3, 10, 30, ... (see [`ladder_below`]) until the best is inside or
/// [`ALPHA_BOUNDS`] is reached.
///
/// The alphas run from the largest down, each fold starting from its model at the
/// previous alpha (a warm start along the regularisation path).
pub fn select_alpha(
    y: &[usize],
    labels: &[String],
    plan: &Plan<'_>,
) -> Result<Selection, ClassifierError> {
    let mut grid: Vec<f64> = plan.alphas.to_vec();
    grid.sort_by(f64::total_cmp);
    grid.dedup();
    let k = plan.data.len();
    let bar = ProgressBar::new((grid.len() * k) as u64).with_style(
        ProgressStyle::with_template("cross-validating {msg} {bar:30} {pos}/{len} fits  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(plan.name.to_string());
    let mut work = FitWork::default();
    let mut run = |alpha: f64, from: Option<&[Classifier]>| -> Result<Tried, ClassifierError> {
        let tried = cross_validate(y, labels, plan, alpha, from, &mut work, &bar)?;
        info!(target: "triage::training", model = plan.name, alpha, cv_macro_f1 = format!("{:.4}", tried.score.macro_f1), "Cross-validated.");
        Ok(tried)
    };
    // Ascending by alpha once filled; run from the largest down.
    let mut tried: Vec<Tried> = Vec::with_capacity(grid.len());
    for &alpha in grid.iter().rev() {
        let next = run(alpha, tried.last().map(|t| t.models.as_slice()))?;
        tried.push(next);
    }
    tried.reverse();
    let mut extended = false;
    // One value means no search (see `training.alphas`).
    while grid.len() > 1 {
        let best = best_index(&tried);
        let (low, high) = (tried[0].score.value, tried[tried.len() - 1].score.value);
        let (below, above) = (ladder_below(low), ladder_above(high));
        // Only an edge that beats its neighbour's macro-F1 is worth going past: on a
        // tie the edge won on log-loss alone, which on separable rows keeps falling
        // all the way to the bound (an unregularised model).
        let n = tried.len();
        let beats = |edge: usize, inner: usize| {
            tried[edge].score.macro_f1 > tried[inner].score.macro_f1 + 1e-12
        };
        // (`n` > 1: the grid has two alphas or more.)
        if best == 0 && !beats(0, 1) || best == n - 1 && !beats(n - 1, n - 2) {
            break;
        }
        if best == 0 && below >= ALPHA_BOUNDS.0 {
            bar.inc_length(k as u64);
            let next = run(below, Some(&tried[0].models))?;
            tried.insert(0, next);
        } else if best == tried.len() - 1 && above <= ALPHA_BOUNDS.1 {
            bar.inc_length(k as u64);
            let next = run(above, Some(&tried[best].models))?;
            tried.push(next);
        } else {
            break;
        }
        extended = true;
    }
    bar.finish_and_clear();
    let scores = tried.iter().map(|t| t.score).collect();
    let best = tried.swap_remove(best_index(&tried));
    info!(target: "triage::training", model = plan.name, fits = work.fits, iterations = work.iterations, evaluations = work.evaluations, at_limit = work.at_limit, "Cross-validation work.");
    Ok(Selection {
        alpha: best.score.value,
        scores,
        extended,
        out_of_fold: best.out_of_fold,
        start: best.models.into_iter().next(),
        work,
    })
}

/// The largest of 1, 3, 10, 30, ... (times powers of ten) at most `alpha / 2.5`:
/// 0.3 -> 0.1 -> 0.03 -> 0.01.
pub fn ladder_below(alpha: f64) -> f64 {
    ladder(alpha / 2.5, true)
}

/// The smallest of 1, 3, 10, 30, ... at least `alpha * 2.5`: 3 -> 10 -> 30.
pub fn ladder_above(alpha: f64) -> f64 {
    ladder(alpha * 2.5, false)
}

fn ladder(target: f64, below: bool) -> f64 {
    let exponent = target.log10().floor() as i32;
    // Decimal strings, so 0.03 is the f64 nearest 0.03, as if typed in the config.
    let rungs = (exponent - 1..=exponent + 1)
        .flat_map(|e| [format!("1e{e}"), format!("3e{e}")])
        .filter_map(|r| r.parse::<f64>().ok());
    if below {
        rungs.filter(|&r| r <= target).fold(f64::NAN, f64::max)
    } else {
        rungs.filter(|&r| r >= target).fold(f64::NAN, f64::min)
    }
}

/// The best of the alphas tried: highest macro-F1; on ties the lower out-of-fold
/// log-loss. Macro-F1 ties often (every alpha at 1.0 on an easy split), and then the
/// largest alpha would win by default: probabilities flattened towards uniform
/// (measured: alpha 10 on 127 support questions, mean confidence 0.33 over 4
/// intents), which hides a drop in confidence and in the class mix from drift
/// monitoring. The log-loss prefers the sharpest probabilities that still generalise.
fn best_index(tried: &[Tried]) -> usize {
    let mut best = 0;
    for (i, t) in tried.iter().enumerate() {
        let b = &tried[best];
        let f1 = t.score.macro_f1 - b.score.macro_f1;
        if f1 > 1e-12 || (f1.abs() <= 1e-12 && t.log_loss < b.log_loss) {
            best = i;
        }
    }
    best
}

/// Mean negative log-probability of the true label (probabilities floored at 1e-15).
fn log_loss(y: &[usize], predictions: &[Prediction]) -> f64 {
    let total: f64 = y
        .iter()
        .zip(predictions)
        .map(|(&t, p)| {
            -p.probabilities
                .get(t)
                .copied()
                .unwrap_or(0.0)
                .max(1e-15)
                .ln()
        })
        .sum();
    total / y.len().max(1) as f64
}

/// Fits every fold at `alpha` (each from its model in `from`) and scores the
/// out-of-fold predictions.
fn cross_validate(
    y: &[usize],
    labels: &[String],
    plan: &Plan<'_>,
    alpha: f64,
    from: Option<&[Classifier]>,
    work: &mut FitWork,
    bar: &ProgressBar,
) -> Result<Tried, ClassifierError> {
    let params = FitParams {
        alpha,
        ..plan.params
    };
    let mut out_of_fold: Vec<Option<Prediction>> = vec![None; y.len()];
    let mut models = Vec::with_capacity(plan.data.len());
    for (fold, data) in plan.data.iter().enumerate() {
        let (train, held) = fold_rows(plan.folds, fold);
        let y_train: Vec<usize> = train.iter().map(|&r| y[r]).collect();
        let run = FitRun {
            params,
            balance: plan.balance,
            seed: plan.seed.wrapping_add(fold as u64),
            start: from.and_then(|models| models.get(fold)),
            threads: plan.threads,
        };
        let (model, fit_work) = fit_balanced(data.train.view(), &y_train, labels, &run)?;
        *work += fit_work;
        for (row, p) in held.into_iter().zip(model.predict(data.held.view())?) {
            out_of_fold[row] = Some(p);
        }
        models.push(model);
        bar.inc(1);
    }
    let out_of_fold: Vec<Prediction> = out_of_fold.into_iter().flatten().collect();
    if out_of_fold.len() != y.len() {
        return Err(ClassifierError::Fit(
            "a row is in no fold: the folds do not cover the training split".into(),
        ));
    }
    let predicted: Vec<usize> = out_of_fold.iter().map(|p| p.label).collect();
    Ok(Tried {
        score: Scored {
            value: alpha,
            macro_f1: evaluate(labels, y, &predicted).macro_f1,
        },
        log_loss: log_loss(y, &out_of_fold),
        out_of_fold,
        models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_ties_go_to_the_lower_log_loss() {
        let tried = |alpha: f64, macro_f1: f64, log_loss: f64| Tried {
            score: Scored {
                value: alpha,
                macro_f1,
            },
            log_loss,
            out_of_fold: Vec::new(),
            models: Vec::new(),
        };
        // Every alpha at macro-F1 1.0: the sharpest probabilities win, not the
        // largest alpha.
        let all = [
            tried(0.3, 1.0, 0.05),
            tried(1.0, 1.0, 0.2),
            tried(10.0, 1.0, 0.9),
        ];
        assert_eq!(best_index(&all), 0);
        // A higher macro-F1 wins whatever its log-loss.
        let mixed = [
            tried(0.3, 0.8, 0.05),
            tried(1.0, 0.9, 0.6),
            tried(3.0, 0.85, 0.1),
        ];
        assert_eq!(best_index(&mixed), 1);
        let y = [0, 1];
        let p = |probabilities: Vec<f64>| Prediction {
            label: 0,
            confidence: 0.0,
            probabilities,
        };
        let sure = log_loss(&y, &[p(vec![1.0, 0.0]), p(vec![0.0, 1.0])]);
        let unsure = log_loss(&y, &[p(vec![0.5, 0.5]), p(vec![0.5, 0.5])]);
        assert!(sure < 1e-12 && (unsure - 2f64.ln()).abs() < 1e-12);
        assert!(log_loss(&y, &[p(vec![0.0, 1.0]), p(vec![1.0, 0.0])]).is_finite());
    }
    use ndarray::Array2;

    #[test]
    fn the_ladder_steps_by_about_three_in_round_numbers() {
        assert_eq!(ladder_below(0.3), 0.1);
        assert_eq!(ladder_below(0.1), 0.03);
        assert_eq!(ladder_below(0.03), 0.01);
        assert_eq!(ladder_above(3.0), 10.0);
        assert_eq!(ladder_above(10.0), 30.0);
        assert_eq!(ladder_above(0.3), 1.0);
    }

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
        // Ascending. The best (0.1) was at the lower edge and beat its neighbour, so
        // the grid went on down to 0.03, which scored the same macro-F1: a tie ends
        // the extension, and the lower log-loss of the two is chosen.
        assert!(s.extended);
        assert_eq!(s.scores[0].value, 0.03, "{:?}", s.scores);
        assert_eq!(s.scores.len(), 3, "{:?}", s.scores);
        assert!([0.03, 0.1].contains(&s.alpha), "{}", s.alpha);
        assert_eq!(s.scores[s.scores.len() - 1].value, 1e4);
        assert!(
            s.scores[s.scores.len() - 1].macro_f1 < 0.5,
            "{:?}",
            s.scores
        );
        let best = s.scores.iter().position(|x| x.value == s.alpha).unwrap();
        assert!(s.scores[best].macro_f1 > 0.9, "{:?}", s.scores);
        assert_eq!(s.out_of_fold.len(), n);
    }
}
