//! The `[embedding]` section: the sentence-embedding model and how it runs. Owned by
//! `embed`; defined here because `embed` sits above `config` in the dependency order.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

/// The sentence-embedding model and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSettings {
    /// Identifier recorded in model cards; a model trained with another id is refused.
    pub model_id: String,
    /// Folder holding `model.onnx`, `tokenizer.json`, `config.json`,
    /// `special_tokens_map.json` and `tokenizer_config.json`.
    /// Empty: `<cache_dir>/models/all-MiniLM-L6-v2-int8-fused` (int8 weights, per
    /// channel, each layer's attention one node; the int8 graph as exported is in
    /// `<cache_dir>/models/all-MiniLM-L6-v2-int8`, the fp32 one in
    /// `<cache_dir>/models/all-MiniLM-L6-v2`).
    pub model_dir: PathBuf,
    /// ONNX Runtime shared library. Empty: `<cache_dir>/onnxruntime/1.31.1/libonnxruntime.so.1.31.1`.
    pub onnx_runtime_path: PathBuf,
    /// Tokens per text for models trained with these settings; longer texts are
    /// truncated. Serving embeds at the length in the model's card, whatever this is.
    pub max_length: usize,
    /// Which tokens of a longer text are kept, for models trained with these settings
    /// (serving takes the model card's).
    pub truncation: Truncation,
    /// ONNX Runtime intra-op threads per embedder. 0: one per available core, or in
    /// `triage run` the cores split between `stream.workers`.
    pub threads: usize,
    /// Texts per ONNX Runtime call, at most (1: each text alone, its vector
    /// independent of its neighbours). Texts are grouped by length first.
    pub batch_size: usize,
    /// How texts are grouped into ONNX Runtime calls: `tokens` (by token count after
    /// truncation, which is what the model computes on) or `chars` (by byte length,
    /// which needs no tokenising before the batch plan).
    pub batching: BatchingKind,
    /// Padded size budget per call when `batching = "tokens"`: texts x longest text,
    /// in tokens. Long texts go in small batches, short ones in large batches.
    pub batch_tokens: usize,
    /// Padded size budget per call when `batching = "chars"`: texts x longest text, in bytes.
    pub batch_chars: usize,
    /// Let ONNX Runtime's intra-op threads spin while waiting for work (lower latency
    /// per operator, but a spinning thread takes a core from the Kafka and drift threads).
    pub spin: bool,
    /// Pooling of token vectors into one sentence vector: `mean` (right for this model) or `cls`.
    pub pooling: PoolingKind,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        Self {
            model_id: "sentence-transformers/all-MiniLM-L6-v2".into(),
            model_dir: PathBuf::new(),
            onnx_runtime_path: PathBuf::new(),
            max_length: 256,
            truncation: Truncation::Head,
            threads: 0,
            batch_size: 1,
            batching: BatchingKind::Tokens,
            batch_tokens: 512,
            batch_chars: 2048,
            spin: true,
            pooling: PoolingKind::Mean,
        }
    }
}

impl EmbeddingSettings {
    /// The padded size budget per ONNX Runtime call, in the unit `batching` groups by.
    pub fn batch_budget(&self) -> usize {
        match self.batching {
            BatchingKind::Tokens => self.batch_tokens,
            BatchingKind::Chars => self.batch_chars,
        }
    }

    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        let e = self;
        c.check(
            !e.model_id.trim().is_empty(),
            "embedding.model_id",
            || "is empty".into(),
            "name the embedding model, e.g. \"sentence-transformers/all-MiniLM-L6-v2\"",
        );
        c.check(
            (1..=512).contains(&e.max_length),
            "embedding.max_length",
            || format!("{} is outside 1..=512", e.max_length),
            "use 256 (what all-MiniLM-L6-v2 was trained on) or 128 for speed",
        );
        c.check(
            (1..=4096).contains(&e.batch_size),
            "embedding.batch_size",
            || format!("{} is outside 1..=4096", e.batch_size),
            "use 32 to 64 on CPU",
        );
        c.check(
            e.batch_tokens >= 1,
            "embedding.batch_tokens",
            || "is 0".into(),
            "use 512",
        );
        c.check(
            e.batch_chars >= 1,
            "embedding.batch_chars",
            || "is 0".into(),
            "use 2048",
        );
        c.check(
            e.threads <= 256,
            "embedding.threads",
            || format!("{} threads is more than any machine here has", e.threads),
            "use 0 for one thread per core",
        );
        c.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchingKind {
    Tokens,
    Chars,
}

/// Which tokens a text longer than `embedding.max_length` keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// The first tokens.
    #[default]
    Head,
    /// The first quarter and the last three quarters, cut from the middle: a review
    /// often gives its verdict at the end (at 128 tokens, half the macro-F1 that
    /// `head` loses against 256 on Yelp reviews, docs/performance.md).
    HeadTail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingKind {
    Mean,
    Cls,
}
