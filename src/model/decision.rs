//! How the two models' probabilities become one label: a weighted geometric blend
//! (a product of experts), per-label offsets, and the searches that choose the
//! blend weight and the offsets for macro-F1 on cross-validation predictions.

use serde::{Deserialize, Serialize};

use super::evaluation::evaluate;
use super::logistic::{Prediction, argmax};

/// Blends one row: `softmax(w·ln p_e + (1-w)·ln p_t + offsets)`. A zero weight drops
/// its model entirely (so a zero probability there cannot veto), and a label that
/// has probability 0 in a model with weight > 0 keeps probability 0.
pub fn blend(
    embedding: &[f64],
    text: Option<&[f64]>,
    embedding_weight: f64,
    offsets: &[f64],
) -> Prediction {
    let mut scores = blended_scores(embedding, text, embedding_weight, offsets);
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if top.is_finite() {
        scores.iter_mut().for_each(|s| *s = (*s - top).exp());
    } else {
        scores.iter_mut().for_each(|s| *s = 1.0);
    }
    let total: f64 = scores.iter().sum();
    scores.iter_mut().for_each(|s| *s /= total);
    let (label, confidence) = argmax(&scores);
    Prediction {
        label,
        confidence,
        probabilities: scores,
    }
}

/// The blend's log-scores before the softmax: `w·ln p_e + (1-w)·ln p_t + offsets`.
fn blended_scores(
    embedding: &[f64],
    text: Option<&[f64]>,
    embedding_weight: f64,
    offsets: &[f64],
) -> Vec<f64> {
    let w = if text.is_some() {
        embedding_weight
    } else {
        1.0
    };
    (0..embedding.len())
        .map(|k| {
            let mut s = offsets.get(k).copied().unwrap_or(0.0);
            if w > 0.0 {
                s += w * embedding[k].ln();
            }
            if let Some(t) = text
                && w < 1.0
            {
                s += (1.0 - w) * t[k].ln();
            }
            s
        })
        .collect()
}

/// Which decision rule `triage train` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionRule {
    /// The most probable label.
    Argmax,
    /// Per-label offsets tuned on cross-validation predictions to maximise macro-F1.
    MacroF1,
}

/// A candidate value and the macro-F1 it scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub value: f64,
    pub macro_f1: f64,
}

/// Macro-F1 of blended predictions against `truth`.
pub fn blended_macro_f1(
    labels: &[String],
    truth: &[usize],
    embedding: &[Prediction],
    text: Option<&[Prediction]>,
    embedding_weight: f64,
    offsets: &[f64],
) -> f64 {
    let predicted: Vec<usize> = blended(embedding, text, embedding_weight, offsets)
        .map(|p| p.label)
        .collect();
    evaluate(labels, truth, &predicted).macro_f1
}

/// The blend's predictions, row by row, from each model's predictions of the rows.
pub fn blended<'a>(
    embedding: &'a [Prediction],
    text: Option<&'a [Prediction]>,
    embedding_weight: f64,
    offsets: &'a [f64],
) -> impl Iterator<Item = Prediction> + 'a {
    embedding.iter().enumerate().map(move |(i, e)| {
        let t = text.map(|t| t[i].probabilities.as_slice());
        blend(&e.probabilities, t, embedding_weight, offsets)
    })
}

/// Scores blend weights 0, 0.1, ..., 1 and returns the best (the highest weight on
/// ties: the embedding model generalises better to new wording) with every score.
pub fn choose_weight(
    labels: &[String],
    truth: &[usize],
    embedding: &[Prediction],
    text: &[Prediction],
) -> (f64, Vec<Scored>) {
    let zeros = vec![0.0; labels.len()];
    let scores: Vec<Scored> = (0..=10)
        .map(|i| {
            let w = f64::from(i) / 10.0;
            Scored {
                value: w,
                macro_f1: blended_macro_f1(labels, truth, embedding, Some(text), w, &zeros),
            }
        })
        .collect();
    let best = scores.iter().fold(
        scores[0],
        |b, s| if s.macro_f1 >= b.macro_f1 { *s } else { b },
    );
    (best.value, scores)
}

/// Offsets for macro-F1: coordinate search over `-3.0..=3.0` in steps of 0.1 for each
/// label but the first (only differences matter), two passes. A move must raise
/// macro-F1, so all-zero offsets come back when nothing helps.
///
/// The labels are those of [`blend`], computed without it: the blended
/// log-probabilities are computed once, and while one label's offset moves, each
/// row's best other label stays put, so a step costs one pass over the rows instead
/// of a blend of every row and label (at 77 labels, minutes instead of seconds).
pub fn tune_offsets(
    labels: &[String],
    truth: &[usize],
    embedding: &[Prediction],
    text: Option<&[Prediction]>,
    embedding_weight: f64,
) -> Vec<f64> {
    let k_labels = labels.len();
    let zeros = vec![0.0; k_labels];
    // Blended log-scores without offsets, one row per prediction.
    let scores: Vec<Vec<f64>> = embedding
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let t = text.map(|t| t[i].probabilities.as_slice());
            blended_scores(&e.probabilities, t, embedding_weight, &zeros)
        })
        .collect();
    let label_of = |row: &[f64], offsets: &[f64]| -> usize {
        let mut best = (0, f64::NEG_INFINITY);
        for (j, (&s, &o)) in row.iter().zip(offsets).enumerate() {
            if s + o > best.1 {
                best = (j, s + o);
            }
        }
        best.0
    };
    let mut offsets = zeros.clone();
    let predicted: Vec<usize> = scores.iter().map(|r| label_of(r, &offsets)).collect();
    let mut best = evaluate(labels, truth, &predicted).macro_f1;
    for _pass in 0..2 {
        for k in 1..k_labels {
            // Each row's best label other than k (first on ties), with the others' offsets.
            let others: Vec<(usize, f64)> = scores
                .iter()
                .map(|row| {
                    let mut b = (usize::from(k == 0), f64::NEG_INFINITY);
                    for (j, (&s, &o)) in row.iter().zip(&offsets).enumerate() {
                        if j != k && s + o > b.1 {
                            b = (j, s + o);
                        }
                    }
                    b
                })
                .collect();
            for step in -30..=30 {
                let candidate = f64::from(step) / 10.0;
                let predicted: Vec<usize> = scores
                    .iter()
                    .zip(&others)
                    .map(|(row, &(j, v))| {
                        let mine = row[k] + candidate;
                        if mine > v || (mine == v && k < j) {
                            k
                        } else {
                            j
                        }
                    })
                    .collect();
                let s = evaluate(labels, truth, &predicted).macro_f1;
                if s > best + 1e-12 {
                    best = s;
                    offsets[k] = candidate;
                }
            }
        }
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast search finds what blending every row at every step finds.
    #[test]
    fn offsets_match_the_search_by_full_blends() {
        let labels: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let n = 120;
        let truth: Vec<usize> = (0..n).map(|i| (i * 7 + i / 5) % 4).collect();
        let probs = |seed: usize| -> Vec<Prediction> {
            (0..n)
                .map(|i| {
                    let raw: Vec<f64> = (0..4)
                        .map(|k| {
                            0.05 + ((i * 31 + k * 17 + seed) % 13) as f64
                                + 3.0 * f64::from(u8::from(k == truth[i]))
                        })
                        .collect();
                    let total: f64 = raw.iter().sum();
                    pred(&raw.iter().map(|r| r / total).collect::<Vec<_>>())
                })
                .collect()
        };
        let (e, t) = (probs(1), probs(5));
        let fast = tune_offsets(&labels, &truth, &e, Some(&t), 0.6);
        let mut slow = vec![0.0; 4];
        let score = |o: &[f64]| blended_macro_f1(&labels, &truth, &e, Some(&t), 0.6, o);
        let mut best = score(&slow);
        for _ in 0..2 {
            for k in 1..4 {
                for step in -30..=30 {
                    let mut c = slow.clone();
                    c[k] = f64::from(step) / 10.0;
                    let s = score(&c);
                    if s > best + 1e-12 {
                        (best, slow) = (s, c);
                    }
                }
            }
        }
        assert_eq!(fast, slow);
        assert!(fast.iter().any(|&o| o != 0.0), "{fast:?}");
    }

    fn pred(p: &[f64]) -> Prediction {
        let (label, confidence) = argmax(p);
        Prediction {
            label,
            confidence,
            probabilities: p.to_vec(),
        }
    }

    #[test]
    fn blend_is_a_weighted_geometric_mean_renormalised() {
        let p = blend(&[0.8, 0.2], Some(&[0.2, 0.8]), 0.5, &[0.0, 0.0]);
        assert!((p.probabilities[0] - 0.5).abs() < 1e-12);
        let p = blend(&[0.9, 0.1], Some(&[0.5, 0.5]), 0.5, &[0.0, 0.0]);
        // sqrt(.9*.5) / (sqrt(.9*.5) + sqrt(.1*.5)) = 3 / 4
        assert!((p.probabilities[0] - 0.75).abs() < 1e-12);
        assert_eq!(p.label, 0);
    }

    #[test]
    fn weight_one_ignores_the_text_model_even_where_it_says_zero() {
        let p = blend(&[0.6, 0.4], Some(&[0.0, 1.0]), 1.0, &[0.0, 0.0]);
        assert!((p.probabilities[0] - 0.6).abs() < 1e-12);
        let p = blend(&[0.6, 0.4], None, 1.0, &[0.0, 0.0]);
        assert!((p.probabilities[0] - 0.6).abs() < 1e-12);
        // A label absent from training (probability 0) stays at 0.
        let p = blend(&[0.0, 1.0], Some(&[0.0, 1.0]), 0.5, &[0.0, 0.0]);
        assert_eq!(p.probabilities, vec![0.0, 1.0]);
    }

    #[test]
    fn offsets_shift_the_decision_and_the_probabilities() {
        let p = blend(&[0.6, 0.4], None, 1.0, &[0.0, (0.6f64 / 0.4).ln() + 0.1]);
        assert_eq!(p.label, 1);
        assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn tuned_offsets_recover_a_rare_class_the_argmax_never_picks() {
        let labels: Vec<String> = vec!["common".into(), "rare".into()];
        // The rare class always gets 0.3-0.45: argmax never predicts it.
        let mut truth = Vec::new();
        let mut preds = Vec::new();
        for i in 0..100 {
            let rare = i % 5 == 0;
            truth.push(usize::from(rare));
            let p = if rare { 0.45 } else { 0.3 };
            preds.push(pred(&[1.0 - p, p]));
        }
        let zeros = [0.0, 0.0];
        let before = blended_macro_f1(&labels, &truth, &preds, None, 1.0, &zeros);
        let offsets = tune_offsets(&labels, &truth, &preds, None, 1.0);
        let after = blended_macro_f1(&labels, &truth, &preds, None, 1.0, &offsets);
        assert!(before < 0.5, "{before}");
        assert_eq!(after, 1.0, "offsets {offsets:?}");
        assert_eq!(offsets[0], 0.0);
    }

    #[test]
    fn weight_search_finds_the_informative_model() {
        let labels: Vec<String> = vec!["a".into(), "b".into()];
        let truth = vec![0, 1, 0, 1];
        // Always says "a" with 0.9: outweighs the good model's 0.7 unless w < 0.28.
        let useless: Vec<Prediction> = (0..4).map(|_| pred(&[0.9, 0.1])).collect();
        let good: Vec<Prediction> = truth
            .iter()
            .map(|&t| pred(if t == 0 { &[0.7, 0.3] } else { &[0.3, 0.7] }))
            .collect();
        let (w, scores) = choose_weight(&labels, &truth, &useless, &good);
        assert_eq!(scores.len(), 11);
        // 0, 0.1 and 0.2 all score 1.0: the highest of them wins.
        assert_eq!(w, 0.2);
        assert_eq!(scores.iter().find(|s| s.value == w).unwrap().macro_f1, 1.0);
    }
}
