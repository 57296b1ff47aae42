//! Calibrated confidence: a model's probabilities made to mean what they say (of
//! the messages labelled with confidence 0.9, about 9 in 10 right), so that a
//! routing threshold on them keeps its promise. Pure: predictions and their true
//! labels in, a temperature, the expected calibration error and a reliability
//! table out.
//!
//! **Temperature scaling is the one fitted and served; isotonic regression is
//! measured beside it.** The blended log-scores are divided by one temperature `T`
//! (fitted by maximum likelihood on the out-of-fold predictions): it cannot change
//! a label (the argmax and every ranking within a row stay, so the decision offsets
//! and the macro-F1 tuned on the same predictions stand), it keeps a full
//! probability vector, and one parameter is stable on the few hundred rows a
//! retraining job has. Isotonic regression on the top-class confidence
//! (pool-adjacent-violators) is fitted and scored the same way, cross-fitted (fit on
//! one half of the rows, measured on the other, both ways), so the card records how
//! the two compare on each model's data; it is not served: it maps the top class
//! alone (no probability vector), and its steps tie confidences that the routing
//! threshold and the review order must tell apart.
//!
//! **When it serves** ([`Calibrated::served`], with [`Calibrated::reason`]): `T` is
//! searched in [[`T_MIN`], [`T_MAX`]] only, and serves when (1) at least
//! [`MIN_ROWS`] out-of-fold rows stand behind it, (2) the likelihood's optimum lies
//! inside that range (a temperature at its bound means the rows are separable,
//! every one right and sure: the fit would sharpen every confidence to 1, as it did
//! at 0.05 on 127 rows before the bound), and (3) the cross-fitted error falls by
//! [`MIN_GAIN`] at least. Served, the prediction records' `confidence`,
//! `probabilities` and route use it; drift and the rollout guard keep reading the
//! model's own (uncalibrated) confidence, the scale their references and
//! thresholds were set on.

use serde::{Deserialize, Serialize};

use super::logistic::{Prediction, argmax};

/// Bins of the reliability table and of the expected calibration error.
pub const BINS: usize = 10;
/// The temperature search's range: at most 4x sharper or 4x cooler log-scores. A
/// model that needs more than that is too wrong to be saved by one number.
pub const T_MIN: f64 = 0.25;
pub const T_MAX: f64 = 4.0;
/// Out-of-fold rows a served calibration needs at least.
pub const MIN_ROWS: u64 = 200;
/// How much the cross-fitted expected calibration error must fall (absolute) for
/// the temperature to serve.
pub const MIN_GAIN: f64 = 0.005;

/// Rescales one prediction's probabilities by temperature `t`: `p_k ∝ p_k^(1/t)`
/// (the same as dividing the log-scores by `t` before the softmax). A probability
/// of 0 stays 0; the label does not change.
pub fn temper(p: &mut Prediction, t: f64) {
    if !(t.is_finite() && t > 0.0) || (t - 1.0).abs() < 1e-12 {
        return;
    }
    let logs: Vec<f64> = p
        .probabilities
        .iter()
        .map(|&q| {
            if q > 0.0 {
                q.ln() / t
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return;
    }
    let exp: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = exp.iter().sum();
    p.probabilities = exp.into_iter().map(|e| e / total).collect();
    let (label, confidence) = argmax(&p.probabilities);
    p.label = label;
    p.confidence = confidence;
}

/// Mean negative log-likelihood of the true labels at temperature `t`.
/// (The probability of `y` tempered is `p_y^(1/t) / sum_k p_k^(1/t)`: no copy of the
/// prediction is needed.)
fn nll(predictions: &[Prediction], labels: &[usize], t: f64) -> f64 {
    let mut total = 0.0;
    for (p, &y) in predictions.iter().zip(labels) {
        let scaled = |q: f64| {
            if q > 0.0 {
                q.ln() / t
            } else {
                f64::NEG_INFINITY
            }
        };
        let top = p
            .probabilities
            .iter()
            .map(|&q| scaled(q))
            .fold(f64::NEG_INFINITY, f64::max);
        let norm: f64 = p
            .probabilities
            .iter()
            .map(|&q| (scaled(q) - top).exp())
            .sum();
        let py = p
            .probabilities
            .get(y)
            .map_or(0.0, |&q| (scaled(q) - top).exp() / norm);
        total -= py.max(1e-12).ln();
    }
    total / predictions.len().max(1) as f64
}

/// The temperature that minimises the negative log-likelihood of `labels` (a
/// golden-section search over ln t in [[`T_MIN`], [`T_MAX`]]); 1 without
/// predictions.
pub fn fit_temperature(predictions: &[Prediction], labels: &[usize]) -> f64 {
    if predictions.is_empty() {
        return 1.0;
    }
    let f = |x: f64| nll(predictions, labels, x.exp());
    let (mut a, mut b) = (T_MIN.ln(), T_MAX.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// One bin of the reliability table: predictions whose confidence is in
/// `[lower, upper)` (the last bin includes 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    /// Mean confidence of the bin's predictions, and the share of them right.
    pub confidence: f64,
    pub accuracy: f64,
}

/// The reliability table of (confidence, right) pairs over [`BINS`] equal bins;
/// empty bins are left out.
pub fn reliability(pairs: &[(f64, bool)]) -> Vec<ReliabilityBin> {
    let mut sums = vec![(0u64, 0.0f64, 0u64); BINS];
    for &(c, right) in pairs {
        let b = ((c * BINS as f64) as usize).min(BINS - 1);
        sums[b].0 += 1;
        sums[b].1 += c;
        sums[b].2 += u64::from(right);
    }
    sums.into_iter()
        .enumerate()
        .filter(|(_, (n, _, _))| *n > 0)
        .map(|(b, (n, c, r))| ReliabilityBin {
            lower: b as f64 / BINS as f64,
            upper: (b + 1) as f64 / BINS as f64,
            count: n,
            confidence: c / n as f64,
            accuracy: r as f64 / n as f64,
        })
        .collect()
}

/// The expected calibration error: the count-weighted mean gap between confidence
/// and accuracy over the reliability table's bins.
pub fn ece(pairs: &[(f64, bool)]) -> f64 {
    let n = pairs.len().max(1) as f64;
    reliability(pairs)
        .iter()
        .map(|b| b.count as f64 / n * (b.confidence - b.accuracy).abs())
        .sum()
}

/// (confidence, right) of each prediction against its true label.
pub fn pairs(predictions: &[Prediction], labels: &[usize]) -> Vec<(f64, bool)> {
    predictions
        .iter()
        .zip(labels)
        .map(|(p, &y)| (p.confidence, p.label == y))
        .collect()
}

/// (confidence, right) of each prediction tempered by `t` (the label stays).
fn tempered_pairs(predictions: &[Prediction], labels: &[usize], t: f64) -> Vec<(f64, bool)> {
    predictions
        .iter()
        .zip(labels)
        .map(|(p, &y)| {
            let mut q = p.clone();
            temper(&mut q, t);
            (q.confidence, q.label == y)
        })
        .collect()
}

/// An isotonic (non-decreasing) map of confidence to accuracy, by
/// pool-adjacent-violators: the blocks' upper confidences and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    blocks: Vec<(f64, f64)>,
}

impl Isotonic {
    pub fn fit(pairs: &[(f64, bool)]) -> Self {
        let mut sorted: Vec<(f64, f64)> = pairs
            .iter()
            .map(|&(c, r)| (c, if r { 1.0 } else { 0.0 }))
            .collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        // (upper confidence, sum, count) per block.
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        for (c, y) in sorted {
            blocks.push((c, y, 1.0));
            while blocks.len() > 1 {
                let (_, s1, n1) = blocks[blocks.len() - 2];
                let (c2, s2, n2) = blocks[blocks.len() - 1];
                if s1 / n1 <= s2 / n2 {
                    break;
                }
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (c2, s1 + s2, n1 + n2);
            }
        }
        Self {
            blocks: blocks.into_iter().map(|(c, s, n)| (c, s / n)).collect(),
        }
    }

    /// The calibrated confidence of `c`: the value of the first block reaching it.
    pub fn apply(&self, c: f64) -> f64 {
        self.blocks
            .iter()
            .find(|(upper, _)| c <= *upper)
            .or(self.blocks.last())
            .map_or(c, |(_, v)| *v)
    }
}

/// Which calibration is fitted (and serves when [`Calibrated::served`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Temperature,
}

/// A calibration fitted on out-of-fold predictions, and how it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrated {
    pub method: Method,
    /// Whether the model serves it: its predictions' confidences, probabilities and
    /// routes are tempered by [`Calibrated::temperature`]. False in cards from before
    /// it could serve, and when the rule of the module documentation refuses it.
    pub served: bool,
    /// Why it serves or not, and why temperature rather than isotonic, in words
    /// (empty in cards from before it could serve).
    #[serde(default)]
    pub reason: String,
    pub temperature: f64,
    /// Out-of-fold predictions it was fitted on.
    pub rows: u64,
    /// Expected calibration error of the out-of-fold predictions as they were, and
    /// cross-fitted (fitted on one half, measured on the other) after each method.
    pub ece_before: f64,
    pub ece_temperature: f64,
    pub ece_isotonic: f64,
    /// The out-of-fold predictions' reliability before and after the temperature.
    pub reliability_before: Vec<ReliabilityBin>,
    pub reliability_after: Vec<ReliabilityBin>,
    /// The same measured on the held-out split (rows neither the model nor the
    /// temperature saw), when training measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOut>,
}

impl Calibrated {
    /// The temperature the model serves, if it serves one.
    pub fn served_temperature(&self) -> Option<f64> {
        self.served.then_some(self.temperature)
    }

    /// `p` as served: tempered when the calibration serves, as it is otherwise.
    pub fn serve(&self, p: &mut Prediction) {
        if let Some(t) = self.served_temperature() {
            temper(p, t);
        }
    }
}

/// A card's calibration applied to one of its model's predictions (none, or one
/// that does not serve: unchanged). Every path that serves a label calls this.
pub fn serve(calibration: Option<&Calibrated>, p: &mut Prediction) {
    if let Some(c) = calibration {
        c.serve(p);
    }
}

/// `preds` as served under `calibration` (copies; see [`serve`]).
pub fn served(calibration: Option<&Calibrated>, preds: &[Prediction]) -> Vec<Prediction> {
    preds
        .iter()
        .map(|p| {
            let mut p = p.clone();
            serve(calibration, &mut p);
            p
        })
        .collect()
}

/// Calibration error on the held-out split, before and after the temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub rows: u64,
    pub ece_before: f64,
    pub ece_after: f64,
    pub reliability_after: Vec<ReliabilityBin>,
}

/// Whether a fitted temperature sits at (within 1% of) a bound of its search: the
/// likelihood wanted a temperature outside the range.
fn at_bound(t: f64) -> bool {
    (t.ln() - T_MIN.ln()).abs() < 0.01 || (t.ln() - T_MAX.ln()).abs() < 0.01
}

/// The serving rule of the module documentation: whether it serves, and why in
/// words (naming both methods' cross-fitted errors).
fn decide(rows: u64, t: f64, before: f64, temperature: f64, isotonic: f64) -> (bool, String) {
    let measured = format!(
        "ECE out-of-fold {before:.4}, cross-fitted: temperature {temperature:.4}, isotonic {isotonic:.4}"
    );
    let versus = if isotonic < temperature {
        "isotonic measured lower but is not served (top class only, no probability vector; its steps tie confidences)"
    } else {
        "temperature measured at or below isotonic, and keeps a full probability vector"
    };
    if rows < MIN_ROWS {
        return (
            false,
            format!("not served: {rows} out-of-fold rows, fewer than {MIN_ROWS} ({measured})"),
        );
    }
    if at_bound(t) {
        return (
            false,
            format!(
                "not served: the temperature {t:.3} reached its bound [{T_MIN}, {T_MAX}] (separable rows: the fit would sharpen every confidence towards 1; {measured})"
            ),
        );
    }
    if before - temperature < MIN_GAIN {
        return (
            false,
            format!(
                "not served: the temperature {t:.3} lowers the cross-fitted error by {:.4}, less than {MIN_GAIN} ({measured})",
                before - temperature
            ),
        );
    }
    (
        true,
        format!("temperature {t:.3} served: {measured}; {versus}"),
    )
}

/// Fits the temperature on all of `predictions`, measures both methods
/// cross-fitted on halves (rows alternate between the halves), and decides
/// whether the temperature serves.
pub fn calibrate(predictions: &[Prediction], labels: &[usize]) -> Calibrated {
    let temperature = fit_temperature(predictions, labels);
    let before = pairs(predictions, labels);
    let halves = |h: usize| -> (Vec<Prediction>, Vec<usize>) {
        predictions
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(i, _)| i % 2 == h)
            .map(|(_, (p, &y))| (p.clone(), y))
            .unzip()
    };
    let (mut cross_t, mut cross_i) = (Vec::new(), Vec::new());
    for h in 0..2 {
        let (fit_p, fit_y) = halves(h);
        let (test_p, test_y) = halves(1 - h);
        let t = fit_temperature(&fit_p, &fit_y);
        cross_t.extend(tempered_pairs(&test_p, &test_y, t));
        let iso = Isotonic::fit(&pairs(&fit_p, &fit_y));
        cross_i.extend(
            pairs(&test_p, &test_y)
                .into_iter()
                .map(|(c, r)| (iso.apply(c), r)),
        );
    }
    let after = tempered_pairs(predictions, labels, temperature);
    let rows = predictions.len() as u64;
    let (ece_before, ece_temperature, ece_isotonic) = (ece(&before), ece(&cross_t), ece(&cross_i));
    let (served, reason) = decide(rows, temperature, ece_before, ece_temperature, ece_isotonic);
    Calibrated {
        method: Method::Temperature,
        served,
        reason,
        temperature,
        rows,
        ece_before,
        ece_temperature,
        ece_isotonic,
        reliability_before: reliability(&before),
        reliability_after: reliability(&after),
        held_out: None,
    }
}

/// The held-out measure of a calibration: `predictions` are the model's as it
/// serves them (uncalibrated), tempered by `t` for the after.
pub fn held_out(predictions: &[Prediction], labels: &[usize], t: f64) -> HeldOut {
    let before = pairs(predictions, labels);
    let after = tempered_pairs(predictions, labels, t);
    HeldOut {
        rows: predictions.len() as u64,
        ece_before: ece(&before),
        ece_after: ece(&after),
        reliability_after: reliability(&after),
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Over-confident predictions of 3 classes: the true class gets a score drawn
    /// around `signal`; the log-scores are then sharpened by `sharpen`.
    fn overconfident(n: usize, sharpen: f64, seed: u64) -> (Vec<Prediction>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut preds = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let y = rng.random_range(0..3);
            let scores: Vec<f64> = (0..3)
                .map(|k| {
                    let base = if k == y { 1.0 } else { 0.0 };
                    (base + rng.random_range(-1.2..1.2)) * sharpen
                })
                .collect();
            let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exp: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let total: f64 = exp.iter().sum();
            let probabilities: Vec<f64> = exp.iter().map(|e| e / total).collect();
            let (label, confidence) = argmax(&probabilities);
            preds.push(Prediction {
                label,
                confidence,
                probabilities,
            });
            labels.push(y);
        }
        (preds, labels)
    }

    #[test]
    fn temper_keeps_the_label_and_sums_to_one() {
        let mut p = Prediction {
            label: 1,
            confidence: 0.7,
            probabilities: vec![0.2, 0.7, 0.1, 0.0],
        };
        temper(&mut p, 2.0);
        assert_eq!(p.label, 1);
        assert!(p.confidence < 0.7 && p.confidence > 0.4, "{p:?}");
        assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(p.probabilities[3], 0.0);
    }

    #[test]
    fn an_overconfident_model_is_cooled_and_its_calibration_error_falls() {
        let (preds, labels) = overconfident(2000, 4.0, 1);
        let c = calibrate(&preds, &labels);
        assert!(c.temperature > 1.5, "{c:?}");
        assert!(c.ece_before > 0.1, "{c:?}");
        assert!(c.ece_temperature < c.ece_before / 3.0, "{c:?}");
        assert!(c.ece_isotonic < c.ece_before / 2.0, "{c:?}");
        // Once calibrated, it stays put.
        let mut cooled = preds.clone();
        cooled.iter_mut().for_each(|p| temper(p, c.temperature));
        let t = fit_temperature(&cooled, &labels);
        assert!((0.97..1.03).contains(&t), "{t}");
    }

    #[test]
    fn isotonic_regression_is_monotone_and_fits_the_rates() {
        let pairs = [
            (0.3, false),
            (0.4, true),
            (0.5, false),
            (0.6, true),
            (0.9, true),
        ];
        let iso = Isotonic::fit(&pairs);
        let mapped: Vec<f64> = pairs.iter().map(|(c, _)| iso.apply(*c)).collect();
        assert!(mapped.windows(2).all(|w| w[0] <= w[1]), "{mapped:?}");
        assert_eq!(mapped[0], 0.0);
        assert_eq!(mapped[1], 0.5, "pooled with the violator after it");
        assert_eq!(mapped[4], 1.0);
    }

    /// `n` predictions of 3 classes, every one right, with confidences spread over
    /// 0.5 ..< 0.9: separable rows, whose likelihood only grows as `T` falls.
    fn separable(n: usize) -> (Vec<Prediction>, Vec<usize>) {
        (0..n)
            .map(|i| {
                let y = i % 3;
                let c = 0.5 + 0.4 * (i as f64 / n as f64);
                let mut probabilities = vec![(1.0 - c) / 2.0; 3];
                probabilities[y] = c;
                (
                    Prediction {
                        label: y,
                        confidence: c,
                        probabilities,
                    },
                    y,
                )
            })
            .unzip()
    }

    #[test]
    fn a_separable_set_does_not_run_the_temperature_away_nor_serve_it() {
        for n in [127, 1000] {
            let (preds, labels) = separable(n);
            let c = calibrate(&preds, &labels);
            // It stops at its bound (it went to 0.05 before the bound), and says why
            // it does not serve.
            assert!((T_MIN..T_MIN * 1.01).contains(&c.temperature), "{n}: {c:?}");
            assert!(!c.served, "{n}: {c:?}");
            let why = if n < MIN_ROWS as usize {
                "fewer than 200"
            } else {
                "reached its bound"
            };
            assert!(
                c.reason.starts_with("not served") && c.reason.contains(why),
                "{n}: {}",
                c.reason
            );
            // Not served: what the model serves is what it predicted.
            let mut p = preds[0].clone();
            c.serve(&mut p);
            assert_eq!(p, preds[0]);
        }
    }

    #[test]
    fn a_calibration_serves_when_it_clearly_helps_and_changes_the_served_confidence() {
        let (preds, labels) = overconfident(2000, 4.0, 3);
        let c = calibrate(&preds, &labels);
        assert!(c.served, "{c:?}");
        assert!(
            c.reason.starts_with("temperature") && c.reason.contains("served"),
            "{}",
            c.reason
        );
        let mut p = preds[0].clone();
        c.serve(&mut p);
        assert_eq!(p.label, preds[0].label);
        assert!(
            p.confidence < preds[0].confidence - 0.01,
            "{p:?} {:?}",
            preds[0]
        );
        // Already calibrated predictions: no gain worth serving.
        let cooled: Vec<Prediction> = preds
            .iter()
            .map(|p| {
                let mut q = p.clone();
                temper(&mut q, c.temperature);
                q
            })
            .collect();
        let again = calibrate(&cooled, &labels);
        assert!(
            !again.served && again.reason.contains("lowers the cross-fitted error"),
            "{again:?}"
        );
        // Too few rows to trust.
        let few = calibrate(&preds[..150], &labels[..150]);
        assert!(
            !few.served && few.reason.contains("150 out-of-fold rows"),
            "{few:?}"
        );
    }

    #[test]
    fn calibrations_recorded_before_serving_still_load_and_do_not_serve() {
        // A card's calibration from before `reason` (and with the run-away temperature
        // such cards recorded).
        let old = serde_json::json!({
            "method": "temperature", "served": false, "temperature": 0.05, "rows": 127,
            "ece_before": 0.139, "ece_temperature": 0.0, "ece_isotonic": 0.0,
            "reliability_before": [], "reliability_after": []
        });
        let c: Calibrated = serde_json::from_value(old).unwrap();
        assert_eq!((c.served, c.reason.as_str()), (false, ""));
        let (preds, _) = separable(3);
        let mut p = preds[1].clone();
        serve(Some(&c), &mut p);
        serve(None, &mut p);
        assert_eq!(p, preds[1]);
    }

    #[test]
    fn the_reliability_table_and_ece_add_up() {
        let pairs = [(0.95, true), (0.95, false), (0.55, true), (0.15, false)];
        let table = reliability(&pairs);
        assert_eq!(table.len(), 3);
        assert_eq!(table[2].count, 2);
        assert_eq!(table[2].accuracy, 0.5);
        // |0.95 - 0.5| * 2/4 + |0.55 - 1| * 1/4 + |0.15 - 0| * 1/4
        assert!((ece(&pairs) - (0.225 + 0.1125 + 0.0375)).abs() < 1e-12);
    }
}
