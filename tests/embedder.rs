//! The ONNX embedder with the real all-MiniLM-L6-v2 model (needs `make setup`):
//! token counts, another graph and token length taken after loading, and batching by
//! tokens or by bytes giving the same vectors.

mod common;

use triage::config::{BatchingKind, Settings, Truncation};
use triage::embed::{Embedder, OnnxEmbedder};

fn reviews(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(common::shared("yelp/reviews-5k.jsonl"))
        .expect("../shared/data/yelp/reviews-5k.jsonl");
    text.lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON review");
            v["text"].as_str().expect("a text").to_string()
        })
        .collect()
}

fn embedder(configure: impl FnOnce(&mut Settings)) -> OnnxEmbedder {
    let mut settings = Settings::default();
    configure(&mut settings);
    OnnxEmbedder::load(&settings).expect("the model and runtime (make setup)")
}

#[test]
fn token_lengths_count_special_tokens_and_stop_at_max_length() {
    let e = embedder(|s| s.embedding.max_length = 16);
    let long = "word ".repeat(100);
    let lengths = e
        .token_lengths(&["hello", "hello world", "", &long])
        .unwrap();
    // [CLS] hello [SEP]; [CLS] hello world [SEP]; [CLS] [SEP]; truncated to 16.
    assert_eq!(lengths, [3, 4, 2, 16]);
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0f32, f32::max)
}

#[test]
fn a_loaded_embedder_adopts_another_length_and_graph_as_if_loaded_with_them() {
    let texts = reviews(6);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let cache = Settings::default().cache_dir().join("models");
    let fp32_at_16 = embedder(|s| {
        s.embedding.model_dir = cache.join("all-MiniLM-L6-v2");
        s.embedding.max_length = 16;
    });
    let expected = {
        let mut e = fp32_at_16;
        (e.embed(&refs).unwrap(), e.spec().clone())
    };
    // The default graph (int8, fused attention) at 256 tokens.
    let mut e = embedder(|_| {});
    let loaded = e.spec().clone();
    assert_ne!(loaded.model_sha256, expected.1.model_sha256);
    let int8_at_256 = e.embed(&refs).unwrap();

    // Another length on the same graph.
    let int8_at_16 = spec_with(&loaded, 16);
    e.adopt(&int8_at_16).unwrap();
    assert_eq!(e.token_lengths(&refs).unwrap(), [16; 6]);
    let switched = e.embed(&refs).unwrap();
    assert!(
        max_diff(&switched, &int8_at_256) > 0.01,
        "the reviews are longer than 16 tokens"
    );

    // Another graph, found by checksum in the model cache: the same vectors as an
    // embedder loaded with it.
    e.adopt(&expected.1).unwrap();
    assert_eq!(e.spec(), &expected.1);
    assert_eq!(e.loaded(), &loaded, "what new models are trained on stays");
    let diff = max_diff(&e.embed(&refs).unwrap(), &expected.0);
    assert!(
        diff < 1e-5,
        "differs by {diff} from an embedder loaded with the fp32 graph"
    );

    // Back to the loaded graph; an unknown graph or an impossible length changes nothing.
    e.adopt(&loaded).unwrap();
    assert!(max_diff(&e.embed(&refs).unwrap(), &int8_at_256) < 1e-5);
    let unknown = triage::embed::EmbeddingSpec {
        model_sha256: "0".repeat(64),
        ..loaded.clone()
    };
    let err = e.adopt(&unknown).unwrap_err().to_string();
    assert!(
        err.contains("no embedding graph with checksum 000000000000"),
        "{err}"
    );
    assert!(e.adopt(&spec_with(&loaded, 0)).is_err());
    assert!(e.adopt(&spec_with(&loaded, 513)).is_err());
    assert_eq!(e.spec(), &loaded);
}

#[test]
fn head_tail_truncation_keeps_the_end_of_a_long_text_and_leaves_short_ones_alone() {
    let texts = reviews(40);
    let long = texts
        .iter()
        .find(|t| t.split_whitespace().count() > 300)
        .expect("a long review");
    let short = texts
        .iter()
        .find(|t| t.split_whitespace().count() < 40)
        .expect("a short review");
    let mut head = embedder(|s| s.embedding.max_length = 128);
    let mut head_tail = embedder(|s| {
        s.embedding.max_length = 128;
        s.embedding.truncation = Truncation::HeadTail;
    });
    assert_eq!(head_tail.spec().truncation, Truncation::HeadTail);
    let (a, b) = (
        head.embed(&[long, short]).unwrap(),
        head_tail.embed(&[long, short]).unwrap(),
    );
    assert_eq!(a[1], b[1], "a short text is not cut");
    let cosine: f32 = a[0].iter().zip(&b[0]).map(|(x, y)| x * y).sum();
    assert!(
        cosine < 0.99,
        "the long review's end should change its vector ({cosine})"
    );

    // The same as the text cut by hand: its first 31 and last 95 tokens.
    let ends: Vec<&str> = long.split_whitespace().collect();
    let tail_only = ends[ends.len() - 60..].join(" ");
    let v_tail = head.embed(&[&tail_only]).unwrap();
    let to_tail = |v: &[f32]| -> f32 { v.iter().zip(&v_tail[0]).map(|(x, y)| x * y).sum() };
    assert!(
        to_tail(&b[0]) > to_tail(&a[0]),
        "head_tail is closer to the review's end"
    );

    // A head embedder adopts head_tail from a model card, and back.
    let spec = head_tail.spec().clone();
    head.adopt(&spec).unwrap();
    assert_eq!(head.embed(&[long]).unwrap()[0], b[0]);
}

fn spec_with(
    spec: &triage::embed::EmbeddingSpec,
    max_length: usize,
) -> triage::embed::EmbeddingSpec {
    triage::embed::EmbeddingSpec {
        max_length,
        ..spec.clone()
    }
}

#[test]
fn batching_by_tokens_or_bytes_gives_the_same_vectors_in_input_order() {
    let texts = reviews(24);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let fp32 = Settings::default()
        .cache_dir()
        .join("models/all-MiniLM-L6-v2");
    let by = |kind: BatchingKind| {
        embedder(|s| {
            s.embedding.model_dir = fp32.clone();
            s.embedding.batch_size = 32;
            s.embedding.batching = kind;
            s.embedding.batch_tokens = 600;
            s.embedding.batch_chars = 3000;
        })
        .embed(&refs)
        .unwrap()
    };
    let tokens = by(BatchingKind::Tokens);
    let chars = by(BatchingKind::Chars);
    // One at a time: no padding at all, the reference.
    let mut single = embedder(|s| s.embedding.model_dir = fp32.clone());
    for (i, text) in refs.iter().enumerate() {
        let alone = single.embed(&[text]).unwrap();
        for other in [&tokens[i], &chars[i]] {
            let diff = max_diff(&alone, std::slice::from_ref(other));
            // Padding is masked out; only float summation order differs.
            assert!(diff < 1e-4, "text {i}: vectors differ by {diff}");
        }
    }
}

#[test]
fn on_the_int8_graph_a_vector_depends_on_its_batch_mates_unless_embedded_alone() {
    let texts = reviews(16);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let alone: Vec<Vec<f32>> = {
        let mut e = embedder(|_| {});
        assert_eq!(e.spec().model_sha256.len(), 64);
        refs.iter()
            .map(|t| e.embed(&[t]).unwrap().remove(0))
            .collect()
    };
    // The default (batch_size 1) embeds each text alone whatever the call holds.
    let default = embedder(|_| {}).embed(&refs).unwrap();
    assert_eq!(default, alone);
    // In batches, dynamic quantisation scales a call's activations as a whole.
    let batched = embedder(|s| s.embedding.batch_size = 32)
        .embed(&refs)
        .unwrap();
    let diff = max_diff(&batched, &alone);
    assert!(diff > 1e-3, "batch-mates moved no vector ({diff})");
    for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
        let cosine: f32 = b.iter().zip(a).map(|(x, y)| x * y).sum();
        assert!(cosine > 0.98, "text {i}: cosine {cosine}");
    }
}
