//! Sentence embeddings: the [`Embedder`] trait, the ONNX (fastembed) implementation,
//! and the length-grouped batching that keeps padding small.

pub mod batching;
pub mod graphs;
mod onnx;
mod pool;
pub mod profile;
mod runtime;
#[cfg(test)]
pub(crate) mod testing;

use serde::{Deserialize, Serialize};

pub use crate::config::Truncation;

pub use graphs::GraphCatalog;
pub use onnx::OnnxEmbedder;
pub use pool::EmbedderPool;
pub use runtime::RuntimeError;

/// Identifies what produced an embedding; models trained on one are refused by another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    pub model_id: String,
    /// sha256 of the ONNX graph file.
    pub model_sha256: String,
    pub max_length: usize,
    /// Which tokens of a longer text were kept; cards from before it say nothing: head.
    #[serde(default)]
    pub truncation: Truncation,
    pub dimension: usize,
    pub pooling: String,
}

impl EmbeddingSpec {
    /// Why vectors from `self` cannot feed a model trained on `trained`, if they cannot.
    pub fn incompatibility(&self, trained: &EmbeddingSpec) -> Option<String> {
        if let Some(reason) = self.unservable(trained) {
            return Some(reason);
        }
        if self.model_sha256 != trained.model_sha256 {
            return Some(format!(
                "embedding model checksum {} differs from the model's {}",
                short(&self.model_sha256),
                short(&trained.model_sha256)
            ));
        }
        if self.max_length != trained.max_length {
            return Some(format!(
                "embedding.max_length {} differs from the model's {}",
                self.max_length, trained.max_length
            ));
        }
        if self.truncation != trained.truncation {
            return Some(format!(
                "embedding.truncation {:?} differs from the model's {:?}",
                self.truncation, trained.truncation
            ));
        }
        None
    }

    /// [`Self::unservable`] as an error, for [`Embedder::adopt`].
    pub fn check_servable(&self, trained: &EmbeddingSpec) -> Result<(), EmbedError> {
        match self.unservable(trained) {
            Some(reason) => Err(EmbedError::Unservable(reason)),
            None => Ok(()),
        }
    }

    /// Why an embedder like `self` cannot serve a model trained on `trained` even
    /// after [`Embedder::adopt`] (which takes the model's graph, found by checksum,
    /// and its token length), if it cannot: the model id, the dimension and the
    /// pooling must be the model's.
    pub fn unservable(&self, trained: &EmbeddingSpec) -> Option<String> {
        if self.model_id != trained.model_id {
            return Some(format!(
                "embedding model {} differs from the model's {}",
                self.model_id, trained.model_id
            ));
        }
        if !(1..=MAX_TOKENS).contains(&trained.max_length) {
            return Some(format!(
                "the model's embedding.max_length {} is outside 1..={MAX_TOKENS}",
                trained.max_length
            ));
        }
        if self.dimension != trained.dimension {
            return Some(format!(
                "embedding dimension {} differs from the model's {}",
                self.dimension, trained.dimension
            ));
        }
        if self.pooling != trained.pooling {
            return Some(format!(
                "pooling {} differs from the model's {}",
                self.pooling, trained.pooling
            ));
        }
        None
    }
}

/// The longest input the embedding model takes (its position table).
pub const MAX_TOKENS: usize = 512;

pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Why embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "embedding model file {path} is missing; run `make setup` (scripts/setup.sh) to fetch it, or point embedding.model_dir at a folder that has it"
    )]
    ModelFileMissing { path: std::path::PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot load the embedding model from {dir}: {reason}; the files may be corrupt, run `make setup` to fetch them again"
    )]
    Load {
        dir: std::path::PathBuf,
        reason: String,
    },
    #[error("embedding failed: {0}")]
    Inference(String),
    #[error("cannot embed as the model was trained: {0}")]
    Unservable(String),
    #[error(
        "no embedding graph with checksum {} in {searched}; run `make setup` (it makes the fp32, int8 and fused int8 graphs), or point embedding.model_dir at the folder with the graph the model was trained on",
        short(.sha256)
    )]
    GraphNotFound { sha256: String, searched: String },
}

impl EmbedError {
    /// Why a model cannot be embedded as it was trained (another model or shape, or a
    /// graph no folder holds), when that is the error; `None` for I/O and runtime
    /// failures.
    pub fn mismatch(&self) -> Option<String> {
        match self {
            EmbedError::Unservable(reason) => Some(reason.clone()),
            EmbedError::GraphNotFound { .. } => Some(self.to_string()),
            _ => None,
        }
    }
}

/// Turns texts into fixed-size vectors. Takes `&mut self`: one owner, one worker.
pub trait Embedder {
    /// One vector per text, in input order.
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// What produced the vectors.
    fn spec(&self) -> &EmbeddingSpec;
    /// What the embedder was loaded with (the configuration's graph and length): what
    /// new models are trained on.
    fn loaded(&self) -> &EmbeddingSpec;
    /// Embeds from now on as `trained` was embedded: at its token length, and with its
    /// graph (found by checksum) when that is not the current one. A served model is
    /// embedded the way it was trained, whatever the configuration says; on an error
    /// the embedder is unchanged.
    fn adopt(&mut self, trained: &EmbeddingSpec) -> Result<(), EmbedError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EmbeddingSpec {
        EmbeddingSpec {
            model_id: "m".into(),
            model_sha256: "a".repeat(64),
            max_length: 256,
            truncation: Truncation::Head,
            dimension: 384,
            pooling: "mean".into(),
        }
    }

    #[test]
    fn graph_and_token_length_are_adoptable_but_not_the_model_or_its_shape() {
        let trained = spec();
        let shorter = EmbeddingSpec {
            max_length: 128,
            ..spec()
        };
        assert!(shorter.unservable(&trained).is_none());
        let reason = shorter.incompatibility(&trained).unwrap();
        assert!(
            reason.contains("max_length 128 differs from the model's 256"),
            "{reason}"
        );

        let other_graph = EmbeddingSpec {
            model_sha256: "b".repeat(64),
            ..spec()
        };
        assert!(other_graph.unservable(&trained).is_none());
        let reason = other_graph.incompatibility(&trained).unwrap();
        assert!(reason.contains("checksum"), "{reason}");
        let other_pooling = EmbeddingSpec {
            pooling: "cls".into(),
            ..shorter.clone()
        };
        assert!(
            other_pooling
                .unservable(&trained)
                .unwrap()
                .contains("pooling")
        );
        let head_tail = EmbeddingSpec {
            truncation: Truncation::HeadTail,
            ..spec()
        };
        assert!(head_tail.unservable(&trained).is_none());
        assert!(
            head_tail
                .incompatibility(&trained)
                .unwrap()
                .contains("truncation")
        );
        // A card written before the field existed reads as head.
        let mut old = serde_json::to_value(spec()).unwrap();
        old.as_object_mut().unwrap().remove("truncation");
        let old: EmbeddingSpec = serde_json::from_value(old).unwrap();
        assert_eq!(old, trained);

        let too_long = EmbeddingSpec {
            max_length: 4096,
            ..spec()
        };
        assert!(
            shorter
                .unservable(&too_long)
                .unwrap()
                .contains("outside 1..=512")
        );
    }
}
