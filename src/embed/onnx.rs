//! all-MiniLM-L6-v2 (or any BERT-like ONNX model) through fastembed's user-defined model.

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use ort::environment::Environment;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

use super::batching::{embed_grouped, length_batches, padded_tokens};
use super::graphs::GraphCatalog;
use super::{EmbedError, Embedder, EmbeddingSpec, runtime};
use crate::checksum::hex;
use crate::config::{BatchingKind, PoolingKind, Settings, Truncation};

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
    /// The graph and length it was loaded with (the configuration's).
    loaded: EmbeddingSpec,
    plan: Arc<SessionPlan>,
}

/// The session setting that stops intra-op threads spinning between runs
/// (`SessionPlan::spin` false), in the service's sessions and the profiled one.
const NO_SPIN: (&str, &str) = ("session.intra_op.allow_spinning", "0");

/// What every session of one configuration shares, to build more (another graph
/// for a model trained on it) the same way.
struct SessionPlan {
    environment: Environment,
    /// Intra-op threads; `None`: ONNX Runtime's own default.
    threads: Option<usize>,
    spin: bool,
    pooling: PoolingKind,
    model_id: String,
    batch_size: usize,
    batching: BatchingKind,
    /// Padded size budget per call, in the unit `batching` groups by.
    budget: usize,
    graphs: Arc<GraphCatalog>,
}

/// The files of one model folder, read and checksummed.
struct Graph {
    dir: PathBuf,
    onnx: Vec<u8>,
    tokenizer_files: TokenizerFiles,
    sha256: String,
}

impl Graph {
    /// Every missing or unreadable file is an error that names it and the fix.
    fn read(dir: PathBuf) -> Result<Self, EmbedError> {
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
        let sha256 = hex(&Sha256::digest(&onnx));
        Ok(Self {
            dir,
            onnx,
            tokenizer_files,
            sha256,
        })
    }
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("spec", &self.spec)
            .field("batch_size", &self.plan.batch_size)
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
        Self::load_sessions(settings, workers, workers)
    }

    /// One embedder like each of [`Self::load_many`]'s `workers`: a worker's
    /// replacement after it died.
    pub fn load_one_of(settings: &Settings, workers: usize) -> Result<Self, EmbedError> {
        Self::load_sessions(settings, workers, 1).map(|mut one| one.swap_remove(0))
    }

    /// `count` sessions, each with the threads of one of `workers`.
    fn load_sessions(
        settings: &Settings,
        workers: usize,
        count: usize,
    ) -> Result<Vec<Self>, EmbedError> {
        let e = &settings.embedding;
        // Check the model files before the runtime: both errors name their fix, and a
        // missing model is the likelier one after a partial set-up.
        let graph = Graph::read(settings.model_dir())?;
        let environment = runtime::environment(&settings.onnx_runtime_path())?;
        let workers = workers.max(1);
        let graphs = GraphCatalog::for_settings(settings);
        graphs.remember(&graph.dir, &graph.sha256);
        let plan = Arc::new(SessionPlan {
            environment,
            // Alone and unset: ONNX Runtime's own default (one thread per physical core).
            threads: (workers > 1 || e.threads > 0).then(|| settings.threads_per_embedder(workers)),
            spin: e.spin,
            pooling: e.pooling,
            model_id: e.model_id.clone(),
            batch_size: e.batch_size,
            batching: e.batching,
            budget: e.batch_budget(),
            graphs: Arc::new(graphs),
        });
        (0..count.max(1))
            .map(|_| Self::session(&plan, &graph, e.max_length, e.truncation))
            .collect()
    }

    /// One ONNX Runtime session of `graph`, truncating to `max_length` tokens.
    fn session(
        plan: &Arc<SessionPlan>,
        graph: &Graph,
        max_length: usize,
        truncation: Truncation,
    ) -> Result<Self, EmbedError> {
        let load_err = |reason: String| EmbedError::Load {
            dir: graph.dir.clone(),
            reason,
        };
        let pooling = match plan.pooling {
            PoolingKind::Mean => Pooling::Mean,
            PoolingKind::Cls => Pooling::Cls,
        };
        let user_model =
            UserDefinedEmbeddingModel::new(graph.onnx.clone(), graph.tokenizer_files.clone())
                .with_pooling(pooling);
        let mut options = InitOptionsUserDefined::new()
            .with_environment(plan.environment.clone())
            .with_max_length(max_length);
        if let Some(threads) = plan.threads {
            options = options.with_intra_threads(threads);
        }
        if !plan.spin {
            options = options.with_session_config(NO_SPIN.0, NO_SPIN.1);
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
        let spec = EmbeddingSpec {
            model_id: plan.model_id.clone(),
            model_sha256: graph.sha256.clone(),
            max_length,
            truncation,
            dimension,
            pooling: format!("{:?}", plan.pooling).to_lowercase(),
        };
        Ok(Self {
            model,
            loaded: spec.clone(),
            spec,
            plan: plan.clone(),
        })
    }

    /// ONNX Runtime's profile of embedding `texts` one per call, as the service
    /// does, in a session of this embedder's graph, threads and token length made
    /// for it with the profiler on (the trace goes to a file under `dir`, read and
    /// removed here). Returns the trace summed per operator, and the tokens run.
    pub fn profile(
        &self,
        texts: &[&str],
        dir: &std::path::Path,
    ) -> Result<(super::profile::TraceTotals, usize), EmbedError> {
        use ort::session::Session;
        use ort::value::Tensor;
        let err = |e: ort::Error| EmbedError::Inference(format!("profiling: {e}"));
        let graph = Graph::read(self.plan.graphs.find(&self.spec.model_sha256)?)?;
        let mut builder = Session::builder(&self.plan.environment).map_err(err)?;
        if let Some(threads) = self.plan.threads {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| err(e.into()))?;
        }
        if !self.plan.spin {
            builder = builder
                .with_config_entry(NO_SPIN.0, NO_SPIN.1)
                .map_err(|e| err(e.into()))?;
        }
        let mut session = builder
            .with_profiling(dir.join("triage-profile"))
            .map_err(|e| err(e.into()))?
            .commit_from_memory(&graph.onnx)
            .map_err(err)?;
        let names: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let mut tokens = 0;
        for text in texts {
            let encoding = self
                .model
                .tokenizer
                .encode(*text, true)
                .map_err(|e| EmbedError::Inference(format!("tokenising: {e}")))?;
            let n = encoding.len();
            tokens += n;
            let column = |v: &[u32]| -> Result<Tensor<i64>, EmbedError> {
                Tensor::from_array((
                    [1usize, n],
                    v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(),
                ))
                .map_err(err)
            };
            let mut inputs = Vec::new();
            for name in &names {
                let values = match name.as_str() {
                    "input_ids" => column(encoding.get_ids())?,
                    "attention_mask" => column(encoding.get_attention_mask())?,
                    "token_type_ids" => column(encoding.get_type_ids())?,
                    other => {
                        return Err(EmbedError::Inference(format!(
                            "profiling: the graph asks for an input {other:?}"
                        )));
                    }
                };
                inputs.push((
                    std::borrow::Cow::<str>::from(name.clone()),
                    ort::session::SessionInputValue::from(values),
                ));
            }
            session.run(inputs).map_err(err)?;
        }
        let path = session.end_profiling().map_err(err)?;
        let trace = std::fs::read_to_string(&path).map_err(|source| EmbedError::Io {
            path: path.clone().into(),
            source,
        })?;
        let _ = std::fs::remove_file(&path);
        Ok((super::profile::parse_trace(&trace)?, tokens))
    }

    /// The ONNX Runtime environment this embedder's sessions run in.
    pub fn environment(&self) -> &Environment {
        &self.plan.environment
    }

    /// Where this embedder looks for a model's graph: to check before a hot swap
    /// that every worker will find it.
    pub fn graphs(&self) -> Arc<GraphCatalog> {
        self.plan.graphs.clone()
    }

    /// Truncates at `max_length` tokens from now on (fastembed applies its
    /// max_length only as the tokenizer's truncation).
    fn set_max_length(&mut self, max_length: usize) -> Result<(), EmbedError> {
        if max_length == self.spec.max_length {
            return Ok(());
        }
        if !(1..=super::MAX_TOKENS).contains(&max_length) {
            return Err(EmbedError::Unservable(format!(
                "embedding.max_length {max_length} is outside 1..={}",
                super::MAX_TOKENS
            )));
        }
        let tokenizer = &mut self.model.tokenizer;
        let mut truncation = tokenizer.get_truncation().cloned().unwrap_or_default();
        truncation.max_length = max_length;
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| EmbedError::Inference(format!("setting the token length: {e}")))?;
        self.spec.max_length = max_length;
        Ok(())
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

    /// The lengths batches are planned by: tokens, or bytes. One text per call has
    /// nothing to group, so the default (`batch_size` 1) tokenises nothing for it.
    fn plan_lengths(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        if self.plan.batch_size <= 1 {
            return Ok(vec![0; texts.len()]);
        }
        match self.plan.batching {
            BatchingKind::Tokens => self.token_lengths(texts),
            BatchingKind::Chars => Ok(texts.iter().map(|t| t.len()).collect()),
        }
    }

    /// Real tokens of `texts`, and the tokens the model computes on with this
    /// embedder's batch plan (every batch padded to its longest text).
    pub fn padding(&self, texts: &[&str]) -> Result<(usize, usize), EmbedError> {
        let tokens = self.token_lengths(texts)?;
        let plan = match self.plan.batching {
            BatchingKind::Tokens => tokens.clone(),
            BatchingKind::Chars => self.plan_lengths(texts)?,
        };
        let batches = length_batches(&plan, self.plan.batch_size, self.plan.budget);
        Ok((tokens.iter().sum(), padded_tokens(&batches, &tokens)))
    }
}

impl OnnxEmbedder {
    /// With `head_tail` truncation, each text longer than the token budget with its
    /// middle cut out (the tokenizer then sees at most `max_length` tokens); `None`
    /// with `head`, where the tokenizer's own truncation keeps the first tokens.
    fn cut_middles(&mut self, texts: &[&str]) -> Result<Option<Vec<String>>, EmbedError> {
        if self.spec.truncation == Truncation::Head {
            return Ok(None);
        }
        let keep = self.spec.max_length.saturating_sub(2); // [CLS] and [SEP]
        let tokenizer = &mut self.model.tokenizer;
        let saved = tokenizer.get_truncation().cloned();
        let err = |e: Box<dyn std::error::Error + Send + Sync>| {
            EmbedError::Inference(format!("tokenising: {e}"))
        };
        tokenizer.with_truncation(None).map_err(err)?;
        let cut = texts
            .iter()
            .map(|text| {
                let encoding = tokenizer.encode(*text, false)?;
                Ok(keep_head_and_tail(text, encoding.get_offsets(), keep)
                    .unwrap_or_else(|| (*text).to_string()))
            })
            .collect::<Result<Vec<String>, _>>();
        tokenizer.with_truncation(saved).map_err(err)?;
        cut.map(Some).map_err(err)
    }
}

/// `text` less the tokens between its first quarter and its last three quarters of
/// `keep` tokens, the two parts joined by a space; `None` when it has `keep` tokens or
/// fewer. `offsets` are the byte spans of its tokens, special tokens excluded.
fn keep_head_and_tail(text: &str, offsets: &[(usize, usize)], keep: usize) -> Option<String> {
    if offsets.len() <= keep || keep == 0 {
        return None;
    }
    let head = keep / 4;
    let tail = keep - head;
    let head_end = if head == 0 { 0 } else { offsets[head - 1].1 };
    let tail_start = offsets[offsets.len() - tail].0;
    Some(format!(
        "{} {}",
        text.get(..head_end)?,
        text.get(tail_start..)?
    ))
}

impl Embedder for OnnxEmbedder {
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let cut = self.cut_middles(texts)?;
        let cut_refs: Vec<&str>;
        let texts = match &cut {
            Some(cut) => {
                cut_refs = cut.iter().map(String::as_str).collect();
                &cut_refs[..]
            }
            None => texts,
        };
        let lengths = self.plan_lengths(texts)?;
        let model = &mut self.model;
        embed_grouped(
            texts,
            &lengths,
            self.plan.batch_size,
            self.plan.budget,
            |batch| {
                model
                    .embed(batch, Some(batch.len()))
                    .map_err(|e| EmbedError::Inference(e.to_string()))
            },
        )
    }

    fn spec(&self) -> &EmbeddingSpec {
        &self.spec
    }

    fn loaded(&self) -> &EmbeddingSpec {
        &self.loaded
    }

    fn adopt(&mut self, trained: &EmbeddingSpec) -> Result<(), EmbedError> {
        self.spec.check_servable(trained)?;
        if trained.model_sha256 != self.spec.model_sha256 {
            // Another graph: a new session of it, replacing this one only once it runs.
            let graph = Graph::read(self.plan.graphs.find(&trained.model_sha256)?)?;
            let session =
                Self::session(&self.plan, &graph, trained.max_length, trained.truncation)?;
            if let Some(reason) = session.spec.incompatibility(trained) {
                return Err(EmbedError::Unservable(reason));
            }
            let loaded = std::mem::replace(&mut self.loaded, session.loaded.clone());
            *self = session;
            self.loaded = loaded;
            return Ok(());
        }
        self.set_max_length(trained.max_length)?;
        self.spec.truncation = trained.truncation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte spans of the words of `text`: one token per word.
    fn words(text: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    spans.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        spans
    }

    #[test]
    fn a_long_text_keeps_its_first_quarter_and_last_three_quarters() {
        let text = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12";
        // 8 tokens kept of 12: the first 2, the last 6.
        let cut = keep_head_and_tail(text, &words(text), 8).unwrap();
        assert_eq!(cut, "w1 w2 w7 w8 w9 w10 w11 w12");
        assert_eq!(keep_head_and_tail(text, &words(text), 12), None);
        assert_eq!(keep_head_and_tail(text, &words(text), 0), None);
        // Fewer than 4 kept: the tail only.
        assert_eq!(
            keep_head_and_tail(text, &words(text), 3).unwrap(),
            " w10 w11 w12"
        );
        // Multi-byte text is cut on the spans' byte boundaries.
        let text = "été à côté du café où l'on a bu, très bien, merci encore";
        let cut = keep_head_and_tail(text, &words(text), 8).unwrap();
        assert_eq!(cut, "été à a bu, très bien, merci encore");
    }
}
