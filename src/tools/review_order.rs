//! `triage review-order`: which order of the review queue most improves the next
//! model, measured on a replay. A seed model is trained on a small slice of a
//! labelled file; a pool of unseen rows streams through it and those under its
//! routing threshold wait in the queue; a person who knows the truth answers a
//! budget of them in one order (first come, least confident, smallest margin, or
//! at random as a control); the model is retrained on the seed and the answers,
//! and scored on a fixed unseen test slice (macro-F1, and the coverage and
//! precision its routing threshold gives there). Repeated over seeds (each draws
//! its own seed slice and pool); every fit is [`fit_model`], the one training uses.
//! No broker; embeddings come through the feature cache like `triage train`'s.

use std::path::Path;

use ndarray::Axis;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tracing::info;

use crate::config::Settings;
use crate::embed::Embedder;
use crate::inference::Route;
use crate::model::evaluation::evaluate;
use crate::model::routing::{self, review_priority_by};
use crate::model::{Prediction, calibration};
use crate::training::fit::{TrainingSet, fit_model};
use crate::training::{Embedded, TrainError, read_and_embed};

/// The order a person answers the queue in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Arrival order.
    FirstCome,
    /// Lowest served confidence first.
    LeastConfident,
    /// Smallest gap between the two likeliest classes first.
    SmallestMargin,
    /// A random order: the control.
    Random,
}

impl Order {
    pub const ALL: [Order; 4] = [
        Order::FirstCome,
        Order::LeastConfident,
        Order::SmallestMargin,
        Order::Random,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstCome => "first-come",
            Self::LeastConfident => "least-confident",
            Self::SmallestMargin => "smallest-margin",
            Self::Random => "random",
        }
    }
}

/// The replay's sizes.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub seed_rows: usize,
    pub pool_rows: usize,
    pub test_rows: usize,
    pub budgets: Vec<usize>,
    pub seeds: usize,
}

/// One order at one budget, over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub order: Order,
    pub budget: usize,
    /// Per seed, on the test slice.
    pub macro_f1: Vec<f64>,
    pub coverage: Vec<f64>,
    pub precision: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub labels: Vec<String>,
    /// The seed model per seed: test macro-F1, coverage and precision, and how many
    /// pool rows its threshold sent to the queue.
    pub seed_macro_f1: Vec<f64>,
    pub seed_coverage: Vec<f64>,
    pub seed_precision: Vec<f64>,
    pub queued: Vec<usize>,
    pub cells: Vec<Cell>,
}

/// Mean and sample standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The queue's rows (indices into `served`, in arrival order) in `order`; ties keep
/// arrival order.
pub fn ordered(queue: &[usize], served: &[Prediction], order: Order, seed: u64) -> Vec<usize> {
    let mut rows = queue.to_vec();
    let by = match order {
        Order::FirstCome => return rows,
        Order::Random => {
            rows.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            return rows;
        }
        Order::LeastConfident => routing::Uncertainty::Confidence,
        Order::SmallestMargin => routing::Uncertainty::Margin,
    };
    // Stable: ties keep arrival order.
    let priority = |i: usize| review_priority_by(&served[i].probabilities, by);
    rows.sort_by(|&a, &b| priority(b).total_cmp(&priority(a)));
    rows
}

/// What a model trained on `rows` does on the test slice: macro-F1, and the
/// coverage and precision of its routing threshold on its served confidences.
struct Scored {
    macro_f1: f64,
    coverage: f64,
    precision: f64,
}

pub fn run(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    data: &Path,
    plan: &Plan,
) -> Result<Report, TrainError> {
    let Embedded {
        data,
        examples,
        features,
        ..
    } = read_and_embed(settings, embedder, data)?;
    let n = examples.len();
    let needed = plan.seed_rows + plan.pool_rows + plan.test_rows;
    if n < needed {
        return Err(TrainError::DataChecks(vec![format!(
            "{n} rows, fewer than seed + pool + test = {needed}"
        )]));
    }
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let truth: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let labels = data.labels.clone();

    // The test slice is the same for every seed.
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(settings.training.seed));
    let (test, rest) = all.split_at(plan.test_rows);
    let test = test.to_vec();
    let y_test: Vec<usize> = test.iter().map(|&i| truth[i]).collect();

    // Fits on `rows` and predicts `on`, served (calibrated when the fit's calibration
    // serves); also says the routing threshold (None: no routing, all auto).
    let fit_predict =
        |rows: &[usize], on: &[usize]| -> Result<(Vec<Prediction>, Option<f64>), TrainError> {
            let x = features.select(Axis(0), rows);
            let t: Vec<&str> = rows.iter().map(|&i| texts[i]).collect();
            let y: Vec<usize> = rows.iter().map(|&i| truth[i]).collect();
            let fitted = fit_model(
                settings,
                &TrainingSet {
                    embeddings: x.view(),
                    texts: &t,
                    labels: &y,
                    label_names: &labels,
                },
            )?;
            let x_on = features.select(Axis(0), on);
            let t_on: Vec<&str> = on.iter().map(|&i| texts[i]).collect();
            let preds = fitted.model.predict(&t_on, x_on.view())?;
            let threshold = fitted.routing.as_ref().map(|r| r.global.threshold);
            Ok((
                calibration::served(fitted.calibration.as_ref(), &preds),
                threshold,
            ))
        };
    // What the model of `preds` (on the test slice) scores there.
    let score = |preds: &[Prediction], threshold: Option<f64>| -> Scored {
        let predicted: Vec<usize> = preds.iter().map(|p| p.label).collect();
        let at = routing::apply(&routing::scored(preds, &y_test), threshold.unwrap_or(0.0));
        Scored {
            macro_f1: evaluate(&labels, &y_test, &predicted).macro_f1,
            coverage: at.coverage,
            precision: at.precision,
        }
    };

    let mut report = Report {
        plan: plan.clone(),
        labels: labels.clone(),
        seed_macro_f1: Vec::new(),
        seed_coverage: Vec::new(),
        seed_precision: Vec::new(),
        queued: Vec::new(),
        cells: Order::ALL
            .iter()
            .flat_map(|&order| {
                plan.budgets.iter().map(move |&budget| Cell {
                    order,
                    budget,
                    macro_f1: Vec::new(),
                    coverage: Vec::new(),
                    precision: Vec::new(),
                })
            })
            .collect(),
    };
    for s in 0..plan.seeds as u64 {
        let mut rows = rest.to_vec();
        rows.shuffle(&mut ChaCha8Rng::seed_from_u64(1_000 + s));
        let seed_slice = rows[..plan.seed_rows].to_vec();
        let pool = rows[plan.seed_rows..plan.seed_rows + plan.pool_rows].to_vec();
        // The seed model streams the pool (arrival order = `pool`) and scores the test.
        let mut on = pool.clone();
        on.extend(&test);
        let (preds, threshold) = fit_predict(&seed_slice, &on)?;
        let (pool_preds, test_preds) = preds.split_at(pool.len());
        let base = score(test_preds, threshold);
        let queue: Vec<usize> = (0..pool.len())
            .filter(|&i| Route::of(pool_preds[i].confidence, threshold) == Route::Review)
            .collect();
        info!(target: "triage::review_order", seed = s, queued = queue.len(), threshold = format!("{:.3}", threshold.unwrap_or(0.0)), macro_f1 = format!("{:.4}", base.macro_f1), "Seed model streamed the pool.");
        report.seed_macro_f1.push(base.macro_f1);
        report.seed_coverage.push(base.coverage);
        report.seed_precision.push(base.precision);
        report.queued.push(queue.len());
        for cell in &mut report.cells {
            let order = ordered(&queue, pool_preds, cell.order, 2_000 + s);
            let mut train = seed_slice.clone();
            train.extend(order.iter().take(cell.budget).map(|&i| pool[i]));
            let (preds, threshold) = fit_predict(&train, &test)?;
            let scored = score(&preds, threshold);
            info!(target: "triage::review_order", seed = s, order = cell.order.as_str(), budget = cell.budget, macro_f1 = format!("{:.4}", scored.macro_f1), coverage = format!("{:.3}", scored.coverage), "Retrained on the answers.");
            cell.macro_f1.push(scored.macro_f1);
            cell.coverage.push(scored.coverage);
            cell.precision.push(scored.precision);
        }
    }
    Ok(report)
}

/// The report as a table: one row per order and budget, mean ± sd over the seeds.
pub fn render(r: &Report) -> String {
    let ms = |v: &[f64]| {
        let (m, s) = mean_sd(v);
        format!("{m:.4} ± {s:.4}")
    };
    let queued: Vec<f64> = r.queued.iter().map(|&q| q as f64).collect();
    let (queued_mean, queued_sd) = mean_sd(&queued);
    let mut out = format!(
        "seed {} rows, pool {} rows, test {} rows, {} seeds; queue {:.0} ± {:.0} of the pool\n",
        r.plan.seed_rows, r.plan.pool_rows, r.plan.test_rows, r.plan.seeds, queued_mean, queued_sd
    );
    let row = |order: &str, budget: usize, f1: &[f64], gain: &str, cov: &[f64], prec: &[f64]| {
        format!(
            "{order:<16} {budget:>6}  {:<17}  {gain:<17}  {:<17}  {:<17}\n",
            ms(f1),
            ms(cov),
            ms(prec)
        )
    };
    out += &format!(
        "{:<16} {:>6}  {:<17}  {:<17}  {:<17}  {:<17}\n",
        "order", "budget", "macro-F1", "vs first-come", "coverage", "precision"
    );
    out += &row(
        "seed model",
        0,
        &r.seed_macro_f1,
        "",
        &r.seed_coverage,
        &r.seed_precision,
    );
    let mut budgets = r.plan.budgets.clone();
    budgets.sort_unstable();
    budgets.dedup();
    for b in budgets {
        let first = r
            .cells
            .iter()
            .find(|c| c.budget == b && c.order == Order::FirstCome);
        for c in r.cells.iter().filter(|c| c.budget == b) {
            let gain = match first {
                Some(f) if c.order != Order::FirstCome => {
                    let (m, se) = paired_gain(&c.macro_f1, &f.macro_f1);
                    format!("{m:+.4} ± {se:.4}")
                }
                _ => String::new(),
            };
            out += &row(
                c.order.as_str(),
                c.budget,
                &c.macro_f1,
                &gain,
                &c.coverage,
                &c.precision,
            );
        }
    }
    out += "(mean ± sd over the seeds; vs first-come: the mean paired difference in macro-F1 ± its standard error)\n";
    out
}

/// The mean of the paired differences `a - b` (same seed) and its standard error.
pub fn paired_gain(a: &[f64], b: &[f64]) -> (f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let (m, sd) = mean_sd(&d);
    (m, sd / (d.len().max(1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(probabilities: &[f64]) -> Prediction {
        let (label, confidence) = crate::model::argmax(probabilities);
        Prediction {
            label,
            confidence,
            probabilities: probabilities.to_vec(),
        }
    }

    #[test]
    fn the_orders_sort_the_queue_and_first_come_keeps_arrival() {
        let served = [
            p(&[0.5, 0.45, 0.05]), // margin 0.05, confidence 0.5
            p(&[0.4, 0.3, 0.3]),   // margin 0.1, confidence 0.4
            p(&[0.6, 0.2, 0.2]),   // margin 0.4
            p(&[0.9, 0.05, 0.05]), // not queued
        ];
        let queue = [2, 1, 0];
        assert_eq!(ordered(&queue, &served, Order::FirstCome, 0), [2, 1, 0]);
        assert_eq!(
            ordered(&queue, &served, Order::LeastConfident, 0),
            [1, 0, 2]
        );
        assert_eq!(
            ordered(&queue, &served, Order::SmallestMargin, 0),
            [0, 1, 2]
        );
        let mut random = ordered(&queue, &served, Order::Random, 7);
        random.sort_unstable();
        assert_eq!(random, [0, 1, 2]);
        assert!((routing::margin(&served[1].probabilities) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn mean_and_sd_are_the_sample_ones_and_gains_are_paired() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
        assert_eq!(mean_sd(&[0.5]), (0.5, 0.0));
        // The same gain on every seed has no error, however far apart the seeds are.
        let (g, se) = paired_gain(&[0.6, 0.8, 0.7], &[0.5, 0.7, 0.6]);
        assert!((g - 0.1).abs() < 1e-12 && se < 1e-12, "{g} {se}");
    }
}
