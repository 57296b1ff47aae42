//! What fitting a model version costs as the label count grows: `fit_model` (the
//! cross-validated alpha search, the n-gram model, the blend and the offsets, with
//! the default training settings) on a seeded synthetic training set, then the
//! held-out macro-F1 of the fitted model on rows from the same generator.
//!
//!   cargo bench --bench fit                      # 10,000 x 384 in 77 classes
//!   cargo bench --bench fit -- 2000 384 20       # rows, dimension, classes
//!
//! One fit takes seconds to minutes, so this is a plain timed run, not a criterion
//! loop. The data: class means uniform on the unit sphere, each row its class mean
//! plus Gaussian noise, normalised (like sentence embeddings); each text is a few
//! words of its class's vocabulary mixed with words shared by all classes, so the
//! n-gram model has something to find but not everything.

use std::time::Instant;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use triage::config::Settings;
use triage::model::evaluation::evaluate;
use triage::training::fit::{TrainingSet, fit_model};

/// Noise per dimension, relative to a unit-length class mean: at 384 dimensions
/// and 77 classes this leaves the classes overlapping (macro-F1 well below 1), so
/// the regularisation strength matters.
const NOISE: f32 = 0.25;

struct Synthetic {
    x: Array2<f32>,
    texts: Vec<String>,
    labels: Vec<usize>,
}

fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller: rand without rand_distr.
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

fn normalise(mut x: Array2<f32>) -> Array2<f32> {
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt().max(f32::EPSILON);
        row /= norm;
    }
    x
}

/// Class means: the same for every call with the same seed.
fn means(dim: usize, classes: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    normalise(Array2::from_shape_simple_fn((classes, dim), || {
        gaussian(rng)
    }))
}

fn sample(means: &Array2<f32>, rows: usize, rng: &mut ChaCha8Rng) -> Synthetic {
    let (classes, dim) = means.dim();
    // Class sizes from 1x to 3x: unequal like real intents.
    let weights: Vec<f32> = (0..classes)
        .map(|c| 1.0 + 2.0 * c as f32 / classes as f32)
        .collect();
    let total: f32 = weights.iter().sum();
    let labels: Vec<usize> = (0..rows)
        .map(|_| {
            let mut pick = rng.random_range(0.0..total);
            weights
                .iter()
                .position(|&w| {
                    pick -= w;
                    pick < 0.0
                })
                .unwrap_or(classes - 1)
        })
        .collect();
    let x = Array2::from_shape_fn((rows, dim), |(r, j)| means[[labels[r], j]]);
    let noise = Array2::from_shape_simple_fn((rows, dim), || NOISE * gaussian(rng));
    let texts = labels
        .iter()
        .map(|&c| {
            let words = rng.random_range(4..10);
            (0..words)
                .map(|_| match rng.random_range(0..10) {
                    // Its own intent's words, another intent's, or shared filler.
                    0..=2 => format!("intent{c}word{}", rng.random_range(0..6)),
                    3 => format!(
                        "intent{}word{}",
                        rng.random_range(0..classes),
                        rng.random_range(0..6)
                    ),
                    _ => format!("filler{}", rng.random_range(0..200)),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    Synthetic {
        x: normalise(x + noise),
        texts,
        labels,
    }
}

fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are the positional arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // `cargo test --all-targets` runs this file too, without `--bench`: then a small
    // set, so the test suite checks that it runs without paying for the real size.
    let benching = std::env::args().any(|a| a == "--bench");
    let (rows, dim, classes) = if benching {
        (10_000, 384, 77)
    } else {
        (1_000, 64, 8)
    };
    let (rows, dim, classes) = (
        arg(&args, 0, rows),
        arg(&args, 1, dim),
        arg(&args, 2, classes),
    );
    // The training log: every alpha's score and the work (fits, L-BFGS iterations,
    // gradient evaluations) of each cross-validation, which timing noise does not touch.
    tracing_subscriber::fmt()
        .with_env_filter("triage::training=info")
        .with_writer(std::io::stderr)
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let means = means(dim, classes, &mut rng);
    let train = sample(&means, rows, &mut rng);
    let test = sample(&means, rows / 5, &mut rng);
    let label_names: Vec<String> = (0..classes).map(|c| format!("intent{c}")).collect();
    let texts: Vec<&str> = train.texts.iter().map(String::as_str).collect();
    let settings = Settings::default();
    let data = TrainingSet {
        embeddings: train.x.view(),
        texts: &texts,
        labels: &train.labels,
        label_names: &label_names,
    };
    println!("fit: {rows} rows x {dim} dimensions in {classes} classes, default training settings");
    let started = Instant::now();
    let triage::training::fit::Fitted {
        model, selection, ..
    } = fit_model(&settings, &data).expect("fit");
    let seconds = started.elapsed().as_secs_f64();
    let test_texts: Vec<&str> = test.texts.iter().map(String::as_str).collect();
    let predicted: Vec<usize> = model
        .predict(&test_texts, test.x.view())
        .expect("predict")
        .iter()
        .map(|p| p.label)
        .collect();
    let held_out = evaluate(&label_names, &test.labels, &predicted).macro_f1;
    print!("{}", selection.render());
    println!(
        "fit seconds {seconds:.2}  cv macro-F1 {:.4}  held-out macro-F1 {held_out:.4} ({} rows)",
        selection.cv_macro_f1.unwrap_or(f64::NAN),
        test.labels.len()
    );
}
