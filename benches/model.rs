//! What classifying costs beside the embedding: `Model::predict` on one stream
//! window (64 real reviews) with the embedding model alone and blended with the
//! n-gram model (1,000 and 5,000 n-grams), and the n-gram features alone.
//!
//!   cargo bench --bench model
//!
//! The embeddings are seeded pseudo-random unit vectors: the cost of a logistic
//! regression does not depend on the values, and the bench needs no ONNX Runtime.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array2, Axis};
use triage::model::{Classifier, FitParams, Model, NgramSettings, Ngrams, TextHead};

const WINDOW: usize = 64;
const TRAIN: usize = 2000;
const DIM: usize = 384;

/// Texts and star-derived labels of the first `rows` reviews.
fn reviews(rows: usize) -> (Vec<String>, Vec<usize>) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/yelp/reviews-5k.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the bench needs ../shared beside the repo)",
            path.display()
        )
    });
    text.lines()
        .take(rows)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON review");
            let stars = v["stars"].as_f64().unwrap_or(3.0);
            let label = if stars <= 2.0 {
                0
            } else if stars < 4.0 {
                1
            } else {
                2
            };
            (v["text"].as_str().unwrap_or_default().to_string(), label)
        })
        .unzip()
}

fn embeddings(rows: usize) -> Array2<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut x = Array2::from_shape_fn((rows, DIM), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    });
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row /= norm;
    }
    x
}

fn params() -> FitParams {
    FitParams {
        alpha: 1.0,
        max_iterations: 30,
        gradient_tolerance: 1e-4,
    }
}

fn blended(texts: &[&str], labels: &[usize], embedding: &Classifier, features: usize) -> Model {
    let settings = NgramSettings {
        max_features: features,
        ..NgramSettings::default()
    };
    let ngrams = Ngrams::fit(texts, labels, &settings);
    let names = embedding.labels().to_vec();
    let classifier =
        Classifier::fit(ngrams.transform(texts).view(), labels, names, &params()).expect("fit");
    Model::new(
        embedding.clone(),
        Some(TextHead { ngrams, classifier }),
        0.4,
        vec![0.0; 3],
    )
    .expect("model")
}

fn bench(c: &mut Criterion) {
    let (texts, labels) = reviews(TRAIN + WINDOW);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (train, window) = texts.split_at(TRAIN);
    let x = embeddings(TRAIN + WINDOW);
    let x_train = x.select(Axis(0), &(0..TRAIN).collect::<Vec<_>>());
    let x_window = x.select(Axis(0), &(TRAIN..TRAIN + WINDOW).collect::<Vec<_>>());
    let names: Vec<String> = ["negative", "neutral", "positive"]
        .map(String::from)
        .to_vec();
    let embedding =
        Classifier::fit(x_train.view(), &labels[..TRAIN], names, &params()).expect("fit");
    let alone = Model::new(embedding.clone(), None, 1.0, vec![0.0; 3]).expect("model");
    let with_1000 = blended(train, &labels[..TRAIN], &embedding, 1000);
    let with_5000 = blended(train, &labels[..TRAIN], &embedding, 5000);

    let mut group = c.benchmark_group("classify_window_of_64");
    group.throughput(Throughput::Elements(WINDOW as u64));
    group.bench_function("embedding_model_only", |b| {
        b.iter(|| {
            alone
                .predict(black_box(window), x_window.view())
                .expect("predict")
        })
    });
    group.bench_function("blended_1000_ngrams", |b| {
        b.iter(|| {
            with_1000
                .predict(black_box(window), x_window.view())
                .expect("predict")
        })
    });
    group.bench_function("blended_5000_ngrams", |b| {
        b.iter(|| {
            with_5000
                .predict(black_box(window), x_window.view())
                .expect("predict")
        })
    });
    let ngrams = &with_1000.text_head().expect("text head").ngrams;
    group.bench_function("ngram_features_only_1000", |b| {
        b.iter(|| ngrams.transform(black_box(window)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
