//! Files to labelled examples, and texts to embeddings with a progress bar.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;
use tracing::{info, warn};

use super::LabelledExample;
use super::cache::FeatureCache;
use super::label_rule::LabelRule;
use super::readers::{ReadError, ReadSummary, ReaderSpec, Record, RowError, read_file};
use crate::config::Settings;
use crate::embed::{EmbedError, Embedder};

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("{path} has no usable labelled rows\n{summary}")]
    NoRows {
        path: String,
        summary: Box<ReadSummary>,
    },
}

/// A labelled file after reading: examples, their label set, the read summary, and
/// the fingerprint of the reader settings (for the feature cache).
#[derive(Debug, Clone)]
pub struct LabelledData {
    pub examples: Vec<LabelledExample>,
    pub labels: Vec<String>,
    pub summary: ReadSummary,
    pub reader_fingerprint: String,
}

/// Streams a labelled file through the configured reader and label rule, calling
/// `each` with every usable row and its label. Rows without a label, or with one the
/// rule cannot map, are malformed rows (counted, with lines). Memory stays flat.
pub fn scan_labelled(
    path: &Path,
    settings: &Settings,
    mut each: impl FnMut(Record, String),
) -> Result<ReadSummary, ReadError> {
    let rule = LabelRule::new(&settings.labels);
    let spec = ReaderSpec::new(&settings.data, Some(&settings.labels.field));
    read_file(path, &spec, |record| {
        let Some(value) = &record.label else {
            return Err(RowError::new(
                record.line,
                "missing_label",
                format!("no {:?} value", settings.labels.field),
            ));
        };
        let label = rule
            .apply(value)
            .map_err(|why| RowError::new(record.line, "unknown_label", why.to_string()))?;
        each(record, label);
        Ok(())
    })
}

/// Reads a labelled file into memory (see [`scan_labelled`]) with its label set.
pub fn read_labelled(path: &Path, settings: &Settings) -> Result<LabelledData, FeatureError> {
    let rule = LabelRule::new(&settings.labels);
    let spec = ReaderSpec::new(&settings.data, Some(&settings.labels.field));
    let mut raw: Vec<(String, String, String)> = Vec::new();
    let summary = scan_labelled(path, settings, |record, label| {
        raw.push((record.id, record.text, label));
    })?;
    info!(target: "triage::feature", "{summary}");
    if raw.is_empty() {
        return Err(FeatureError::NoRows {
            path: path.display().to_string(),
            summary: Box::new(summary),
        });
    }
    let labels: Vec<String> = rule.known_labels().unwrap_or_else(|| {
        let seen: BTreeSet<&str> = raw.iter().map(|(_, _, l)| l.as_str()).collect();
        seen.into_iter().map(str::to_string).collect()
    });
    let examples = raw
        .into_iter()
        .map(|(id, text, label)| {
            // The rule only yields labels in `labels`, so the lookup succeeds.
            let index = labels.iter().position(|l| *l == label).unwrap_or(0);
            LabelledExample {
                id,
                text,
                label: index,
            }
        })
        .collect();
    Ok(LabelledData {
        examples,
        labels,
        summary,
        reader_fingerprint: spec.fingerprint(path),
    })
}

/// Embeds `texts` in length-sorted chunks with a progress bar (on a terminal) and a
/// closing log line. With `cache` and `key`, a hit skips embedding and a miss is stored.
pub fn embed_texts(
    embedder: &mut dyn Embedder,
    texts: &[&str],
    cache: Option<(&FeatureCache, &str)>,
) -> Result<(Array2<f32>, EmbedStats), EmbedError> {
    let dim = embedder.spec().dimension;
    if let Some((cache, key)) = cache
        && let Some(features) = cache.load(key, texts.len(), dim)
    {
        info!(target: "triage::feature", rows = texts.len(), "Features loaded from cache.");
        return Ok((
            features,
            EmbedStats {
                rows: texts.len(),
                elapsed: Duration::ZERO,
                cached: true,
            },
        ));
    }

    let started = Instant::now();
    let bar = ProgressBar::new(texts.len() as u64).with_style(
        ProgressStyle::with_template("embedding {bar:40} {pos}/{len} texts  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut features = Array2::<f32>::zeros((texts.len(), dim));
    // Sorting the whole file by length keeps every ONNX batch tightly padded.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    for chunk in order.chunks(256) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let vectors = embedder.embed(&batch)?;
        for (&row, v) in chunk.iter().zip(vectors) {
            features
                .row_mut(row)
                .assign(&ndarray::ArrayView1::from(&v[..]));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let stats = EmbedStats {
        rows: texts.len(),
        elapsed: started.elapsed(),
        cached: false,
    };
    info!(
        target: "triage::feature",
        rows = stats.rows,
        seconds = format!("{:.1}", stats.elapsed.as_secs_f64()),
        per_second = format!("{:.1}", stats.per_second()),
        "Embedded."
    );
    if let Some((cache, key)) = cache
        && let Err(err) = cache.store(key, &features)
    {
        warn!(target: "triage::feature", dir = %cache.dir().display(), error = %err, "Feature cache not written.");
    }
    Ok((features, stats))
}

/// How an embedding run went.
#[derive(Debug, Clone, Copy)]
pub struct EmbedStats {
    pub rows: usize,
    pub elapsed: Duration,
    pub cached: bool,
}

impl EmbedStats {
    pub fn per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.rows as f64 / s } else { 0.0 }
    }
}
