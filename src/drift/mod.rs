//! Drift monitoring: statistics of recent windows against the reference the model
//! captured at training time. [`DriftMonitor`] keeps a sliding window of recent
//! windows (so small windows are not noise) and reports every detector.

pub mod mmd;
pub mod recent;
pub mod reference;
pub mod stats;

use std::collections::VecDeque;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::evaluation::evaluate;
pub use reference::DriftReference;
use reference::{Histogram, TEXT_LENGTH_EDGES};

/// Detector settings (`[drift]` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSettings {
    /// Recent windows pooled for the statistics.
    pub sliding_windows: usize,
    /// Below this many pooled messages no detector fires.
    pub min_messages: usize,
    /// The prediction detector also waits for this many pooled messages per class:
    /// the class mix of 64 messages over 11 classes is too noisy for PSI.
    pub min_messages_per_class: usize,
    /// Prediction drift: PSI of the predicted class mix above this.
    pub prediction_psi: f64,
    /// The seed project's rule: a class under `class_share_min` or over `class_share_max`.
    pub class_share_min: f64,
    pub class_share_max: f64,
    /// Embedding drift: MMD² beyond all but this share of the no-drift draws
    /// calibrated at training time (an empirical p-value).
    pub mmd_p_value: f64,
    /// Training time: no-drift MMD² draws for the calibration (p-value resolution
    /// is 1 / (draws + 1)).
    pub mmd_null_draws: usize,
    /// Training time: rows per side in the MMD test. Live windows need at least this
    /// many distinct messages pooled before the embedding detector speaks.
    pub mmd_sample: usize,
    /// Confidence drift: mean confidence this far below the reference's.
    pub confidence_drop: f64,
    /// A prediction under this confidence counts as low-confidence.
    pub low_confidence: f64,
    /// Data quality: PSI of the text-length histogram above this.
    pub text_length_psi: f64,
}

impl DriftSettings {
    /// Every problem with these settings, as (key, what is wrong, the fix); empty: fine.
    pub fn problems(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut out = Vec::new();
        let mut at_least = |key, value: usize, min: usize, fix| {
            if value < min {
                out.push((key, format!("{value} is below {min}"), fix));
            }
        };
        at_least("drift.sliding_windows", self.sliding_windows, 1, "use 5");
        at_least("drift.mmd_null_draws", self.mmd_null_draws, 1, "use 200");
        at_least("drift.mmd_sample", self.mmd_sample, 10, "use 100");
        for (key, value, fix) in [
            ("drift.mmd_p_value", self.mmd_p_value, "use 0.01"),
            ("drift.class_share_min", self.class_share_min, "use 0.1"),
            ("drift.class_share_max", self.class_share_max, "use 0.9"),
        ] {
            if !(0.0..=1.0).contains(&value) {
                out.push((key, format!("{value} is outside [0, 1]"), fix));
            }
        }
        if self.class_share_min >= self.class_share_max {
            out.push((
                "drift.class_share_min",
                format!(
                    "{} is not below drift.class_share_max = {}",
                    self.class_share_min, self.class_share_max
                ),
                "use 0.1 and 0.9",
            ));
        }
        out
    }
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            sliding_windows: 5,
            min_messages: 50,
            min_messages_per_class: 20,
            prediction_psi: 0.25,
            class_share_min: 0.1,
            class_share_max: 0.9,
            mmd_p_value: 0.005,
            mmd_null_draws: 400,
            mmd_sample: 200,
            confidence_drop: 0.1,
            low_confidence: 0.5,
            text_length_psi: 0.25,
        }
    }
}

/// What one window contributes.
#[derive(Debug, Clone, Default)]
pub struct WindowObservation {
    pub labels: Vec<usize>,
    pub confidences: Vec<f64>,
    pub embeddings: Vec<Vec<f32>>,
    pub text_lengths: Vec<usize>,
    /// Ground truth per valid message, when it came with one.
    pub truth: Vec<Option<usize>>,
    /// Messages that went to the dead-letter topic.
    pub invalid: usize,
}

impl WindowObservation {
    /// Messages it stands for: classified and dead-lettered.
    pub fn messages(&self) -> usize {
        self.labels.len() + self.invalid
    }

    /// Appends `other`'s messages.
    pub fn absorb(&mut self, other: WindowObservation) {
        self.labels.extend(other.labels);
        self.confidences.extend(other.confidences);
        self.embeddings.extend(other.embeddings);
        self.text_lengths.extend(other.text_lengths);
        self.truth.extend(other.truth);
        self.invalid += other.invalid;
    }
}

/// Gathers the stream's windows into drift windows as the window bounds would cut
/// an arrival burst: `messages` messages (`stream.max_messages`), or what came
/// before the stream paused for `max_age` (`stream.max_wait_ms`). With continuous
/// batching the stream's windows hold one or two messages whatever the load, and
/// the monitor's `sliding_windows` and its per-report cost assume windows as the
/// window bounds cut them: a burst gives full drift windows (as before), a trickle
/// with pauses gives small ones (as before). The pause is seen by the caller's
/// clock ([`Gather::take_due`], called by a timer), since no window marks it. A
/// window that is already that large passes through as it is.
#[derive(Debug)]
pub struct Gather {
    messages: usize,
    max_age: std::time::Duration,
    /// The gathered window, and when its last part came.
    pending: Option<(WindowObservation, std::time::Instant)>,
}

impl Gather {
    pub fn new(messages: usize, max_age: std::time::Duration) -> Self {
        Self {
            messages: messages.max(1),
            max_age,
            pending: None,
        }
    }

    /// Adds a window at `now`; returns the gathered drift window once it holds
    /// `messages`. A window that comes `max_age` or more after the last one (a
    /// pause the timer has not seen yet) closes what was gathered before it, which
    /// is returned, and starts the next.
    pub fn add(
        &mut self,
        window: WindowObservation,
        now: std::time::Instant,
    ) -> Option<WindowObservation> {
        let pending = match self.pending.take() {
            Some((before, last)) if now.duration_since(last) >= self.max_age => {
                self.pending = Some((window, now));
                return Some(before);
            }
            Some((mut pending, _)) => {
                pending.absorb(window);
                pending
            }
            None => window,
        };
        if pending.messages() >= self.messages {
            Some(pending)
        } else {
            self.pending = Some((pending, now));
            None
        }
    }

    /// The gathered window if the stream has paused `max_age` since its last part:
    /// it is complete now (an idle stream's last window).
    pub fn take_due(&mut self, now: std::time::Instant) -> Option<WindowObservation> {
        match &self.pending {
            Some((_, last)) if now.duration_since(*last) >= self.max_age => {
                self.pending.take().map(|(p, _)| p)
            }
            _ => None,
        }
    }

    /// Messages waiting for their drift window to complete.
    pub fn pending(&self) -> usize {
        self.pending.as_ref().map_or(0, |(p, _)| p.messages())
    }

    /// Forgets what was gathered (a new model version starts its statistics afresh).
    pub fn clear(&mut self) {
        self.pending = None;
    }
}

/// Every statistic and detector over the pooled recent windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriftReport {
    pub messages: usize,
    pub class_mix: Vec<f64>,
    pub prediction_psi: f64,
    pub class_share_rule: bool,
    pub mmd2: f64,
    pub mmd_p_value: f64,
    pub mean_confidence: f64,
    pub low_confidence_share: f64,
    pub text_length_psi: f64,
    pub invalid_share: f64,
    /// When at least one message carried ground truth.
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub prediction_drift: bool,
    pub embedding_drift: bool,
    pub confidence_drift: bool,
    pub text_length_drift: bool,
}

/// A drift detector: one of the alarms a [`DriftReport`] raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    Prediction,
    Embedding,
    Confidence,
    TextLength,
}

impl Detector {
    /// Every detector, in the order tables and metrics list them.
    pub const ALL: [Detector; 4] = [
        Self::Prediction,
        Self::Embedding,
        Self::Confidence,
        Self::TextLength,
    ];

    /// The `detector` label of `triage_drift_detected` and the drift evaluation's rows.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Prediction => "prediction",
            Self::Embedding => "embedding",
            Self::Confidence => "confidence",
            Self::TextLength => "text_length",
        }
    }

    /// Whether this detector fired in `report`.
    pub fn fired(self, report: &DriftReport) -> bool {
        match self {
            Self::Prediction => report.prediction_drift,
            Self::Embedding => report.embedding_drift,
            Self::Confidence => report.confidence_drift,
            Self::TextLength => report.text_length_drift,
        }
    }
}

/// Sliding-window drift monitor for one model version.
pub struct DriftMonitor {
    settings: DriftSettings,
    reference: DriftReference,
    classes: usize,
    windows: VecDeque<WindowObservation>,
    seed: u64,
}

impl DriftMonitor {
    pub fn new(settings: DriftSettings, reference: DriftReference, classes: usize) -> Self {
        Self {
            settings,
            reference,
            classes,
            windows: VecDeque::new(),
            seed: 0,
        }
    }

    /// Adds a window and reports on the pooled recent windows.
    pub fn observe(&mut self, window: WindowObservation) -> DriftReport {
        self.windows.push_back(window);
        while self.windows.len() > self.settings.sliding_windows.max(1) {
            self.windows.pop_front();
        }
        self.seed += 1;
        self.report()
    }

    fn report(&self) -> DriftReport {
        let s = &self.settings;
        let labels: Vec<usize> = self
            .windows
            .iter()
            .flat_map(|w| w.labels.iter().copied())
            .collect();
        let confidences: Vec<f64> = self
            .windows
            .iter()
            .flat_map(|w| w.confidences.iter().copied())
            .collect();
        let lengths = self
            .windows
            .iter()
            .flat_map(|w| w.text_lengths.iter().map(|&l| l as f64));
        let invalid: usize = self.windows.iter().map(|w| w.invalid).sum();
        let messages = labels.len();
        let enough = messages >= s.min_messages;

        let class_mix = stats::class_mix(&labels, self.classes);
        let prediction_psi = stats::psi(&self.reference.class_mix, &class_mix);
        let class_share_rule = stats::class_share_rule(
            &self.reference.class_mix,
            &class_mix,
            s.class_share_min,
            s.class_share_max,
        );
        let current_lengths = Histogram::new(TEXT_LENGTH_EDGES.to_vec(), lengths);
        let text_length_psi = stats::psi(
            &self.reference.text_length.shares(),
            &current_lengths.shares(),
        );
        let mean_confidence = stats::mean(&confidences);

        // The MMD test assumes independent draws: a message seen twice (a redelivery
        // after a crash, a retried send) would look like drift, so each distinct
        // embedding counts once. Shuffled, since the test uses the first rows.
        let mut seen = std::collections::HashSet::new();
        let mut pooled: Vec<&[f32]> = self
            .windows
            .iter()
            .flat_map(|w| w.embeddings.iter())
            .filter(|e| seen.insert(e.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()))
            .map(Vec::as_slice)
            .collect();
        pooled.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
        let mmd = match &self.reference.mmd {
            Some(null) if enough => null.test(&self.reference.sample, &pooled),
            _ => None,
        };

        let pairs: Vec<(usize, usize)> = self
            .windows
            .iter()
            .flat_map(|w| {
                w.truth
                    .iter()
                    .zip(&w.labels)
                    .filter_map(|(t, &p)| t.map(|t| (t, p)))
            })
            .collect();
        let (accuracy, macro_f1) = if pairs.is_empty() {
            (None, None)
        } else {
            let names: Vec<String> = (0..self.classes).map(|i| i.to_string()).collect();
            let (t, p): (Vec<usize>, Vec<usize>) = pairs.into_iter().unzip();
            let e = evaluate(&names, &t, &p);
            (Some(e.accuracy), Some(e.macro_f1))
        };

        DriftReport {
            messages,
            prediction_drift: enough
                && messages >= s.min_messages_per_class * self.classes
                && (prediction_psi > s.prediction_psi || class_share_rule),
            embedding_drift: mmd.is_some_and(|m| m.p_value < s.mmd_p_value),
            confidence_drift: enough
                && self.reference.mean_confidence - mean_confidence > s.confidence_drop,
            text_length_drift: enough && text_length_psi > s.text_length_psi,
            class_mix,
            prediction_psi,
            class_share_rule,
            mmd2: mmd.map_or(0.0, |m| m.mmd2),
            mmd_p_value: mmd.map_or(1.0, |m| m.p_value),
            mean_confidence,
            low_confidence_share: stats::share_below(&confidences, s.low_confidence),
            text_length_psi,
            invalid_share: invalid as f64 / (messages + invalid).max(1) as f64,
            accuracy,
            macro_f1,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn observation(n: usize, invalid: usize) -> WindowObservation {
        WindowObservation {
            labels: vec![1; n],
            confidences: vec![0.9; n],
            embeddings: vec![vec![0.5; 4]; n],
            text_lengths: vec![10; n],
            truth: vec![None; n],
            invalid,
        }
    }

    #[test]
    fn small_windows_are_gathered_into_drift_windows_by_the_window_bounds() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut g = Gather::new(4, Duration::from_millis(500));
        // One-message windows: the fourth message completes a drift window.
        assert!(g.add(observation(1, 0), t0).is_none());
        assert!(g.add(observation(1, 0), t0).is_none());
        assert!(g.add(observation(0, 1), t0).is_none());
        assert_eq!(g.pending(), 3);
        let w = g.add(observation(1, 0), t0).unwrap();
        assert_eq!((w.labels.len(), w.invalid, w.embeddings.len()), (3, 1, 3));
        assert_eq!(g.pending(), 0);
        // A full window passes through as it is.
        assert_eq!(g.add(observation(64, 0), t0).unwrap().labels.len(), 64);
        // A steady stream without a pause of max_age fills its drift windows...
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for at in [0, 300, 600] {
            assert!(g.add(observation(1, 0), ms(at)).is_none());
        }
        assert_eq!(g.add(observation(1, 0), ms(900)).unwrap().labels.len(), 4);
        // ...a pause closes what came before it, at the next window...
        assert!(g.add(observation(1, 0), ms(1000)).is_none());
        assert_eq!(g.add(observation(1, 0), ms(1500)).unwrap().labels.len(), 1);
        assert_eq!(g.pending(), 1);
        // ...or on the timer's clock, when no window comes (an idle stream).
        assert!(g.take_due(ms(1999)).is_none());
        assert_eq!(g.take_due(ms(2000)).unwrap().labels.len(), 1);
        assert!(g.take_due(ms(9000)).is_none());
        // A new model's statistics start afresh.
        assert!(g.add(observation(1, 0), ms(9000)).is_none());
        g.clear();
        assert_eq!(g.pending(), 0);
    }

    #[test]
    fn each_detector_reads_its_own_alarm() {
        type Raise = fn(&mut DriftReport);
        let cases: [(Raise, &str); 4] = [
            (|r| r.prediction_drift = true, "prediction"),
            (|r| r.embedding_drift = true, "embedding"),
            (|r| r.confidence_drift = true, "confidence"),
            (|r| r.text_length_drift = true, "text_length"),
        ];
        assert_eq!(cases.len(), Detector::ALL.len());
        for (raise, name) in cases {
            let mut r = DriftReport::default();
            raise(&mut r);
            let fired: Vec<&str> = Detector::ALL
                .iter()
                .filter(|d| d.fired(&r))
                .map(|d| d.name())
                .collect();
            assert_eq!(fired, [name]);
        }
    }

    /// A point of the in-distribution "embedding space": distinct for k < 1009,
    /// spread evenly over [0, 1) on the first axis.
    pub(crate) fn point(k: usize, shift: f32) -> Vec<f32> {
        vec![((k * 37) % 1009) as f32 / 1009.0 + shift, shift]
    }

    pub(crate) fn reference() -> DriftReference {
        let sample: Vec<Vec<f32>> = (0..60).map(|k| point(k * 5 + 3, 0.0)).collect();
        let pool = ndarray::Array2::from_shape_fn((400, 2), |(k, j)| point(k + 500, 0.0)[j]);
        DriftReference {
            class_mix: vec![0.2, 0.2, 0.6],
            mean_confidence: 0.8,
            embedding_mean: vec![0.5, 0.0],
            mmd: mmd::MmdNull::calibrate(&sample, pool.view(), 30, 200, 1),
            sample,
            text_length: Histogram::new(TEXT_LENGTH_EDGES.to_vec(), std::iter::repeat_n(100.0, 60)),
        }
    }

    /// Window `w` of in-distribution points (moved by `shift`), 20 or fewer rows.
    fn window(
        w: usize,
        labels: Vec<usize>,
        shift: f32,
        confidence: f64,
        length: usize,
    ) -> WindowObservation {
        let n = labels.len();
        WindowObservation {
            embeddings: (0..n).map(|i| point(w * 20 + i, shift)).collect(),
            confidences: vec![confidence; n],
            text_lengths: vec![length; n],
            truth: labels.iter().map(|&l| Some(l)).collect(),
            labels,
            invalid: 0,
        }
    }

    fn stationary_labels() -> Vec<usize> {
        (0..20)
            .map(|i| {
                if i % 5 == 0 {
                    0
                } else if i % 5 == 1 {
                    1
                } else {
                    2
                }
            })
            .collect()
    }

    #[test]
    fn stationary_traffic_raises_nothing() {
        let mut m = DriftMonitor::new(DriftSettings::default(), reference(), 3);
        let mut r = DriftReport::default();
        for w in 0..5 {
            r = m.observe(window(w, stationary_labels(), 0.0, 0.8, 100));
        }
        assert_eq!(r.messages, 100);
        assert!(r.prediction_psi < 0.01, "{r:?}");
        assert!(
            !r.prediction_drift
                && !r.embedding_drift
                && !r.confidence_drift
                && !r.text_length_drift,
            "{r:?}"
        );
        assert!(r.mmd_p_value > 0.05, "{r:?}");
        assert_eq!(r.accuracy, Some(1.0));
    }

    #[test]
    fn detectors_fire_on_their_own_shift() {
        let mut m = DriftMonitor::new(DriftSettings::default(), reference(), 3);
        let mut r = DriftReport::default();
        for w in 0..5 {
            r = m.observe(window(w, vec![0; 20], 0.5, 0.55, 3000));
        }
        assert!(r.prediction_drift && r.class_share_rule, "{r:?}");
        assert!(r.embedding_drift, "{r:?}");
        assert!(r.confidence_drift, "{r:?}");
        assert!(r.text_length_drift, "{r:?}");
    }

    #[test]
    fn too_few_messages_fire_nothing_and_old_windows_slide_out() {
        let settings = DriftSettings {
            sliding_windows: 2,
            ..DriftSettings::default()
        };
        let mut m = DriftMonitor::new(settings, reference(), 3);
        let r = m.observe(window(0, vec![0; 10], 0.5, 0.1, 3000));
        assert!(
            !r.prediction_drift && !r.embedding_drift,
            "under min_messages: {r:?}"
        );
        m.observe(window(1, stationary_labels(), 0.0, 0.8, 100));
        let r = m.observe(window(2, stationary_labels(), 0.0, 0.8, 100));
        assert_eq!(r.messages, 40, "only the last two windows are pooled");
    }

    #[test]
    fn each_drift_setting_problem_names_its_own_key() {
        let keys = |s: &DriftSettings| s.problems().into_iter().map(|p| p.0).collect::<Vec<_>>();
        assert!(DriftSettings::default().problems().is_empty());
        let s = DriftSettings {
            mmd_sample: 5,
            class_share_max: 1.5,
            ..DriftSettings::default()
        };
        assert_eq!(keys(&s), ["drift.mmd_sample", "drift.class_share_max"]);
        let s = DriftSettings {
            class_share_min: 0.95,
            ..DriftSettings::default()
        };
        assert_eq!(keys(&s), ["drift.class_share_min"]);
    }
}
