//! all-MiniLM-L6-v2 (or any BERT-like ONNX model) through fastembed's user-defined model.

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use sha2::{Digest, Sha256};

use super::batching::{embed_grouped, length_batches, padded_tokens};
use super::{EmbedError, Embedder, EmbeddingSpec, runtime};
use crate::checksum::hex;
use crate::config::{BatchingKind, PoolingKind, Settings};

/// Files a model folder must hold.
pub const MODEL_FILES: [&str; 5] = [
    "model.onnx",
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// Embeds with ONNX Runtime; texts are grouped by length into `batch_size` batches.
pub struct OnnxEmbedder {
    model: TextEmbedding,
    spec: EmbeddingSpec,
    batch_size: usize,
    batching: BatchingKind,
    /// Padded size budget per call, in the unit `batching` groups by.
    budget: usize,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("spec", &self.spec)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl OnnxEmbedder {
    /// Loads the runtime and the model named by `settings`. Every missing or unreadable
    /// file is an error that names it and the fix; nothing here panics.
    pub fn load(settings: &Settings) -> Result<Self, EmbedError> {
        // load_many returns one embedder per requested worker, here exactly one.
        Self::load_many(settings, 1).map(|mut one| one.swap_remove(0))
    }

    /// `workers` embedders of the same model, to run side by side: the files are
    /// read and checksummed once, and each gets its own ONNX Runtime session with
    /// [`Settings::threads_per_embedder`] threads.
    pub fn load_many(settings: &Settings, workers: usize) -> Result<Vec<Self>, EmbedError> {
        let e = &settings.embedding;
        let dir = settings.model_dir();
        // Check the model files before the runtime: both errors name their fix, and a
        // missing model is the likelier one after a partial set-up.
        let read = |name: &str| -> Result<Vec<u8>, EmbedError> {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(EmbedError::ModelFileMissing { path });
            }
            std::fs::read(&path).map_err(|source| EmbedError::Io { path, source })
        };
        let [onnx, tokenizer, config, special, tokenizer_config] = MODEL_FILES.map(read);
        let onnx = onnx?;
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: tokenizer?,
            config_file: config?,
            special_tokens_map_file: special?,
            tokenizer_config_file: tokenizer_config?,
        };
        let environment = runtime::environment(&settings.onnx_runtime_path())?;
        let model_sha256 = hex(&Sha256::digest(&onnx));

        let pooling = match e.pooling {
            PoolingKind::Mean => Pooling::Mean,
            PoolingKind::Cls => Pooling::Cls,
        };
        let workers = workers.max(1);
        // Alone and unset: ONNX Runtime's own default (one thread per physical core).
        let threads =
            (workers > 1 || e.threads > 0).then(|| settings.threads_per_embedder(workers));
        let load_err = |reason: String| EmbedError::Load {
            dir: dir.clone(),
            reason,
        };
        let session = || -> Result<Self, EmbedError> {
            let user_model = UserDefinedEmbeddingModel::new(onnx.clone(), tokenizer_files.clone())
                .with_pooling(pooling.clone());
            let mut options = InitOptionsUserDefined::new()
                .with_environment(environment.clone())
                .with_max_length(e.max_length);
            if let Some(threads) = threads {
                options = options.with_intra_threads(threads);
            }
            if !e.spin {
                options = options.with_session_config("session.intra_op.allow_spinning", "0");
            }
            let mut model = TextEmbedding::try_new_from_user_defined(user_model, options)
                .map_err(|err| load_err(err.to_string()))?;
            // One probe tells the dimension and proves the model runs.
            let probe = model
                .embed(["dimension probe"], None)
                .map_err(|err| load_err(err.to_string()))?;
            let dimension = probe.first().map_or(0, Vec::len);
            if dimension == 0 {
                return Err(load_err("the model returned an empty vector".into()));
            }
            Ok(Self {
                model,
                spec: EmbeddingSpec {
                    model_id: e.model_id.clone(),
                    model_sha256: model_sha256.clone(),
                    max_length: e.max_length,
                    dimension,
                    pooling: format!("{:?}", e.pooling).to_lowercase(),
                },
                batch_size: e.batch_size,
                batching: e.batching,
                budget: e.batch_budget(),
            })
        };
        (0..workers).map(|_| session()).collect()
    }

    /// Tokens per text after truncation to `max_length`, special tokens included:
    /// what the model computes on.
    pub fn token_lengths(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        let encodings = self
            .model
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Inference(format!("tokenising: {e}")))?;
        // The tokenizer pads a batch to its longest text; the mask counts real tokens.
        Ok(encodings
            .iter()
            .map(|e| e.get_attention_mask().iter().map(|&m| m as usize).sum())
            .collect())
    }

    /// The lengths batches are planned by: tokens, or bytes.
    fn plan_lengths(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        match self.batching {
            BatchingKind::Tokens => self.token_lengths(texts),
            BatchingKind::Chars => Ok(texts.iter().map(|t| t.len()).collect()),
        }
    }

    /// Real tokens of `texts`, and the tokens the model computes on with this
    /// embedder's batch plan (every batch padded to its longest text).
    pub fn padding(&self, texts: &[&str]) -> Result<(usize, usize), EmbedError> {
        let tokens = self.token_lengths(texts)?;
        let plan = match self.batching {
            BatchingKind::Tokens => tokens.clone(),
            BatchingKind::Chars => self.plan_lengths(texts)?,
        };
        let batches = length_batches(&plan, self.batch_size, self.budget);
        Ok((tokens.iter().sum(), padded_tokens(&batches, &tokens)))
    }
}

impl Embedder for OnnxEmbedder {
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let lengths = self.plan_lengths(texts)?;
        let model = &mut self.model;
        embed_grouped(texts, &lengths, self.batch_size, self.budget, |batch| {
            model
                .embed(batch, Some(batch.len()))
                .map_err(|e| EmbedError::Inference(e.to_string()))
        })
    }

    fn spec(&self) -> &EmbeddingSpec {
        &self.spec
    }

    fn set_max_length(&mut self, max_length: usize) -> Result<(), EmbedError> {
        if max_length == self.spec.max_length {
            return Ok(());
        }
        if !(1..=super::MAX_TOKENS).contains(&max_length) {
            return Err(EmbedError::Inference(format!(
                "embedding.max_length {max_length} is outside 1..={}",
                super::MAX_TOKENS
            )));
        }
        // fastembed applies max_length only as the tokenizer's truncation.
        let tokenizer = &mut self.model.tokenizer;
        let mut truncation = tokenizer.get_truncation().cloned().unwrap_or_default();
        truncation.max_length = max_length;
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| EmbedError::Inference(format!("setting the token length: {e}")))?;
        self.spec.max_length = max_length;
        Ok(())
    }
}
