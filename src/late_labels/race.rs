//! The live race: is the challenger in shadow better than the champion on the same
//! late-labelled messages? Pure: a race's paired observations (each message's
//! truth, the champion's prediction, the challenger's) and the settings in, a
//! [`RaceCheck`] with its [`RaceVerdict`] out. The join collects the observations
//! ([`super::join`]); [`super::follow`] checks each race whose observations changed
//! on every tick and [`super::metrics`] exports it as `triage_race_*`.
//!
//! **Which test decides, and why.** A paired bootstrap of the macro-F1 difference
//! ([`RESAMPLES`] resamples of the messages with replacement, each drawn with both
//! models' predictions, so what the two share cancels; seeded, so the same
//! observations give the same answer). Macro-F1, because the promotion rule and every
//! offline decision in triage are stated in it (`retrain.min_improvement` on the
//! held-out slice), and it weighs rare classes that accuracy lets a majority class
//! hide: a challenger that gains a point on the majority class and loses a rare class
//! wins on accuracy and loses on macro-F1. McNemar's exact test on per-message
//! correctness (b: only the challenger right, c: only the champion right; a two-sided
//! binomial test of b against c) is reported beside it, as a second figure in the
//! accuracy's terms, and never decides.
//!
//! **The verdict.** With n paired messages, d = challenger macro-F1 - champion
//! macro-F1 and m = `retrain.min_improvement`:
//!
//! - `Promote` when n >= `rollout.min_labelled` and the one-sided p-value of
//!   "d <= m" (the share of resamples in which d comes to at most m) is under
//!   `rollout.alpha`;
//! - `Reject(Lost)` when n >= `rollout.min_labelled` and the one-sided p-value of
//!   "d >= 0" is under `rollout.alpha`: the challenger is significantly worse;
//! - `Reject(Expired)` when `rollout.max_wait_s` has passed since the race's first
//!   labelled message without either;
//! - `Continue` otherwise.
//!
//! The p-values count the observed sample once (never 0, at least 1 / (RESAMPLES + 1)).
//! The test is repeated as labels arrive, and every look is a chance for a false
//! verdict: the margin m (the challenger must beat the champion by it, not merely
//! tie) is what keeps a challenger of the same quality from being promoted by repeated
//! looks; the unit tests measure that rate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::info;

use super::confidence::{self, ConfidenceCheck, ConfidenceTest};
use super::join::LabelJoin;
use super::promise::{Counts, RESAMPLES};
use crate::config::{RetrainSettings, RolloutSettings};

/// The bootstrap's seed: the same observations give the same p-values.
const SEED: u64 = 0x7261_6365_2121;

/// One late-labelled message both models predicted, as class indices of the race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paired {
    pub truth: usize,
    pub champion: usize,
    pub challenger: usize,
}

/// The race's settings (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RaceTest {
    pub min_labelled: usize,
    pub max_wait_ms: i64,
    pub alpha: f64,
    pub min_improvement: f64,
}

impl RaceTest {
    pub fn from_settings(rollout: &RolloutSettings, retrain: &RetrainSettings) -> Self {
        Self {
            min_labelled: rollout.min_labelled,
            max_wait_ms: i64::try_from(rollout.max_wait_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            alpha: rollout.alpha,
            min_improvement: retrain.min_improvement,
        }
    }
}

/// Why a challenger was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Significantly worse than the champion on the same messages.
    Lost,
    /// `rollout.max_wait_s` passed without a verdict.
    Expired,
}

/// What the race says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceVerdict {
    Continue,
    Promote,
    Reject(RejectReason),
}

impl RaceVerdict {
    /// `triage_race_state`: 0 continue, 1 promote, 2 lost, 3 expired.
    pub fn state(self) -> i64 {
        match self {
            Self::Continue => 0,
            Self::Promote => 1,
            Self::Reject(RejectReason::Lost) => 2,
            Self::Reject(RejectReason::Expired) => 3,
        }
    }

    /// `continue`, `promote`, `lost` or `expired`, for logs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Promote => "promote",
            Self::Reject(RejectReason::Lost) => "lost",
            Self::Reject(RejectReason::Expired) => "expired",
        }
    }
}

/// McNemar's exact test on per-message correctness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    /// Messages both got right.
    pub both: u64,
    /// Messages only the challenger got right.
    pub b: u64,
    /// Messages only the champion got right.
    pub c: u64,
    /// Two-sided binomial p-value of b against c (1 when b + c = 0).
    pub p_value: f64,
}

/// One race checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RaceCheck {
    /// Paired late-labelled messages behind it.
    pub labelled: usize,
    pub champion_macro_f1: f64,
    pub challenger_macro_f1: f64,
    /// challenger - champion.
    pub difference: f64,
    /// P-value of "difference <= retrain.min_improvement" (small: promote); 1 when
    /// not tested (fewer than `min_labelled` messages).
    pub promote_p: f64,
    /// P-value of "difference >= 0" (small: the challenger lost); 1 when not tested.
    pub lose_p: f64,
    pub mcnemar: McNemar,
    /// When the race's first labelled message arrived, and the milliseconds since.
    pub started_ms: i64,
    pub elapsed_ms: i64,
    pub verdict: RaceVerdict,
}

/// Checks a race over `classes` classes (every index in `observations` is below
/// it) that started at `started_ms`, at `now_ms`.
pub fn check(
    test: &RaceTest,
    classes: usize,
    observations: &[Paired],
    started_ms: i64,
    now_ms: i64,
) -> RaceCheck {
    let n = observations.len();
    let mut champion = Counts::new(classes);
    let mut challenger = Counts::new(classes);
    let (mut both, mut b, mut c) = (0u64, 0u64, 0u64);
    for o in observations {
        champion.add((o.truth, o.champion));
        challenger.add((o.truth, o.challenger));
        match (o.champion == o.truth, o.challenger == o.truth) {
            (true, true) => both += 1,
            (false, true) => b += 1,
            (true, false) => c += 1,
            _ => {}
        }
    }
    let (f1_champion, f1_challenger) = (champion.macro_f1(), challenger.macro_f1());
    let difference = f1_challenger - f1_champion;
    let tested = n > 0 && n >= test.min_labelled;
    let (promote_p, lose_p) = if tested {
        bootstrap(classes, observations, test.min_improvement)
    } else {
        (1.0, 1.0)
    };
    let elapsed_ms = now_ms.saturating_sub(started_ms);
    let verdict = if tested && promote_p < test.alpha {
        RaceVerdict::Promote
    } else if tested && lose_p < test.alpha {
        RaceVerdict::Reject(RejectReason::Lost)
    } else if elapsed_ms >= test.max_wait_ms {
        RaceVerdict::Reject(RejectReason::Expired)
    } else {
        RaceVerdict::Continue
    };
    RaceCheck {
        labelled: n,
        champion_macro_f1: f1_champion,
        challenger_macro_f1: f1_challenger,
        difference,
        promote_p,
        lose_p,
        mcnemar: McNemar {
            both,
            b,
            c,
            p_value: mcnemar_p(b, c),
        },
        started_ms,
        elapsed_ms,
        verdict,
    }
}

/// The paired bootstrap's p-values of "d <= margin" and "d >= 0": the shares of
/// resamples (the observed sample counted once) on each side.
fn bootstrap(classes: usize, observations: &[Paired], margin: f64) -> (f64, f64) {
    let n = observations.len();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut champion = Counts::new(classes);
    let mut challenger = Counts::new(classes);
    let (mut at_most_margin, mut at_least_zero) = (1usize, 1usize);
    for _ in 0..RESAMPLES {
        champion.clear();
        challenger.clear();
        for _ in 0..n {
            let o = observations[rng.random_range(0..n)];
            champion.add((o.truth, o.champion));
            challenger.add((o.truth, o.challenger));
        }
        let d = challenger.macro_f1() - champion.macro_f1();
        at_most_margin += usize::from(d <= margin);
        at_least_zero += usize::from(d >= 0.0);
    }
    let total = (RESAMPLES + 1) as f64;
    (at_most_margin as f64 / total, at_least_zero as f64 / total)
}

/// McNemar's exact two-sided p-value: twice the binomial(b + c, 1/2) tail at
/// min(b, c), capped at 1. P(X <= k) = I_{1/2}(n - k, k + 1), the regularised
/// incomplete beta.
pub fn mcnemar_p(b: u64, c: u64) -> f64 {
    let n = b + c;
    let k = b.min(c);
    if n == 0 || 2 * k == n {
        return 1.0;
    }
    let tail = puruspe::betai((n - k) as f64, (k + 1) as f64, 0.5);
    (2.0 * tail).min(1.0)
}

/// A race's name: (champion version, challenger version).
pub type RaceName = (String, String);

/// Each race's current check (and its confidence check), shared between the
/// join's thread (which writes them every tick) and whoever acts on the verdicts
/// (the retrainer).
#[derive(Clone, Default)]
pub struct Races(Arc<Mutex<Shared>>);

#[derive(Default)]
struct Shared {
    checks: BTreeMap<RaceName, RaceCheck>,
    confidence: BTreeMap<RaceName, ConfidenceCheck>,
    /// An alert about the published model since the guard last looked.
    alarm: Option<String>,
}

impl Races {
    /// The current check of the race (champion, challenger), if the join holds it.
    pub fn get(&self, champion: &str, challenger: &str) -> Option<RaceCheck> {
        self.lock()
            .checks
            .get(&(champion.to_string(), challenger.to_string()))
            .cloned()
    }

    /// Every race's current check.
    pub fn all(&self) -> BTreeMap<RaceName, RaceCheck> {
        self.lock().checks.clone()
    }

    /// Sets one race's check (the join's thread does it for every race each tick;
    /// tests of what acts on a verdict set it by hand).
    pub fn set(&self, champion: &str, challenger: &str, check: RaceCheck) {
        self.lock()
            .checks
            .insert((champion.to_string(), challenger.to_string()), check);
    }

    /// The confidence check of (published, shadowed), if the join holds its pairs.
    pub fn confidence(&self, champion: &str, challenger: &str) -> Option<ConfidenceCheck> {
        self.lock()
            .confidence
            .get(&(champion.to_string(), challenger.to_string()))
            .copied()
    }

    /// Sets one pair's confidence check (as [`Races::set`]).
    pub fn set_confidence(&self, champion: &str, challenger: &str, check: ConfidenceCheck) {
        self.lock()
            .confidence
            .insert((champion.to_string(), challenger.to_string()), check);
    }

    /// Raises an alarm about the published model (the webhook does, for an alert
    /// about a swap such as `TriageSwapDeadLetters`): the rollout's next step takes
    /// it, and a guard running then rolls back on it.
    pub fn raise_alarm(&self, what: String) {
        self.lock().alarm = Some(what);
    }

    /// The alarm raised since the last call, if any.
    pub fn take_alarm(&self) -> Option<String> {
        self.lock().alarm.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic elsewhere while holding it leaves plain data: still readable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The last check of each race the join holds: redone (the bootstrap) only when
/// its observations changed; otherwise only its clock moves on, so a race
/// without new labels still expires.
pub struct RaceBook {
    test: RaceTest,
    checks: HashMap<RaceName, (u64, RaceCheck)>,
    confidence_test: ConfidenceTest,
    confidence: HashMap<RaceName, (u64, ConfidenceCheck)>,
    shared: Races,
}

impl RaceBook {
    /// `shared` is updated at every [`RaceBook::checks`].
    pub fn new(test: RaceTest, shared: Races) -> Self {
        Self {
            test,
            checks: HashMap::new(),
            confidence_test: ConfidenceTest::from_settings(&RolloutSettings::default()),
            confidence: HashMap::new(),
            shared,
        }
    }

    /// With the guard's confidence check by `test` (the default `[rollout]`'s otherwise).
    pub fn with_confidence(self, test: ConfidenceTest) -> Self {
        Self {
            confidence_test: test,
            ..self
        }
    }

    /// The confidence check of every pair `join` holds; redone only when its pairs
    /// changed. A collapse found is logged.
    pub fn confidence_checks(&mut self, join: &LabelJoin) -> BTreeMap<RaceName, ConfidenceCheck> {
        let mut out = BTreeMap::new();
        for (published, shadowed, revision) in join.confidence_races() {
            let name = (published, shadowed);
            let now = match self.confidence.get(&name) {
                Some((seen, last)) if *seen == revision => *last,
                _ => {
                    let Some(pairs) = join.confidence_pairs(&name.0, &name.1) else {
                        continue;
                    };
                    confidence::check(&self.confidence_test, &pairs)
                }
            };
            let before = self.confidence.get(&name).is_some_and(|(_, c)| c.collapsed);
            if now.collapsed && !before {
                info!(
                    published = %name.0,
                    shadowed = %name.1,
                    predictions = now.predictions,
                    published_above_chance = now.published_mean,
                    shadowed_above_chance = now.shadowed_mean,
                    p = now.p_value,
                    "Confidence collapse: the published model is far less sure than the one in shadow on the same messages."
                );
            }
            self.confidence.insert(name.clone(), (revision, now));
            out.insert(name, now);
        }
        self.confidence.retain(|name, _| out.contains_key(name));
        self.shared.lock().confidence = out.clone();
        out
    }

    /// The check of every race `join` holds, at `now_ms`. A verdict that changes
    /// is logged.
    pub fn checks(&mut self, join: &LabelJoin, now_ms: i64) -> BTreeMap<RaceName, RaceCheck> {
        let mut out = BTreeMap::new();
        for (champion, challenger, revision) in join.races() {
            let name = (champion, challenger);
            let now = match self.checks.get(&name) {
                Some((seen, last)) if *seen == revision => aged(&self.test, last.clone(), now_ms),
                _ => {
                    let Some(w) = join.race_window(&name.0, &name.1) else {
                        continue;
                    };
                    check(&self.test, w.classes, &w.observations, w.started_ms, now_ms)
                }
            };
            let before = self.checks.get(&name).map(|(_, c)| c.verdict);
            if before != Some(now.verdict) && now.verdict != RaceVerdict::Continue {
                info!(
                    champion = %name.0,
                    challenger = %name.1,
                    verdict = now.verdict.as_str(),
                    labelled = now.labelled,
                    champion_macro_f1 = now.champion_macro_f1,
                    challenger_macro_f1 = now.challenger_macro_f1,
                    promote_p = now.promote_p,
                    lose_p = now.lose_p,
                    mcnemar_p = now.mcnemar.p_value,
                    "Live race: a verdict (triage_race_state)."
                );
            }
            self.checks.insert(name.clone(), (revision, now.clone()));
            out.insert(name, now);
        }
        self.checks.retain(|name, _| out.contains_key(name));
        self.shared.lock().checks = out.clone();
        out
    }
}

/// A check whose observations have not changed, at a later `now_ms`: the figures
/// stand, and a race still undecided expires when its time is up.
fn aged(test: &RaceTest, mut c: RaceCheck, now_ms: i64) -> RaceCheck {
    c.elapsed_ms = now_ms.saturating_sub(c.started_ms);
    if c.verdict == RaceVerdict::Continue && c.elapsed_ms >= test.max_wait_ms {
        c.verdict = RaceVerdict::Reject(RejectReason::Expired);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: RaceTest = RaceTest {
        min_labelled: 200,
        max_wait_ms: 86_400_000,
        alpha: 0.05,
        min_improvement: 0.01,
    };

    /// A small deterministic generator for the simulations (not the bootstrap's).
    struct Sim(ChaCha8Rng);

    impl Sim {
        fn new(seed: u64) -> Self {
            Self(ChaCha8Rng::seed_from_u64(seed))
        }

        /// A message of 3 classes, each model right with its own probability
        /// (independently; a miss is one of the other classes at random).
        fn paired(&mut self, champion: f64, challenger: f64) -> Paired {
            let truth = self.0.random_range(0..3);
            let mut predict = |p: f64| {
                if self.0.random::<f64>() < p {
                    truth
                } else {
                    (truth + self.0.random_range(1..3)) % 3
                }
            };
            let (ch, cl) = (predict(champion), predict(challenger));
            Paired {
                truth,
                champion: ch,
                challenger: cl,
            }
        }

        fn race(&mut self, n: usize, champion: f64, challenger: f64) -> Vec<Paired> {
            (0..n).map(|_| self.paired(champion, challenger)).collect()
        }
    }

    #[test]
    fn a_clearly_better_challenger_is_promoted_after_min_labelled_and_not_before() {
        let obs = Sim::new(1).race(400, 0.6, 0.85);
        let before = check(&TEST, 3, &obs[..199], 0, 1_000);
        assert_eq!(before.verdict, RaceVerdict::Continue, "{before:?}");
        assert_eq!((before.promote_p, before.lose_p), (1.0, 1.0));
        assert!(before.difference > 0.15, "{before:?}");
        let at = check(&TEST, 3, &obs[..200], 0, 1_000);
        assert_eq!(at.verdict, RaceVerdict::Promote, "{at:?}");
        assert!(at.promote_p < 0.01 && at.lose_p > 0.9, "{at:?}");
        assert!(
            at.mcnemar.b > at.mcnemar.c && at.mcnemar.p_value < 0.001,
            "{at:?}"
        );
    }

    #[test]
    fn an_equal_challenger_continues_then_expires() {
        let obs = Sim::new(2).race(300, 0.75, 0.75);
        let c = check(&TEST, 3, &obs, 0, 1_000);
        assert_eq!(c.verdict, RaceVerdict::Continue, "{c:?}");
        assert_eq!(c.labelled, 300);
        let c = check(&TEST, 3, &obs, 5_000, 5_000 + TEST.max_wait_ms);
        assert_eq!(
            c.verdict,
            RaceVerdict::Reject(RejectReason::Expired),
            "{c:?}"
        );
        assert_eq!(c.verdict.state(), 3);
        // Too few messages to test: expiry still ends it.
        let c = check(&TEST, 3, &obs[..10], 0, TEST.max_wait_ms);
        assert_eq!(c.verdict, RaceVerdict::Reject(RejectReason::Expired));
    }

    #[test]
    fn a_worse_challenger_is_rejected_as_lost() {
        let obs = Sim::new(3).race(250, 0.85, 0.6);
        let c = check(&TEST, 3, &obs, 0, 1_000);
        assert_eq!(c.verdict, RaceVerdict::Reject(RejectReason::Lost), "{c:?}");
        assert!(c.difference < -0.1 && c.lose_p < 0.01, "{c:?}");
        assert_eq!(c.verdict.state(), 2);
    }

    #[test]
    fn the_same_observations_give_the_same_check() {
        let obs = Sim::new(4).race(220, 0.7, 0.74);
        let a = check(&TEST, 3, &obs, 0, 1_000);
        let b = check(&TEST, 3, &obs, 0, 1_000);
        assert_eq!(a, b);
        assert!(a.promote_p > 0.0 && a.promote_p <= 1.0);
    }

    #[test]
    fn macro_f1_weighs_a_rare_class_that_accuracy_hides() {
        // 90% class 0. The challenger gets one more majority message right than the
        // champion but never the rare class; the champion gets the rare class right.
        let mut obs = Vec::new();
        for i in 0..270 {
            let champion = if i < 30 { 1 } else { 0 };
            obs.push(Paired {
                truth: 0,
                champion,
                challenger: 0,
            });
        }
        for _ in 0..30 {
            obs.push(Paired {
                truth: 1,
                champion: 1,
                challenger: 0,
            });
        }
        let c = check(&TEST, 2, &obs, 0, 1_000);
        assert_eq!((c.mcnemar.b, c.mcnemar.c), (30, 30));
        assert!(c.challenger_macro_f1 < c.champion_macro_f1, "{c:?}");
        assert_eq!(c.verdict, RaceVerdict::Reject(RejectReason::Lost), "{c:?}");
    }

    #[test]
    fn an_unchanged_race_still_expires_without_a_new_bootstrap() {
        let obs = Sim::new(5).race(50, 0.7, 0.7);
        let c = check(&TEST, 3, &obs, 1_000, 2_000);
        assert_eq!(c.verdict, RaceVerdict::Continue);
        let later = aged(&TEST, c.clone(), 1_000 + TEST.max_wait_ms);
        assert_eq!(later.verdict, RaceVerdict::Reject(RejectReason::Expired));
        assert_eq!(
            later,
            check(&TEST, 3, &obs, 1_000, 1_000 + TEST.max_wait_ms)
        );
    }

    #[test]
    fn mcnemar_matches_the_binomial_by_hand() {
        assert_eq!(mcnemar_p(0, 0), 1.0);
        assert_eq!(mcnemar_p(5, 5), 1.0);
        // b = 0, c = 5: 2 * (1/2)^5.
        assert!(
            (mcnemar_p(0, 5) - 0.0625).abs() < 1e-12,
            "{}",
            mcnemar_p(0, 5)
        );
        // b = 2, c = 8: 2 * (1 + 10 + 45) / 1024.
        assert!(
            (mcnemar_p(2, 8) - 112.0 / 1024.0).abs() < 1e-9,
            "{}",
            mcnemar_p(2, 8)
        );
        assert_eq!(mcnemar_p(8, 2), mcnemar_p(2, 8));
    }

    /// Under H0 (both models of the same quality), how often is the challenger
    /// promoted: at one look at `min_labelled`, and over a race looked at every 50
    /// labels up to the bound of 4 x `min_labelled`; and how often a challenger 10
    /// points better is promoted at the first look (the power).
    #[test]
    fn false_promotions_under_equal_quality_stay_near_alpha() {
        let races = 40;
        let (mut one_look, mut one_look_lost, mut repeated, mut lost, mut power) = (0, 0, 0, 0, 0);
        for r in 0..races {
            let mut sim = Sim::new(1_000 + r);
            let obs = sim.race(4 * TEST.min_labelled, 0.7, 0.7);
            match check(&TEST, 3, &obs[..TEST.min_labelled], 0, 0).verdict {
                RaceVerdict::Promote => one_look += 1,
                RaceVerdict::Reject(RejectReason::Lost) => one_look_lost += 1,
                _ => {}
            }
            let verdicts: Vec<RaceVerdict> = (TEST.min_labelled..=obs.len())
                .step_by(50)
                .map(|n| check(&TEST, 3, &obs[..n], 0, 0).verdict)
                .collect();
            match verdicts.iter().find(|v| **v != RaceVerdict::Continue) {
                Some(RaceVerdict::Promote) => repeated += 1,
                Some(_) => lost += 1,
                None => {}
            }
            let better = sim.race(TEST.min_labelled, 0.7, 0.8);
            if check(&TEST, 3, &better, 0, 0).verdict == RaceVerdict::Promote {
                power += 1;
            }
        }
        let rate = |k: i32| f64::from(k) / races as f64;
        eprintln!(
            "race under H0 (accuracy 0.7 both, alpha {}, margin {}), {races} races: \
             false promotions {:.3} at one look (n = {}; lost {:.3}), {:.3} over looks every 50 \
             labels to n = {} (first verdict lost: {:.3}); power vs +0.1 accuracy at \
             n = {}: {:.3}",
            TEST.alpha,
            TEST.min_improvement,
            rate(one_look),
            TEST.min_labelled,
            rate(one_look_lost),
            rate(repeated),
            4 * TEST.min_labelled,
            rate(lost),
            TEST.min_labelled,
            rate(power),
        );
        assert!(rate(one_look) <= 0.1, "one look: {}", rate(one_look));
        assert!(rate(repeated) <= 0.15, "repeated looks: {}", rate(repeated));
        assert!(rate(power) >= 0.5, "power: {}", rate(power));
    }
}
