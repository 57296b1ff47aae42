//! The ONNX embedder with the real all-MiniLM-L6-v2 model (needs `make setup`):
//! token counts, a token length set after loading, and batching by tokens or by bytes
//! giving the same vectors.

mod common;

use triage::config::{BatchingKind, Settings};
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

#[test]
fn a_loaded_embedder_takes_another_token_length_as_if_loaded_with_it() {
    let texts = reviews(6);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let loaded_at_16 = embedder(|s| s.embedding.max_length = 16)
        .embed(&refs)
        .unwrap();
    let mut e = embedder(|s| s.embedding.max_length = 128);
    let at_128 = e.embed(&refs).unwrap();
    e.set_max_length(16).unwrap();
    assert_eq!(e.spec().max_length, 16);
    assert_eq!(e.token_lengths(&refs).unwrap(), [16; 6]);
    let switched = e.embed(&refs).unwrap();
    for (i, (a, b)) in switched.iter().zip(&loaded_at_16).enumerate() {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff < 1e-5,
            "text {i}: differs by {diff} from an embedder loaded at 16"
        );
    }
    assert_ne!(
        switched[0], at_128[0],
        "the reviews are longer than 16 tokens"
    );
    assert!(e.set_max_length(0).is_err() && e.set_max_length(513).is_err());
}

#[test]
fn batching_by_tokens_or_bytes_gives_the_same_vectors_in_input_order() {
    let texts = reviews(24);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let by = |kind: BatchingKind| {
        embedder(|s| {
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
    let mut single = embedder(|_| {});
    for (i, text) in refs.iter().enumerate() {
        let alone = &single.embed(&[text]).unwrap()[0];
        for other in [&tokens[i], &chars[i]] {
            let diff = alone
                .iter()
                .zip(other)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // Padding is masked out; only float summation order differs.
            assert!(diff < 1e-4, "text {i}: vectors differ by {diff}");
        }
    }
}
