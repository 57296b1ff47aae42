//! Replayed drift scenarios: how quickly each detector fires on a known shift, and how
//! often it fires on none. Pure: the messages come precomputed (prediction, confidence,
//! embedding, length), so the same [`DriftMonitor`] the service runs is measured on
//! exactly what it would see, without a broker or an embedder in the loop.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::drift::{
    Detector, DriftMonitor, DriftReference, DriftReport, DriftSettings, WindowObservation,
};
use crate::stats::{nearest_rank, percentile};

/// One message as the monitor sees it after classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub label: usize,
    pub confidence: f64,
    pub embedding: Vec<f32>,
    pub text_length: usize,
    pub truth: Option<usize>,
}

/// The rows a report is scored on: each detector, then any of them.
pub const ROWS: usize = Detector::ALL.len() + 1;

/// The rows' names, in table order.
pub const DETECTORS: [&str; ROWS] = {
    let mut names = ["any"; ROWS];
    let mut i = 0;
    while i < Detector::ALL.len() {
        names[i] = Detector::ALL[i].name();
        i += 1;
    }
    names
};

/// Per row of [`DETECTORS`], whether it fired in `report`.
fn fired(report: &DriftReport) -> [bool; ROWS] {
    let mut rows = [false; ROWS];
    for (row, d) in rows.iter_mut().zip(Detector::ALL) {
        *row = d.fired(report);
    }
    rows[ROWS - 1] = rows.iter().any(|&x| x);
    rows
}

/// How the scenarios are run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioPlan {
    /// Messages per window (the service's `stream.max_messages`).
    pub window: usize,
    /// Windows per stationary run.
    pub stationary_windows: usize,
    /// Stationary windows before a shift starts, so the sliding window is full of
    /// in-distribution traffic when it does (as in a running service).
    pub warmup_windows: usize,
    /// Shifted windows watched in the sudden scenarios before calling it missed.
    pub shifted_windows: usize,
    /// Share of injected messages in the covariate-shift scenario.
    pub covariate_share: f64,
    /// The gradual scenario ramps the injected share linearly to this...
    pub gradual_max_share: f64,
    /// ...over this many windows.
    pub gradual_windows: usize,
    /// Independent runs (different shuffles and MMD seeds) per scenario.
    pub runs: usize,
    pub seed: u64,
}

impl Default for ScenarioPlan {
    fn default() -> Self {
        Self {
            window: 64,
            stationary_windows: 100,
            warmup_windows: 5,
            shifted_windows: 10,
            covariate_share: 0.3,
            gradual_max_share: 0.5,
            gradual_windows: 20,
            runs: 10,
            seed: 42,
        }
    }
}

/// The traffic the scenarios draw from.
pub struct Pools {
    /// In-distribution messages (held out from training).
    pub base: Vec<Message>,
    /// Indices into `base` of the prior-shift class (e.g. 1-2 star reviews).
    pub prior: Vec<usize>,
    /// Messages from another source (e.g. support requests) mixed into the stream.
    pub inject: Vec<Message>,
}

/// Endless shuffled passes over a pool: every item once per pass, order reshuffled.
struct Cycle {
    order: Vec<usize>,
    at: usize,
}

impl Cycle {
    fn new(items: Vec<usize>) -> Self {
        let at = items.len();
        Self { order: items, at }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng) -> usize {
        if self.at >= self.order.len() {
            self.order.shuffle(rng);
            self.at = 0;
        }
        self.at += 1;
        self.order[self.at - 1]
    }
}

struct Stream<'a> {
    pools: &'a Pools,
    base: Cycle,
    prior: Cycle,
    inject: Cycle,
    rng: ChaCha8Rng,
}

/// Where a window's messages come from.
#[derive(Debug, Clone, Copy)]
enum Mix {
    /// `share` of the window injected, the rest in-distribution.
    Inject(f64),
    /// Only the prior-shift class.
    Prior,
}

impl<'a> Stream<'a> {
    fn new(pools: &'a Pools, seed: u64) -> Self {
        Self {
            pools,
            base: Cycle::new((0..pools.base.len()).collect()),
            prior: Cycle::new(pools.prior.clone()),
            inject: Cycle::new((0..pools.inject.len()).collect()),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn window(&mut self, size: usize, mix: Mix) -> WindowObservation {
        let mut picked: Vec<&Message> = Vec::with_capacity(size);
        match mix {
            Mix::Prior => {
                for _ in 0..size {
                    picked.push(&self.pools.base[self.prior.next(&mut self.rng)]);
                }
            }
            Mix::Inject(share) => {
                let injected = ((share * size as f64).round() as usize).min(size);
                for _ in 0..injected {
                    picked.push(&self.pools.inject[self.inject.next(&mut self.rng)]);
                }
                for _ in injected..size {
                    picked.push(&self.pools.base[self.base.next(&mut self.rng)]);
                }
                picked.shuffle(&mut self.rng);
            }
        }
        WindowObservation {
            labels: picked.iter().map(|m| m.label).collect(),
            confidences: picked.iter().map(|m| m.confidence).collect(),
            embeddings: picked.iter().map(|m| m.embedding.clone()).collect(),
            text_lengths: picked.iter().map(|m| m.text_length).collect(),
            truth: picked.iter().map(|m| m.truth).collect(),
            invalid: 0,
        }
    }
}

/// Per detector, over all stationary windows of all runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FalseAlarms {
    pub detector: &'static str,
    pub alarms: usize,
    pub windows: usize,
    /// Mean false alarms per 100 windows.
    pub per_100_windows: f64,
    /// The worst single run of `stationary_windows` windows, per 100 windows.
    pub worst_run_per_100: f64,
}

/// Per detector, for a sudden shift: windows from the shift to the first alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delays {
    pub detector: &'static str,
    /// One per run; `None` when it did not fire within `shifted_windows`.
    pub delays: Vec<Option<usize>>,
    pub median: Option<usize>,
    pub max: Option<usize>,
    /// Runs detected within 3 windows.
    pub within_3: usize,
}

/// Per detector, for the gradual ramp: the injected share when it first fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shares {
    pub detector: &'static str,
    pub shares: Vec<Option<f64>>,
    pub median: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub plan: ScenarioPlan,
    pub settings: DriftSettings,
    pub base_messages: usize,
    pub prior_messages: usize,
    pub inject_messages: usize,
    pub stationary: Vec<FalseAlarms>,
    pub prior_shift: Vec<Delays>,
    pub covariate_shift: Vec<Delays>,
    pub gradual_shift: Vec<Shares>,
    /// MMD p-values seen on stationary traffic, for calibrating `drift.mmd_p_value`.
    pub stationary_p_values: Vec<f64>,
}

/// Runs every scenario. `reference` and `classes` come from the model under test.
pub fn run(
    pools: &Pools,
    reference: &DriftReference,
    classes: usize,
    settings: &DriftSettings,
    plan: &ScenarioPlan,
) -> ScenarioReport {
    let monitor = || DriftMonitor::new(settings.clone(), reference.clone(), classes);
    let window = plan.window.max(1);

    // Stationary: count every window a detector fires.
    let mut alarms = [0usize; ROWS];
    let mut worst = [0usize; ROWS];
    let mut p_values = Vec::new();
    for run in 0..plan.runs {
        let mut stream = Stream::new(pools, plan.seed + run as u64);
        let mut m = monitor();
        let mut this_run = [0usize; ROWS];
        for _ in 0..plan.stationary_windows {
            let report = m.observe(stream.window(window, Mix::Inject(0.0)));
            p_values.push(report.mmd_p_value);
            for (count, hit) in this_run.iter_mut().zip(fired(&report)) {
                *count += usize::from(hit);
            }
        }
        for d in 0..ROWS {
            alarms[d] += this_run[d];
            worst[d] = worst[d].max(this_run[d]);
        }
    }
    let windows = plan.runs * plan.stationary_windows;
    let per_100 = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    let stationary = DETECTORS
        .iter()
        .enumerate()
        .map(|(d, &detector)| FalseAlarms {
            detector,
            alarms: alarms[d],
            windows,
            per_100_windows: per_100(alarms[d], windows),
            worst_run_per_100: per_100(worst[d], plan.stationary_windows),
        })
        .collect();

    // Every shifted scenario: warm up on stationary traffic, then `steps` windows
    // mixed by `mix_at(k)`; per run and detector, the first window k (1-based) that
    // fired.
    let shifted_runs = |salt: u64, steps: usize, mix_at: &dyn Fn(usize) -> Mix| {
        (0..plan.runs)
            .map(|run| {
                let mut stream = Stream::new(pools, plan.seed + salt + run as u64);
                let mut m = monitor();
                for _ in 0..plan.warmup_windows {
                    m.observe(stream.window(window, Mix::Inject(0.0)));
                }
                let mut first = [None; ROWS];
                for k in 1..=steps {
                    let report = m.observe(stream.window(window, mix_at(k)));
                    for (slot, hit) in first.iter_mut().zip(fired(&report)) {
                        if hit && slot.is_none() {
                            *slot = Some(k);
                        }
                    }
                }
                first
            })
            .collect::<Vec<[Option<usize>; ROWS]>>()
    };

    // Sudden shifts: the delay is the number of shifted windows seen when the
    // detector first fires (1 = at once).
    let sudden = |mix: Mix, salt: u64| -> Vec<Delays> {
        let per_run = shifted_runs(salt, plan.shifted_windows, &|_| mix);
        DETECTORS
            .iter()
            .enumerate()
            .map(|(d, &detector)| {
                let delays: Vec<Option<usize>> = per_run.iter().map(|r| r[d]).collect();
                Delays {
                    detector,
                    median: median_if_all(&delays),
                    max: all(&delays).and_then(|v| v.into_iter().max()),
                    within_3: delays.iter().filter(|x| x.is_some_and(|k| k <= 3)).count(),
                    delays,
                }
            })
            .collect()
    };
    let prior_shift = if pools.prior.is_empty() {
        Vec::new()
    } else {
        sudden(Mix::Prior, 10_000)
    };
    let covariate_shift = if pools.inject.is_empty() {
        Vec::new()
    } else {
        sudden(Mix::Inject(plan.covariate_share), 20_000)
    };

    // Gradual: the injected share grows linearly, window by window.
    let mut gradual_shift = Vec::new();
    if !pools.inject.is_empty() {
        let steps = plan.gradual_windows.max(1);
        let share_at = |k: usize| plan.gradual_max_share * k as f64 / steps as f64;
        let per_run: Vec<[Option<f64>; ROWS]> =
            shifted_runs(30_000, steps, &|k| Mix::Inject(share_at(k)))
                .into_iter()
                .map(|first| first.map(|k| k.map(share_at)))
                .collect();
        gradual_shift = DETECTORS
            .iter()
            .enumerate()
            .map(|(d, &detector)| {
                let shares: Vec<Option<f64>> = per_run.iter().map(|r| r[d]).collect();
                let got = all(&shares);
                Shares {
                    detector,
                    median: got.as_ref().map(|v| lower_median(v.clone())),
                    max: got.map(|v| v.into_iter().fold(f64::MIN, f64::max)),
                    shares,
                }
            })
            .collect();
    }

    ScenarioReport {
        plan: plan.clone(),
        settings: settings.clone(),
        base_messages: pools.base.len(),
        prior_messages: pools.prior.len(),
        inject_messages: pools.inject.len(),
        stationary,
        prior_shift,
        covariate_shift,
        gradual_shift,
        stationary_p_values: p_values,
    }
}

impl ScenarioReport {
    /// The detector x scenario table, for people.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let p = &self.plan;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "window {} messages, sliding over {} windows; {} runs per scenario; shifts start after {} stationary windows",
            p.window, self.settings.sliding_windows, p.runs, p.warmup_windows
        );
        let _ = writeln!(
            out,
            "\n{:<12} {:>22} {:>24} {:>24} {:>22}",
            "detector",
            "stationary FA/100 win",
            "prior shift delay",
            format!("covariate {:.0}% delay", p.covariate_share * 100.0),
            format!("gradual 0-{:.0}% share", p.gradual_max_share * 100.0)
        );
        let delay = |d: Option<&Delays>| match d {
            None => "-".to_string(),
            Some(d) => match (d.median, d.max) {
                (Some(m), Some(x)) => {
                    format!("median {m}, max {x} ({}/{} <= 3)", d.within_3, p.runs)
                }
                _ => format!(
                    "missed {}/{} ({} <= 3)",
                    d.delays.iter().filter(|x| x.is_none()).count(),
                    p.runs,
                    d.within_3
                ),
            },
        };
        for (i, fa) in self.stationary.iter().enumerate() {
            let share = match self.gradual_shift.get(i) {
                None => "-".to_string(),
                Some(s) => match (s.median, s.max) {
                    (Some(m), Some(x)) => {
                        format!("median {:.1}%, max {:.1}%", m * 100.0, x * 100.0)
                    }
                    _ => format!(
                        "missed {}/{}",
                        s.shares.iter().filter(|x| x.is_none()).count(),
                        p.runs
                    ),
                },
            };
            let _ = writeln!(
                out,
                "{:<12} {:>22} {:>24} {:>24} {:>22}",
                fa.detector,
                format!(
                    "{:.2} (worst {:.0})",
                    fa.per_100_windows, fa.worst_run_per_100
                ),
                delay(self.prior_shift.get(i)),
                delay(self.covariate_shift.get(i)),
                share
            );
        }
        let thresholds = [0.01, 0.005, 0.002, 0.001];
        let rates: Vec<String> = thresholds
            .iter()
            .map(|&t| {
                format!(
                    "p<{t}: {:.2}%",
                    100.0 * false_alarm_rate(&self.stationary_p_values, t)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "\nMMD p-values on stationary windows ({}): {}",
            self.stationary_p_values.len(),
            rates.join(", ")
        );
        out
    }
}

/// All values when every run produced one (a miss makes the summary undefined).
fn all<T: Copy>(values: &[Option<T>]) -> Option<Vec<T>> {
    values.iter().copied().collect()
}

/// The lower median (an observed value, not a mean of two) when every run gave one.
fn median_if_all(values: &[Option<usize>]) -> Option<usize> {
    let mut v = all(values)?;
    v.sort_unstable();
    nearest_rank(&v, 0.5)
}

/// The lower median, like [`median_if_all`]'s.
fn lower_median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Share of `p_values` below `threshold`: the per-window false-alarm rate that
/// threshold would give on stationary traffic.
pub fn false_alarm_rate(p_values: &[f64], threshold: f64) -> f64 {
    crate::drift::stats::share_below(p_values, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_each_detector_then_any() {
        assert_eq!(
            DETECTORS,
            [
                "prediction",
                "embedding",
                "confidence",
                "text_length",
                "any"
            ]
        );
        let r = DriftReport {
            confidence_drift: true,
            ..Default::default()
        };
        assert_eq!(fired(&r), [false, false, true, false, true]);
        assert_eq!(fired(&DriftReport::default()), [false; ROWS]);
    }
    use crate::drift::tests::{point, reference};

    fn message(label: usize, embedding: Vec<f32>, length: usize) -> Message {
        Message {
            label,
            confidence: 0.8,
            embedding,
            text_length: length,
            truth: Some(label),
        }
    }

    /// In-distribution traffic shaped like the test reference (class mix 0.2/0.2/0.6,
    /// the same embedding source, length 100); injected traffic far away and long.
    fn pools() -> Pools {
        let base: Vec<Message> = (0..100)
            .map(|i| message([0, 1, 2, 2, 2][i % 5], point(i, 0.0), 100))
            .collect();
        let prior = (0..100).filter(|i| i % 5 == 0).collect();
        let inject = (0..40).map(|i| message(0, point(i, 5.0), 3000)).collect();
        Pools {
            base,
            prior,
            inject,
        }
    }

    fn plan() -> ScenarioPlan {
        // 30 rows a side in this tiny MMD test: a 60% share keeps the shift clear.
        ScenarioPlan {
            window: 20,
            stationary_windows: 20,
            covariate_share: 0.6,
            runs: 3,
            ..ScenarioPlan::default()
        }
    }

    #[test]
    fn stationary_traffic_has_no_alarms_and_shifts_are_found() {
        // Three windows pooled before any detector speaks: one window of 20 is too
        // noisy for the 10% class-share rule.
        let settings = DriftSettings {
            min_messages: 60,
            ..DriftSettings::default()
        };
        let r = run(&pools(), &reference(), 3, &settings, &plan());
        assert_eq!(r.stationary.len(), DETECTORS.len());
        for fa in &r.stationary {
            assert_eq!(fa.windows, 60);
            // The MMD test is a calibrated random test (about 0.5% false alarms per
            // window); the others are deterministic on this traffic.
            let allowed = if matches!(fa.detector, "embedding" | "any") {
                3
            } else {
                0
            };
            assert!(fa.alarms <= allowed, "{fa:?}");
        }
        assert_eq!(r.stationary_p_values.len(), 60);

        let prediction = &r.prior_shift[0];
        assert_eq!(prediction.detector, "prediction");
        assert_eq!(prediction.within_3, 3, "{prediction:?}");
        // The prior shift moves only the class mix, not lengths.
        assert_eq!(r.prior_shift[3].max, None, "{:?}", r.prior_shift[3]);

        // 60% far-away messages: the (long) lengths give them away at once, the
        // embeddings once enough of them are pooled.
        let embedding = &r.covariate_shift[1];
        assert!(embedding.max.is_some_and(|d| d >= 1), "{embedding:?}");
        let length = &r.covariate_shift[3];
        assert_eq!(length.within_3, 3, "{length:?}");

        let any = &r.gradual_shift[4];
        assert_eq!(any.detector, "any");
        let share = any.median.expect("the ramp to 50% is found");
        assert!(share > 0.0 && share <= 0.5, "{any:?}");
    }

    #[test]
    fn cycles_visit_every_item_once_per_pass() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut c = Cycle::new(vec![3, 5, 7]);
        let mut seen: Vec<usize> = (0..6).map(|_| c.next(&mut rng)).collect();
        seen[..3].sort_unstable();
        seen[3..].sort_unstable();
        assert_eq!(seen, vec![3, 5, 7, 3, 5, 7]);
    }

    #[test]
    fn windows_inject_the_requested_share() {
        let pools = pools();
        let mut s = Stream::new(&pools, 7);
        let w = s.window(20, Mix::Inject(0.3));
        assert_eq!(w.labels.len(), 20);
        assert_eq!(w.text_lengths.iter().filter(|&&l| l == 3000).count(), 6);
        let w = s.window(20, Mix::Prior);
        assert!(w.labels.iter().all(|&l| l == 0));
    }

    #[test]
    fn medians_need_every_run() {
        assert_eq!(median_if_all(&[Some(3), Some(1), Some(2)]), Some(2));
        assert_eq!(median_if_all(&[Some(3), None]), None);
        assert_eq!(false_alarm_rate(&[0.001, 0.5, 0.009, 0.2], 0.01), 0.5);
    }
}
