//! Drift scenarios: which rows a replay sends, in which order. Pure: rows in, a plan
//! out, the same plan for the same rows and seed.
//!
//! - `stationary`: the file as it is, in its order.
//! - `prior-shift`: only the rows whose label is one of `keep` (the label mix moves,
//!   each class's messages look as before).
//! - `covariate-shift`: every message comes from the second file with probability
//!   `share` (the messages themselves look different).
//! - `gradual-shift`: like covariate shift, with the share moving in a straight line
//!   from `from` at the first message to `to` at the last.
//!
//! Each file is read in its order; a file that runs out leaves the rest of the
//! plan to the other one, and the plan ends when both ran out or it has `rows`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A replay scenario, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    Stationary,
    PriorShift { keep: Vec<String> },
    CovariateShift { share: f64 },
    GradualShift { from: f64, to: f64 },
}

/// Why a scenario cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    #[error("--scenario prior-shift needs --keep LABEL,... (the labels to keep)")]
    NoLabelsToKeep,
    #[error("--scenario {0} mixes in a second file: add --mix FILE")]
    NoMixFile(&'static str),
    #[error("--mix is only read by covariate-shift and gradual-shift, not by {0}")]
    UnusedMixFile(&'static str),
    #[error("{name} = {value} is not a share: give a number from 0 to 1")]
    BadShare { name: &'static str, value: f64 },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Stationary => "stationary",
            Self::PriorShift { .. } => "prior-shift",
            Self::CovariateShift { .. } => "covariate-shift",
            Self::GradualShift { .. } => "gradual-shift",
        }
    }

    /// Checks the parameters, and that a second file is given exactly when the
    /// scenario reads one.
    pub fn check(&self, has_mix: bool) -> Result<(), ScenarioError> {
        let share = |name, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(ScenarioError::BadShare { name, value })
            }
        };
        match self {
            Self::PriorShift { keep } if keep.is_empty() => Err(ScenarioError::NoLabelsToKeep),
            Self::Stationary | Self::PriorShift { .. } if has_mix => {
                Err(ScenarioError::UnusedMixFile(self.name()))
            }
            Self::Stationary | Self::PriorShift { .. } => Ok(()),
            _ if !has_mix => Err(ScenarioError::NoMixFile(self.name())),
            Self::CovariateShift { share: s } => share("--share", *s),
            Self::GradualShift { from, to } => share("--from", *from).and(share("--to", *to)),
        }
    }

    /// The share of the second file at message `i` of `n`.
    fn share_at(&self, i: usize, n: usize) -> f64 {
        match self {
            Self::Stationary | Self::PriorShift { .. } => 0.0,
            Self::CovariateShift { share } => *share,
            Self::GradualShift { from, to } if n > 1 => {
                from + (to - from) * i as f64 / (n - 1) as f64
            }
            Self::GradualShift { from, .. } => *from,
        }
    }
}

/// Where a planned message comes from: the file, or the second file, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Main(usize),
    Mix(usize),
}

/// The messages to send: at most `rows` picks from `main` (the class of each row,
/// when known) and `mix_len` rows of the second file.
pub fn plan(
    scenario: &Scenario,
    main: &[Option<String>],
    mix_len: usize,
    rows: Option<usize>,
    seed: u64,
) -> Vec<Pick> {
    let kept: Vec<usize> = match scenario {
        Scenario::PriorShift { keep } => main
            .iter()
            .enumerate()
            .filter(|(_, class)| class.as_ref().is_some_and(|c| keep.contains(c)))
            .map(|(i, _)| i)
            .collect(),
        _ => (0..main.len()).collect(),
    };
    let mixing = matches!(
        scenario,
        Scenario::CovariateShift { .. } | Scenario::GradualShift { .. }
    );
    let available = kept.len() + if mixing { mix_len } else { 0 };
    let n = rows.map_or(kept.len(), |r| r.min(available));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut next_main, mut next_mix) = (0, 0);
    let mut picks = Vec::with_capacity(n);
    while picks.len() < n {
        let from_mix = mixing && rng.random::<f64>() < scenario.share_at(picks.len(), n);
        let main_left = next_main < kept.len();
        let mix_left = mixing && next_mix < mix_len;
        if (from_mix && mix_left) || !main_left {
            if !mix_left {
                break;
            }
            picks.push(Pick::Mix(next_mix));
            next_mix += 1;
        } else {
            picks.push(Pick::Main(kept[next_main]));
            next_main += 1;
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(labels: &[&str]) -> Vec<Option<String>> {
        labels.iter().map(|l| Some(l.to_string())).collect()
    }

    fn mixed(picks: &[Pick]) -> usize {
        picks.iter().filter(|p| matches!(p, Pick::Mix(_))).count()
    }

    #[test]
    fn stationary_sends_the_file_in_order_up_to_rows() {
        let main = classes(&["a", "b", "c"]);
        let all = plan(&Scenario::Stationary, &main, 0, None, 1);
        assert_eq!(all, [Pick::Main(0), Pick::Main(1), Pick::Main(2)]);
        let two = plan(&Scenario::Stationary, &main, 0, Some(2), 1);
        assert_eq!(two, [Pick::Main(0), Pick::Main(1)]);
    }

    #[test]
    fn prior_shift_keeps_only_the_chosen_labels() {
        let mut main = classes(&["neg", "pos", "neu", "pos", "neg"]);
        main.push(None);
        let keep = Scenario::PriorShift {
            keep: vec!["pos".into(), "neu".into()],
        };
        let picks = plan(&keep, &main, 0, None, 7);
        assert_eq!(picks, [Pick::Main(1), Pick::Main(2), Pick::Main(3)]);
    }

    #[test]
    fn covariate_shift_mixes_the_second_file_at_about_the_share() {
        let main = classes(&["x"; 2000]);
        let half = plan(
            &Scenario::CovariateShift { share: 0.5 },
            &main,
            2000,
            Some(2000),
            3,
        );
        assert_eq!(half.len(), 2000);
        let share = mixed(&half) as f64 / 2000.0;
        assert!((0.45..0.55).contains(&share), "{share}");
        // Each file is read in its order.
        let mix_order: Vec<usize> = half
            .iter()
            .filter_map(|p| match p {
                Pick::Mix(i) => Some(*i),
                Pick::Main(_) => None,
            })
            .collect();
        assert!(mix_order.windows(2).all(|w| w[1] == w[0] + 1));
        let none = plan(
            &Scenario::CovariateShift { share: 0.0 },
            &main,
            2000,
            Some(100),
            3,
        );
        assert_eq!(mixed(&none), 0);
        let all = plan(
            &Scenario::CovariateShift { share: 1.0 },
            &main,
            2000,
            Some(100),
            3,
        );
        assert_eq!(mixed(&all), 100);
    }

    #[test]
    fn gradual_shift_moves_the_share_from_start_to_end() {
        let main = classes(&["x"; 1000]);
        let picks = plan(
            &Scenario::GradualShift { from: 0.0, to: 1.0 },
            &main,
            1000,
            Some(1000),
            11,
        );
        let first = mixed(&picks[..250]) as f64 / 250.0;
        let last = mixed(&picks[750..]) as f64 / 250.0;
        assert!(first < 0.25, "first quarter {first}");
        assert!(last > 0.75, "last quarter {last}");
        assert_eq!(picks[0], Pick::Main(0), "share 0 at the first message");
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let main = classes(&["x"; 200]);
        let s = Scenario::CovariateShift { share: 0.3 };
        let a = plan(&s, &main, 200, Some(200), 42);
        assert_eq!(a, plan(&s, &main, 200, Some(200), 42));
        assert_ne!(a, plan(&s, &main, 200, Some(200), 43));
    }

    #[test]
    fn a_file_that_runs_out_leaves_the_rest_to_the_other() {
        let main = classes(&["x"; 3]);
        let picks = plan(&Scenario::CovariateShift { share: 0.5 }, &main, 2, None, 5);
        // Without --rows: the main file's rows; every row of both fits.
        assert_eq!(picks.len(), 3);
        let all = plan(
            &Scenario::CovariateShift { share: 0.9 },
            &main,
            2,
            Some(100),
            5,
        );
        assert_eq!(all.len(), 5, "both files, then nothing more");
        assert_eq!(mixed(&all), 2);
    }

    #[test]
    fn parameters_are_checked_with_the_fix_in_the_message() {
        let keep = Scenario::PriorShift { keep: vec![] };
        assert!(
            keep.check(false)
                .unwrap_err()
                .to_string()
                .contains("--keep")
        );
        let cov = Scenario::CovariateShift { share: 0.5 };
        assert!(cov.check(false).unwrap_err().to_string().contains("--mix"));
        assert!(cov.check(true).is_ok());
        let bad = Scenario::GradualShift { from: 0.0, to: 1.5 };
        assert!(bad.check(true).unwrap_err().to_string().contains("--to"));
        let stray = Scenario::Stationary.check(true).unwrap_err();
        assert!(stray.to_string().contains("stationary"));
    }
}
