//! Word n-gram TF-IDF features: the lexical signal beside the sentence embedding.
//!
//! Fitted on the training split (vocabulary and inverse document frequencies) and
//! stored inside the model, so inference computes exactly the features the model
//! was trained on. Tokens are lower-cased runs of two or more letters or digits;
//! n-grams join consecutive tokens with a space. Term weights are `1 + ln(tf)`
//! (sublinear) times the smoothed idf `ln((1 + n) / (1 + df)) + 1`, and each row is
//! scaled to unit length: the usual TF-IDF recipe for linear text classifiers.

use std::collections::{BTreeMap, HashMap};

use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// N-grams considered for selection at most (the most frequent), bounding the
/// memory of fitting on large files.
pub const CANDIDATES: usize = 100_000;

/// How the n-gram features are built. Part of the `[features.ngrams]` settings and
/// of the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NgramSettings {
    /// Train a second logistic regression on n-gram features and blend it with the
    /// embedding model (weight chosen by cross-validation).
    pub enabled: bool,
    /// Shortest and longest n-gram, in words.
    pub min_n: usize,
    pub max_n: usize,
    /// Keep the n-grams most associated with the labels (chi-squared), at most this
    /// many: the feature dimension.
    pub max_features: usize,
    /// Drop n-grams found in fewer training texts than this.
    pub min_df: usize,
}

impl NgramSettings {
    /// Every problem with these settings, as (key, what is wrong, the fix); empty: fine.
    pub fn problems(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut out = Vec::new();
        if !(1..=5).contains(&self.min_n) {
            out.push((
                "features.ngrams.min_n",
                format!("{} is outside 1..=5", self.min_n),
                "use 1 (words) or 2",
            ));
        }
        if self.max_n < self.min_n || self.max_n > 5 {
            out.push((
                "features.ngrams.max_n",
                format!("{} is below min_n = {} or above 5", self.max_n, self.min_n),
                "use min_n <= max_n <= 5, e.g. min_n = 1, max_n = 2",
            ));
        }
        if !(1..=200_000).contains(&self.max_features) {
            out.push((
                "features.ngrams.max_features",
                format!("{} is outside 1..=200000", self.max_features),
                "use 1000 (each feature costs a column in a dense matrix while training)",
            ));
        }
        if self.min_df < 1 {
            out.push((
                "features.ngrams.min_df",
                "is 0".into(),
                "use 2 to drop n-grams seen in one text only",
            ));
        }
        out
    }
}

impl Default for NgramSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_n: 1,
            max_n: 2,
            max_features: 1000,
            min_df: 2,
        }
    }
}

/// A fitted n-gram vocabulary with its idf weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct Ngrams {
    min_n: usize,
    max_n: usize,
    /// Column order of the features.
    vocabulary: Vec<String>,
    idf: Vec<f32>,
    index: HashMap<String, usize>,
}

/// What is written to `model.json`: the lookup table is rebuilt on load.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    min_n: usize,
    max_n: usize,
    vocabulary: Vec<String>,
    idf: Vec<f32>,
}

impl From<Ngrams> for Stored {
    fn from(n: Ngrams) -> Self {
        Self {
            min_n: n.min_n,
            max_n: n.max_n,
            vocabulary: n.vocabulary,
            idf: n.idf,
        }
    }
}

/// Why a stored n-gram vocabulary was refused.
#[derive(Debug, thiserror::Error)]
pub enum NgramsError {
    #[error("{ngrams} n-grams but {idf} idf weights")]
    IdfLength { ngrams: usize, idf: usize },
    #[error("n-gram lengths {min_n}..={max_n} make no sense")]
    Lengths { min_n: usize, max_n: usize },
}

impl TryFrom<Stored> for Ngrams {
    type Error = NgramsError;

    fn try_from(s: Stored) -> Result<Self, NgramsError> {
        if s.vocabulary.len() != s.idf.len() {
            return Err(NgramsError::IdfLength {
                ngrams: s.vocabulary.len(),
                idf: s.idf.len(),
            });
        }
        if s.min_n == 0 || s.max_n < s.min_n {
            return Err(NgramsError::Lengths {
                min_n: s.min_n,
                max_n: s.max_n,
            });
        }
        Ok(Self::new(s.min_n, s.max_n, s.vocabulary, s.idf))
    }
}

impl Ngrams {
    /// Learns the vocabulary from `texts` and their `labels`: among n-grams in at least
    /// `min_df` texts (the [`CANDIDATES`] most frequent), the `max_features` most
    /// associated with the labels by the chi-squared statistic of their TF-IDF weight
    /// per class (scikit-learn's `SelectKBest(chi2)`). Ties go by frequency, then by
    /// the n-gram itself, so the same data always gives the same vocabulary.
    pub fn fit(texts: &[&str], labels: &[usize], settings: &NgramSettings) -> Self {
        let (min_n, max_n) = (settings.min_n.max(1), settings.max_n.max(settings.min_n));
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        let mut docs: Vec<HashMap<String, u32>> = Vec::with_capacity(texts.len());
        for text in texts {
            let mut seen: HashMap<String, u32> = HashMap::new();
            for_each_ngram(text, min_n, max_n, |g| *seen.entry(g).or_default() += 1);
            for (g, &c) in &seen {
                let entry = counts.entry(g.clone()).or_default();
                entry.0 += u64::from(c);
                entry.1 += 1;
            }
            docs.push(seen);
        }
        let mut candidates: Vec<(String, u64, u64)> = counts
            .into_iter()
            .filter(|(_, (_, df))| *df >= settings.min_df as u64)
            .map(|(g, (total, df))| (g, total, df))
            .collect();
        candidates.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        candidates.truncate(CANDIDATES);
        let n = texts.len() as f64;
        let idf: Vec<f32> = candidates
            .iter()
            .map(|(_, _, df)| (((1.0 + n) / (1.0 + *df as f64)).ln() + 1.0) as f32)
            .collect();
        let index: HashMap<&str, usize> = candidates
            .iter()
            .enumerate()
            .map(|(i, (g, _, _))| (g.as_str(), i))
            .collect();

        // Per-class sums of unit-length TF-IDF rows over the candidates.
        let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
        let mut observed = vec![vec![0.0f64; candidates.len()]; classes];
        let mut row: Vec<(usize, f32)> = Vec::new();
        for (doc, &label) in docs.iter().zip(labels) {
            row.clear();
            row.extend(doc.iter().filter_map(|(g, &c)| {
                let i = *index.get(g.as_str())?;
                Some((i, (1.0 + (c as f32).ln()) * idf[i]))
            }));
            // Summed in index order: HashMap order would change the f32 norm's last
            // bit from run to run, and with it, now and then, a selection.
            row.sort_unstable_by_key(|&(i, _)| i);
            let norm = row.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                for &(i, v) in &row {
                    observed[label][i] += f64::from(v / norm);
                }
            }
        }
        let mut class_share = vec![0.0f64; classes];
        for &label in labels {
            class_share[label] += 1.0 / n;
        }
        let chi2: Vec<f64> = (0..candidates.len())
            .map(|j| {
                let total: f64 = observed.iter().map(|o| o[j]).sum();
                (0..classes)
                    .map(|k| {
                        let expected = class_share[k] * total;
                        if expected > 0.0 {
                            (observed[k][j] - expected).powi(2) / expected
                        } else {
                            0.0
                        }
                    })
                    .sum()
            })
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        // Candidates are sorted by frequency, then n-gram: a stable sort keeps that on ties.
        order.sort_by(|&a, &b| chi2[b].total_cmp(&chi2[a]));
        order.truncate(settings.max_features);
        let vocabulary = order.iter().map(|&i| candidates[i].0.clone()).collect();
        let idf = order.iter().map(|&i| idf[i]).collect();
        Self::new(min_n, max_n, vocabulary, idf)
    }

    fn new(min_n: usize, max_n: usize, vocabulary: Vec<String>, idf: Vec<f32>) -> Self {
        let index = vocabulary
            .iter()
            .enumerate()
            .map(|(i, g)| (g.clone(), i))
            .collect();
        Self {
            min_n,
            max_n,
            vocabulary,
            idf,
            index,
        }
    }

    /// Number of features (columns).
    pub fn dimension(&self) -> usize {
        self.vocabulary.len()
    }

    pub fn vocabulary(&self) -> &[String] {
        &self.vocabulary
    }

    /// The feature rows of `texts`: one unit-length (or all-zero) row per text.
    pub fn transform(&self, texts: &[&str]) -> Array2<f32> {
        let mut x = Array2::<f32>::zeros((texts.len(), self.dimension()));
        // Ordered, so the norm sums in the same order in every process.
        let mut tf: BTreeMap<usize, u32> = BTreeMap::new();
        for (text, mut row) in texts.iter().zip(x.rows_mut()) {
            tf.clear();
            for_each_ngram(text, self.min_n, self.max_n, |g| {
                if let Some(&i) = self.index.get(&g) {
                    *tf.entry(i).or_default() += 1;
                }
            });
            let mut norm = 0.0f32;
            for (&i, &c) in &tf {
                let v = (1.0 + (c as f32).ln()) * self.idf[i];
                row[i] = v;
                norm += v * v;
            }
            if norm > 0.0 {
                let inv = norm.sqrt().recip();
                for &i in tf.keys() {
                    row[i] *= inv;
                }
            }
        }
        x
    }
}

/// Calls `f` with every n-gram of `text`, `min_n..=max_n` words long.
fn for_each_ngram(text: &str, min_n: usize, max_n: usize, mut f: impl FnMut(String)) {
    let lower = text.to_lowercase();
    let tokens: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.chars().nth(1).is_some())
        .collect();
    for n in min_n..=max_n {
        for window in tokens.windows(n) {
            f(window.join(" "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_gives_the_same_bits_every_time() {
        let texts: Vec<String> = (0..40)
            .map(|i| format!("order {i} was late and the driver never called back about parcel {i} or the refund"))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let model = Ngrams::fit(&refs, &labels, &settings(200, 1));
        let first = model.transform(&refs);
        for _ in 0..30 {
            let again = Ngrams::fit(&refs, &labels, &settings(200, 1));
            assert_eq!(again.transform(&refs), first);
        }
    }

    fn settings(max_features: usize, min_df: usize) -> NgramSettings {
        NgramSettings {
            enabled: true,
            min_n: 1,
            max_n: 2,
            max_features,
            min_df,
        }
    }

    #[test]
    fn tokens_are_lower_cased_words_of_two_or_more_characters() {
        let mut got = Vec::new();
        for_each_ngram("Not GOOD, a 10/10 don't!", 1, 2, |g| got.push(g));
        assert_eq!(
            got,
            [
                "not", "good", "10", "10", "don", "not good", "good 10", "10 10", "10 don"
            ]
        );
    }

    #[test]
    fn vocabulary_keeps_ngrams_that_tell_the_labels_apart() {
        let texts = [
            "good food",
            "good service",
            "bad food",
            "bad service",
            "food",
        ];
        let labels = [1, 1, 0, 0, 0];
        // min_df 2 drops the bigrams; "food" and "service" are in both classes.
        let ngrams = Ngrams::fit(&texts, &labels, &settings(2, 2));
        let mut got = ngrams.vocabulary().to_vec();
        got.sort();
        assert_eq!(got, ["bad", "good"]);
        let all = Ngrams::fit(&texts, &labels, &settings(10, 2));
        assert_eq!(all.dimension(), 4, "{:?}", all.vocabulary());
    }

    #[test]
    fn rows_are_tf_idf_weighted_and_unit_length() {
        let texts = ["good food", "good service", "bad food", "food"];
        let ngrams = Ngrams::fit(&texts, &[1, 1, 0, 0], &settings(10, 1));
        let x = ngrams.transform(&["good good food", "nothing known here"]);
        let norm: f32 = x.row(0).iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-6);
        assert!(
            x.row(1).iter().all(|&v| v == 0.0),
            "unknown words give a zero row"
        );
        let col = |g: &str| ngrams.vocabulary().iter().position(|v| v == g).unwrap();
        // good: tf 2 (1 + ln 2), idf ln(5/3)+1; food: tf 1, idf ln(5/4)+1.
        let good = (1.0 + 2f32.ln()) * ((5.0f32 / 3.0).ln() + 1.0);
        let food = (5.0f32 / 4.0).ln() + 1.0;
        let ratio = x[[0, col("good")]] / x[[0, col("food")]];
        assert!((ratio - good / food).abs() < 1e-5);
        assert_eq!(x[[0, col("good service")]], 0.0);
    }

    #[test]
    fn json_round_trip_gives_the_same_features() {
        let texts = ["good food", "good service", "bad food"];
        let ngrams = Ngrams::fit(&texts, &[1, 1, 0], &settings(10, 1));
        let json = serde_json::to_string(&ngrams).unwrap();
        let back: Ngrams = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ngrams);
        assert_eq!(
            back.transform(&["bad service"]),
            ngrams.transform(&["bad service"])
        );
    }

    #[test]
    fn damaged_vocabulary_is_refused_on_load() {
        let json = r#"{"min_n":1,"max_n":2,"vocabulary":["a","b"],"idf":[1.0]}"#;
        let err = serde_json::from_str::<Ngrams>(json).unwrap_err();
        assert!(
            err.to_string().contains("2 n-grams but 1 idf weights"),
            "{err}"
        );
    }

    #[test]
    fn each_ngram_setting_problem_names_its_own_key() {
        assert!(NgramSettings::default().problems().is_empty());
        let s = NgramSettings {
            min_n: 2,
            max_n: 1,
            min_df: 0,
            ..NgramSettings::default()
        };
        let keys: Vec<_> = s.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(keys, ["features.ngrams.max_n", "features.ngrams.min_df"]);
    }
}
