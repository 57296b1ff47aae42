//! A deterministic embedder for the tests of everything above `embed`: no ONNX
//! Runtime, no model files, and failures on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{EmbedError, Embedder, EmbeddingSpec};

/// What the fake embedder says it is.
pub fn embed_spec_for_tests() -> EmbeddingSpec {
    EmbeddingSpec {
        model_id: "fake-bag-of-words".into(),
        model_sha256: "0".repeat(64),
        max_length: 64,
        truncation: crate::config::Truncation::Head,
        dimension: 12,
        pooling: "sum".into(),
    }
}

/// Words that carry each class in the fake embedding.
pub const NEGATIVE: &[&str] = &["awful", "cold", "rude", "dirty", "slow"];
pub const POSITIVE: &[&str] = &["great", "lovely", "friendly", "tasty", "fast"];

/// Embeds by counting class words (two dimensions) plus a hashed word spread
/// (the rest) among the first `max_length` words, so a logistic regression
/// separates the classes. A text containing
/// `POISON` fails, as a corrupt input can fail a real embedder, and one containing
/// `PANIC` panics its worker; [`Faults`] make every call fail or panic, as a broken
/// runtime would.
pub struct FakeEmbedder {
    spec: EmbeddingSpec,
    loaded: EmbeddingSpec,
    faults: Arc<Faults>,
}

/// Failures of our own, shared by the fake embedders of a test.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next this many calls panic.
    pub panics: AtomicUsize,
    /// While set, every call fails.
    pub down: AtomicBool,
}

impl FakeEmbedder {
    pub fn new() -> Self {
        Self::with_faults(Arc::default())
    }

    pub fn with_faults(faults: Arc<Faults>) -> Self {
        Self {
            spec: embed_spec_for_tests(),
            loaded: embed_spec_for_tests(),
            faults,
        }
    }
}

impl Embedder for FakeEmbedder {
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(EmbedError::Inference("the runtime is down".into()));
        }
        let panic_now = self
            .faults
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if panic_now || texts.iter().any(|t| t.contains("PANIC")) {
            panic!("the fake embedder panics (as a runtime fault would)");
        }
        texts
            .iter()
            .map(|t| {
                if t.contains("POISON") {
                    return Err(EmbedError::Inference(format!("cannot embed {t:?}")));
                }
                let mut v = vec![0.0f32; self.spec.dimension];
                // Truncated like a real embedder, at one token per word.
                for word in t.split_whitespace().take(self.spec.max_length) {
                    let w = word.to_lowercase();
                    if NEGATIVE.contains(&w.as_str()) {
                        v[0] += 1.0;
                    } else if POSITIVE.contains(&w.as_str()) {
                        v[1] += 1.0;
                    } else {
                        let h = w
                            .bytes()
                            .fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
                        v[2 + (h as usize) % (self.spec.dimension - 2)] += 0.5;
                    }
                }
                Ok(v)
            })
            .collect()
    }

    fn spec(&self) -> &EmbeddingSpec {
        &self.spec
    }

    fn loaded(&self) -> &EmbeddingSpec {
        &self.loaded
    }

    /// Takes any token length; has one graph only.
    fn adopt(&mut self, trained: &EmbeddingSpec) -> Result<(), EmbedError> {
        self.spec.check_servable(trained)?;
        if trained.model_sha256 != self.spec.model_sha256 {
            return Err(EmbedError::GraphNotFound {
                sha256: trained.model_sha256.clone(),
                searched: "the fake embedder".into(),
            });
        }
        self.spec.max_length = trained.max_length;
        self.spec.truncation = trained.truncation;
        Ok(())
    }
}
