//! The drift reference: statistics of the held-out split, captured at training time,
//! that the drift monitor compares live traffic against.

use ndarray::ArrayView2;
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::mmd::MmdNull;
use super::stats;
use crate::model::Prediction;

/// Counts over fixed bin edges: bin `i` holds `edges[i] <= v < edges[i + 1]`; the last
/// bin also holds values equal to the last edge and beyond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

impl Histogram {
    pub fn new(edges: Vec<f64>, values: impl IntoIterator<Item = f64>) -> Self {
        let bins = edges.len().saturating_sub(1).max(1);
        let mut counts = vec![0u64; bins];
        for v in values {
            let i = edges
                .partition_point(|&e| e <= v)
                .saturating_sub(1)
                .min(bins - 1);
            counts[i] += 1;
        }
        Self { edges, counts }
    }

    /// Shares per bin (sum 1; all zero when empty).
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = self.counts.iter().sum();
        self.counts
            .iter()
            .map(|&c| {
                if total == 0 {
                    0.0
                } else {
                    c as f64 / total as f64
                }
            })
            .collect()
    }
}

/// Character-length bin edges for text-length drift.
pub const TEXT_LENGTH_EDGES: [f64; 10] = [
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Unknown fields are ignored, so references written by older versions (which also
/// kept the held-out row count, a confidence histogram and text-length quantiles)
/// still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// Share of predictions per label (indexed like the model's labels), over the
    /// training and held-out rows: a small held-out split alone makes the mix noisy
    /// enough for PSI to fire on stationary traffic.
    pub class_mix: Vec<f64>,
    pub mean_confidence: f64,
    /// Mean embedding of the held-out split.
    pub embedding_mean: Vec<f32>,
    /// Up to `training.reference_sample_size` held-out embeddings, seeded choice.
    pub sample: Vec<Vec<f32>>,
    /// Text length in characters, over every row of the training file.
    pub text_length: Histogram,
    /// The embedding-drift detector's calibration (absent in references from before
    /// it existed: those models have no embedding-drift detector; retrain them).
    #[serde(default)]
    pub mmd: Option<MmdNull>,
}

/// The training split, for the statistics that need more rows than the held-out.
#[derive(Debug, Clone, Copy)]
pub struct TrainingRows<'a> {
    pub predictions: &'a [Prediction],
    pub features: ArrayView2<'a, f32>,
}

/// How the reference is drawn.
#[derive(Debug, Clone, Copy)]
pub struct ReferencePlan {
    /// Held-out embeddings kept (`training.reference_sample_size`).
    pub sample_size: usize,
    /// Rows per side of the MMD test (`drift.mmd_sample`).
    pub mmd_sample: usize,
    /// MMD² draws without drift for its threshold (`drift.mmd_null_draws`).
    pub mmd_null_draws: usize,
    pub seed: u64,
}

impl DriftReference {
    pub fn build(
        predictions: &[Prediction],
        labels: usize,
        features: ArrayView2<'_, f32>,
        texts: &[&str],
        training: TrainingRows<'_>,
        plan: &ReferencePlan,
    ) -> Self {
        // The same statistics the drift monitor computes on live windows.
        let predicted: Vec<usize> = predictions
            .iter()
            .chain(training.predictions)
            .map(|p| p.label)
            .collect();
        let confidences: Vec<f64> = predictions.iter().map(|p| p.confidence).collect();
        let embedding_mean = features
            .mean_axis(ndarray::Axis(0))
            .map(|m| m.to_vec())
            .unwrap_or_default();
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
        let picked = sample(
            &mut rng,
            features.nrows(),
            plan.sample_size.min(features.nrows()),
        )
        .into_vec();
        // Random order: the MMD test uses the first `mmd_sample` rows.
        let sample: Vec<Vec<f32>> = picked.iter().map(|&i| features.row(i).to_vec()).collect();
        // The calibration pool: the training rows and the held-out rows that the MMD
        // test does not compare against (a bigger pool makes draws more like live
        // windows; see `MmdNull`).
        let in_test: std::collections::HashSet<usize> =
            picked.iter().take(plan.mmd_sample).copied().collect();
        let spare: Vec<usize> = (0..features.nrows())
            .filter(|i| !in_test.contains(i))
            .collect();
        let spare = features.select(ndarray::Axis(0), &spare);
        let pool =
            ndarray::concatenate(ndarray::Axis(0), &[training.features.view(), spare.view()])
                .unwrap_or_else(|_| training.features.to_owned());
        let mmd = MmdNull::calibrate(
            &sample,
            pool.view(),
            plan.mmd_sample,
            plan.mmd_null_draws,
            plan.seed,
        );
        let lengths = texts.iter().map(|t| t.chars().count() as f64);
        Self {
            class_mix: stats::class_mix(&predicted, labels),
            mean_confidence: stats::mean(&confidences),
            embedding_mean,
            sample,
            text_length: Histogram::new(TEXT_LENGTH_EDGES.to_vec(), lengths),
            mmd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn histogram_bins_edges_and_overflow() {
        let h = Histogram::new(vec![0.0, 1.0, 2.0], [0.0, 0.5, 1.0, 1.9, 2.0, 7.0]);
        assert_eq!(h.counts, vec![2, 4]);
        assert_eq!(h.shares(), vec![2.0 / 6.0, 4.0 / 6.0]);
    }

    #[test]
    fn references_with_the_fields_older_versions_wrote_still_load() {
        let old = serde_json::json!({
            "rows": 4,
            "class_mix": [0.5, 0.5],
            "mean_confidence": 0.8,
            "confidence": {"edges": [0.0, 1.0], "counts": [4]},
            "embedding_mean": [0.0],
            "sample": [[0.0]],
            "text_length": {"edges": [0.0, 32.0], "counts": [4]},
            "text_length_quantiles": {"min": 1.0, "p50": 2.0, "p90": 3.0, "max": 4.0},
        });
        let r: DriftReference = serde_json::from_value(old).unwrap();
        assert_eq!(r.class_mix, vec![0.5, 0.5]);
        assert_eq!(r.mmd, None);
    }

    #[test]
    fn reference_statistics_from_predictions() {
        let preds = vec![
            Prediction {
                label: 0,
                confidence: 0.9,
                probabilities: vec![0.9, 0.1],
            },
            Prediction {
                label: 0,
                confidence: 0.7,
                probabilities: vec![0.7, 0.3],
            },
            Prediction {
                label: 1,
                confidence: 0.6,
                probabilities: vec![0.4, 0.6],
            },
            Prediction {
                label: 0,
                confidence: 0.8,
                probabilities: vec![0.8, 0.2],
            },
        ];
        let features = Array2::from_shape_fn((4, 2), |(i, j)| (i * 2 + j) as f32);
        let texts = ["a", "bb", "ccc", &"d".repeat(100)];
        let training = Array2::from_shape_fn((30, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
        let plan = ReferencePlan {
            sample_size: 3,
            mmd_sample: 2,
            mmd_null_draws: 5,
            seed: 42,
        };
        let training_preds = vec![preds[2].clone(); 4];
        let rows = TrainingRows {
            predictions: &training_preds,
            features: training.view(),
        };
        let r = DriftReference::build(&preds, 2, features.view(), &texts, rows, &plan);
        // Class mix over held-out and training predictions: 3 + 0 of label 0 in 8.
        assert_eq!(r.class_mix, vec![0.375, 0.625]);
        // Confidence only from the held-out rows (training rows are overconfident).
        assert!((r.mean_confidence - 0.75).abs() < 1e-12);
        assert_eq!(r.embedding_mean, vec![3.0, 4.0]);
        assert_eq!(r.sample.len(), 3, "bounded by sample size");
        assert_eq!(r.text_length.counts[0], 3);
        assert_eq!(r.text_length.counts[2], 1);
        assert_eq!(r.mmd, None, "two rows a side are too few to calibrate");
    }
}
