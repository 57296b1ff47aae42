//! `--shadow`: what scoring a challenger in shadow costs the service. Each round
//! drains the same messages twice, back to back: once with no challenger and once
//! with one in shadow, in alternating order.
//!
//! Both runs read a registry of the bench's own (a folder that is removed at the
//! end), never the configured one: the champion is copied into it twice, as `v1`
//! (the champion) and `v2`, and only the second registry's `challenger` alias names
//! `v2`. A copy costs what a real challenger costs, since shadowing needs the
//! champion's embedding spec and so the same classifier shape (one more prediction
//! from the same embeddings per message), and it touches neither the configured
//! registry's aliases nor its history, nor a live race running there. The plain side
//! reads a copy too, so that the alias is the only difference (and a challenger the
//! configured registry may have cannot creep into the plain figure).

use std::path::{Path, PathBuf};

use super::phases::{Drained, drain_backlog};
use super::{ShadowReport, ShadowRound, StageCosts, unique};
use crate::config::Settings;
use crate::registry::{Actor, ModelVersion, Registry};
use crate::stats::median;

/// The two registries of `--shadow` and the settings that serve each.
pub(super) struct Registries {
    dir: PathBuf,
    /// Serves the champion alone.
    pub(super) plain: Settings,
    /// Serves the champion with the challenger in shadow.
    pub(super) shadowed: Settings,
    /// The challenger's version name.
    pub(super) challenger: String,
}

impl Registries {
    /// Copies the configured champion into two fresh registries under the temporary
    /// folder: `v1` the champion in both, `v2` (the same model) the challenger in one.
    pub(super) fn copy(settings: &Settings) -> anyhow::Result<Self> {
        let champion = Registry::from_settings(settings)?.load("champion")?;
        let dir = std::env::temp_dir().join(unique("registries"));
        // Removed on drop, also when a side fails below.
        let mut made = Self {
            plain: settings.clone(),
            shadowed: settings.clone(),
            challenger: String::new(),
            dir,
        };
        let (plain, _) = side(settings, &champion, &made.dir.join("plain"), false)?;
        let (shadowed, challenger) = side(settings, &champion, &made.dir.join("shadowed"), true)?;
        (made.plain, made.shadowed, made.challenger) = (plain, shadowed, challenger);
        Ok(made)
    }

    /// One round: the plain and the shadowed drain, in the order [`plain_first`]
    /// gives, each checked for whether a shadow ran. Returns (plain, shadowed).
    pub(super) async fn drain_pair(
        &self,
        texts: &[String],
        round: usize,
    ) -> anyhow::Result<(Drained, Drained)> {
        let (plain_tag, shadowed_tag) = (format!("tp{round}"), format!("ts{round}"));
        let plain = || drain_backlog(&self.plain, texts, &plain_tag);
        let shadowed = || drain_backlog(&self.shadowed, texts, &shadowed_tag);
        let (p, s) = if plain_first(round) {
            let p = plain().await?;
            (p, shadowed().await?)
        } else {
            let s = shadowed().await?;
            (plain().await?, s)
        };
        check_shadow(None, &p, texts.len())?;
        check_shadow(Some(&self.challenger), &s, texts.len())?;
        Ok((p, s))
    }
}

/// A registry at `root` holding `champion` twice, `v1` the champion and `v2` the
/// challenger when `shadow`; the settings that serve it, and `v2`'s name.
fn side(
    settings: &Settings,
    champion: &ModelVersion,
    root: &Path,
    shadow: bool,
) -> anyhow::Result<(Settings, String)> {
    let registry = Registry::new(root);
    let register = || {
        registry.register(
            &champion.classifier,
            champion.card.clone(),
            &champion.reference,
        )
    };
    let (first, second) = (register()?, register()?);
    let why = "triage bench --shadow: a copy of the configured champion";
    registry.promote(&first, why, Actor::Cli)?;
    if shadow {
        registry.shadow(&second, why, Actor::Cli)?;
    }
    let mut s = settings.clone();
    s.paths.registry_dir = root.to_path_buf();
    s.paths.registry_url = String::new();
    Ok((s, second))
}

impl Drop for Registries {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Round `round` (from 0) drains the plain side first in rounds 1, 3, 5... and the
/// shadowed side first in rounds 2, 4...: a machine that speeds up or slows down
/// during a run then favours neither side.
pub(super) fn plain_first(round: usize) -> bool {
    round.is_multiple_of(2)
}

/// An error unless the run scored a shadow on every message (`challenger` given) or
/// on none (`None`): in the service's count (`triage_shadow_predictions_total`) and
/// in the prediction records read back (their `shadow` field).
pub(super) fn check_shadow(
    challenger: Option<&str>,
    run: &Drained,
    rows: usize,
) -> anyhow::Result<()> {
    let (scored, records) = (run.shadow_scored, run.shadow_records);
    match challenger {
        Some(version) => anyhow::ensure!(
            scored >= rows as u64 && records == rows,
            "the challenger {version} was not scored in shadow on every message: the service \
             counted {scored} shadow predictions (triage_shadow_predictions_total) and {records} \
             of {rows} prediction records carried a `shadow` field; the shadowed figures would \
             not measure a shadow, so the bench stops (the service's log says why a challenger \
             is refused: look for \"refused for shadowing\")"
        ),
        None => anyhow::ensure!(
            scored == 0 && records == 0,
            "the run without a challenger scored a shadow ({scored} shadow predictions, {records} \
             records with a `shadow` field): its registry should have no challenger alias"
        ),
    }
    Ok(())
}

/// The shadow report from each round's pair (plain and shadowed messages/s, and the
/// shadow predictions counted) and the mean stage costs of the plain and the
/// shadowed runs.
pub(super) fn report(
    challenger: &str,
    pairs: &[(f64, f64, u64)],
    plain: &StageCosts,
    shadowed: StageCosts,
) -> ShadowReport {
    let rounds: Vec<ShadowRound> = pairs
        .iter()
        .enumerate()
        .map(|(i, &(plain, shadowed, scored))| ShadowRound {
            first: if plain_first(i) { "plain" } else { "shadowed" },
            plain_per_second: plain,
            shadowed_per_second: shadowed,
            ratio: if plain > 0.0 { shadowed / plain } else { 0.0 },
            shadow_predictions: scored,
        })
        .collect();
    let of = |f: fn(&ShadowRound) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let ratios = of(|r| r.ratio);
    let logs: f64 = ratios.iter().map(|r| r.max(f64::MIN_POSITIVE).ln()).sum();
    let added = shadowed.classify - plain.classify;
    let worker = plain.embed + plain.classify + plain.drift;
    ShadowReport {
        challenger: challenger.to_string(),
        plain_per_second: median(&of(|r| r.plain_per_second)),
        shadowed_per_second: median(&of(|r| r.shadowed_per_second)),
        ratio: median(&ratios),
        ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratio_geometric_mean: (logs / ratios.len().max(1) as f64).exp(),
        stages_ms_per_message: shadowed,
        added_classify_ms_per_message: added,
        added_worker_share: if worker > 0.0 { added / worker } else { 0.0 },
        rounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(shadow_scored: u64, shadow_records: usize) -> Drained {
        Drained {
            throughput: 50.0,
            stages: StageCosts::default(),
            peak_rss: 0.0,
            cpu: Default::default(),
            shadow_scored,
            shadow_records,
        }
    }

    #[test]
    fn rounds_alternate_which_side_drains_first() {
        let firsts: Vec<bool> = (0..4).map(plain_first).collect();
        assert_eq!(firsts, [true, false, true, false]);
    }

    #[test]
    fn a_shadowed_run_must_have_scored_every_message_and_a_plain_run_none() {
        assert!(check_shadow(Some("v2"), &drained(100, 100), 100).is_ok());
        assert!(check_shadow(None, &drained(0, 0), 100).is_ok());
        let err = check_shadow(Some("v2"), &drained(0, 0), 100).unwrap_err();
        assert!(
            err.to_string()
                .contains("the challenger v2 was not scored in shadow"),
            "{err}"
        );
        // Counted but not in the records, or in some records only: not a shadow run.
        assert!(check_shadow(Some("v2"), &drained(100, 0), 100).is_err());
        assert!(check_shadow(Some("v2"), &drained(100, 60), 100).is_err());
        assert!(check_shadow(None, &drained(3, 0), 100).is_err());
    }

    #[test]
    fn the_ratio_is_shadowed_over_plain_per_round_and_its_median() {
        let plain = StageCosts {
            embed: 19.9,
            classify: 0.05,
            drift: 0.05,
            ..StageCosts::default()
        };
        let shadowed = StageCosts {
            classify: 0.09,
            ..plain.clone()
        };
        let r = report(
            "v2",
            &[(50.0, 45.0, 10), (40.0, 40.0, 10), (60.0, 57.0, 10)],
            &plain,
            shadowed,
        );
        let ratios: Vec<f64> = r.rounds.iter().map(|r| r.ratio).collect();
        assert_eq!(ratios, [0.9, 1.0, 0.95]);
        assert_eq!(
            r.rounds.iter().map(|r| r.first).collect::<Vec<_>>(),
            ["plain", "shadowed", "plain"]
        );
        assert_eq!((r.ratio, r.ratio_min), (0.95, 0.9));
        assert_eq!((r.plain_per_second, r.shadowed_per_second), (50.0, 45.0));
        let cube_root = (0.9f64 * 1.0 * 0.95).powf(1.0 / 3.0);
        assert!((r.ratio_geometric_mean - cube_root).abs() < 1e-12);
        // 0.04 ms more classifying on 20 ms of worker time per message.
        assert!((r.added_classify_ms_per_message - 0.04).abs() < 1e-12);
        assert!((r.added_worker_share - 0.002).abs() < 1e-12);
    }

    #[test]
    fn a_slower_second_drain_cancels_out_of_the_geometric_mean() {
        // The same cost (x0.99) in every round, and whichever drains second runs 20%
        // slower: the rounds' ratios swing, their geometric mean does not.
        let pairs: Vec<(f64, f64, u64)> = (0..4)
            .map(|i| {
                if plain_first(i) {
                    (50.0, 50.0 * 0.99 * 0.8, 1)
                } else {
                    (50.0 * 0.8, 50.0 * 0.99, 1)
                }
            })
            .collect();
        let r = report("v2", &pairs, &StageCosts::default(), StageCosts::default());
        assert!((r.ratio_geometric_mean - 0.99).abs() < 1e-12, "{r:?}");
        assert!(r.ratio_min < 0.8);
    }

    #[test]
    fn the_copies_serve_the_champion_one_with_a_challenger_of_its_spec() {
        let source = tempfile::tempdir().unwrap();
        crate::registry::testing::two_versions(&Registry::new(source.path()));
        let mut settings = Settings::default();
        settings.paths.registry_dir = source.path().to_path_buf();
        let copies = Registries::copy(&settings).unwrap();
        let dir = copies.dir.clone();
        let plain = Registry::from_settings(&copies.plain).unwrap();
        let shadowed = Registry::from_settings(&copies.shadowed).unwrap();
        let champion = Registry::new(source.path()).load("champion").unwrap();
        for registry in [&plain, &shadowed] {
            assert_eq!(registry.versions().unwrap(), ["v1", "v2"]);
            let served = registry.load("champion").unwrap();
            assert_eq!(served.card.embedding, champion.card.embedding);
            assert_eq!(served.card.labels, champion.card.labels);
        }
        assert_eq!(plain.aliases().unwrap().challenger, None);
        assert_eq!(copies.challenger, "v2");
        assert_eq!(
            shadowed.aliases().unwrap().challenger.as_deref(),
            Some("v2")
        );
        let challenger = shadowed.load("v2").unwrap();
        assert_eq!(
            crate::inference::shadow_refusal(&shadowed.load("v1").unwrap(), &challenger),
            None
        );
        // The configured registry is untouched, and the copies go with the bench.
        assert_eq!(
            Registry::new(source.path()).aliases().unwrap().challenger,
            None
        );
        drop(copies);
        assert!(!dir.exists());
    }
}
