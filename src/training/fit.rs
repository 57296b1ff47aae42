//! Fitting the model of one version: the embedding model, the optional n-gram
//! model, the blend weight and the decision offsets, each chosen by stratified
//! cross-validation on the training split (the held-out split is never seen here).

use ndarray::ArrayView2;
use tracing::info;

use super::cv::{
    FitRun, FoldData, Plan, Selection, fit_balanced, fixed_folds, fold_rows, select_alpha,
    stratified_folds,
};
use crate::config::Settings;
use crate::model::calibration::{self, Calibrated};
use crate::model::decision::{
    DecisionRule, Scored, blended, blended_macro_f1, choose_weight, tune_offsets,
};
use crate::model::routing::{self, Routing};
use crate::model::{ClassifierError, FitParams, FitWork, Model, Ngrams, Prediction, TextHead};
use crate::registry::card::{HeadSelection, ModelSelection, NgramSelection};

/// The training split, as the fit sees it.
pub struct TrainingSet<'a> {
    pub embeddings: ArrayView2<'a, f32>,
    pub texts: &'a [&'a str],
    pub labels: &'a [usize],
    pub label_names: &'a [String],
}

/// A fitted model, how each part was chosen, and how the final rule (blend and
/// offsets) predicted each training row when that row's fold was held out (empty
/// when no cross-validation ran): what the model does on rows it has not seen,
/// unlike its predictions of the rows it was fitted on.
pub struct Fitted {
    pub model: Model,
    pub selection: ModelSelection,
    pub out_of_fold: Vec<Prediction>,
    /// The calibration measured on the out-of-fold predictions (None without
    /// cross-validation).
    pub calibration: Option<Calibrated>,
    /// The threshold for `review.target_precision` on the out-of-fold predictions.
    pub routing: Option<Routing>,
}

/// Fits a model on the training split and says how each part was chosen.
pub fn fit_model(settings: &Settings, data: &TrainingSet<'_>) -> Result<Fitted, ClassifierError> {
    let t = &settings.training;
    let ngram_settings = &settings.features.ngrams;
    let params = FitParams {
        alpha: t.alphas[0],
        max_iterations: t.max_iterations,
        gradient_tolerance: t.gradient_tolerance,
    };
    let cross_validate =
        t.alphas.len() > 1 || ngram_settings.enabled || t.decision == DecisionRule::MacroF1;
    let folds = stratified_folds(data.labels, t.cv_folds, t.seed);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let select =
        |fold_data: &dyn Fn() -> Vec<FoldData>, name| -> Result<Selection, ClassifierError> {
            if !cross_validate {
                return Ok(Selection {
                    alpha: t.alphas[0],
                    scores: Vec::new(),
                    extended: false,
                    out_of_fold: Vec::new(),
                    start: None,
                    work: FitWork::default(),
                });
            }
            let fold_data = fold_data();
            let plan = Plan {
                alphas: &t.alphas,
                folds: &folds,
                data: &fold_data,
                params,
                balance: t.class_balance,
                seed: t.seed,
                threads,
                name,
            };
            select_alpha(data.labels, data.label_names, &plan)
        };
    // The final fit of a model starts from a fold's model at the chosen alpha.
    let fit = |x: ArrayView2<'_, f32>, sel: &Selection| {
        let run = FitRun {
            params: FitParams {
                alpha: sel.alpha,
                ..params
            },
            balance: t.class_balance,
            seed: t.seed,
            start: sel.start.as_ref(),
            threads,
        };
        let (model, work) = fit_balanced(x, data.labels, data.label_names, &run)?;
        info!(target: "triage::training", iterations = work.iterations, evaluations = work.evaluations, "Final fit.");
        Ok::<_, ClassifierError>(model)
    };

    let emb = select(&|| fixed_folds(data.embeddings, &folds), "embedding model")?;
    let embedding = fit(data.embeddings, &emb)?;
    info!(target: "triage::training", alpha = emb.alpha, "Embedding model fitted.");

    let mut weight = 1.0;
    let mut weight_scores: Vec<Scored> = Vec::new();
    let mut text: Option<(TextHead, Selection)> = None;
    if ngram_settings.enabled {
        // The vocabulary is chosen with the labels: refit it inside every fold.
        let ngram_folds = || {
            (0..t.cv_folds)
                .map(|f| {
                    let (train, held) = fold_rows(&folds, f);
                    let texts = |rows: &[usize]| -> Vec<&str> {
                        rows.iter().map(|&r| data.texts[r]).collect()
                    };
                    let y: Vec<usize> = train.iter().map(|&r| data.labels[r]).collect();
                    let fold_ngrams = Ngrams::fit(&texts(&train), &y, ngram_settings);
                    FoldData {
                        train: fold_ngrams.transform(&texts(&train)),
                        held: fold_ngrams.transform(&texts(&held)),
                    }
                })
                .collect()
        };
        let sel = select(&ngram_folds, "n-gram model")?;
        (weight, weight_scores) = choose_weight(
            data.label_names,
            data.labels,
            &emb.out_of_fold,
            &sel.out_of_fold,
        );
        if weight < 1.0 {
            // Only now the whole split's vocabulary and matrix: not held through CV,
            // and not built at all when the blend drops the n-gram model.
            let ngrams = Ngrams::fit(data.texts, data.labels, ngram_settings);
            info!(target: "triage::training", features = ngrams.dimension(), "N-gram vocabulary built.");
            let classifier = fit(ngrams.transform(data.texts).view(), &sel)?;
            info!(target: "triage::training", alpha = sel.alpha, embedding_weight = weight, "N-gram model fitted.");
            text = Some((TextHead { ngrams, classifier }, sel));
        } else {
            info!(target: "triage::training", "N-grams did not help in cross-validation: embedding model only.");
        }
    }

    let text_oof = text.as_ref().map(|(_, s)| s.out_of_fold.as_slice());
    let offsets = match t.decision {
        DecisionRule::MacroF1 => tune_offsets(
            data.label_names,
            data.labels,
            &emb.out_of_fold,
            text_oof,
            weight,
        ),
        DecisionRule::Argmax => vec![0.0; data.label_names.len()],
    };
    let cv_macro_f1 = cross_validate.then(|| {
        blended_macro_f1(
            data.label_names,
            data.labels,
            &emb.out_of_fold,
            text_oof,
            weight,
            &offsets,
        )
    });
    let selection = ModelSelection {
        class_balance: t.class_balance,
        decision: t.decision,
        cv_folds: if cross_validate { t.cv_folds } else { 0 },
        embedding: HeadSelection {
            alpha: emb.alpha,
            cv_scores: emb.scores,
            grid_extended: emb.extended,
        },
        ngrams: text.as_ref().map(|(head, sel)| NgramSelection {
            features: ngram_settings.clone(),
            vocabulary_size: head.ngrams.dimension(),
            fit: HeadSelection {
                alpha: sel.alpha,
                cv_scores: sel.scores.clone(),
                grid_extended: sel.extended,
            },
        }),
        embedding_weight: weight,
        weight_scores,
        offsets: offsets.clone(),
        cv_macro_f1,
    };
    let out_of_fold = if cross_validate {
        blended(&emb.out_of_fold, text_oof, weight, &offsets).collect()
    } else {
        Vec::new()
    };
    let model = Model::new(embedding, text.map(|(head, _)| head), weight, offsets)
        .map_err(|e| ClassifierError::Fit(e.to_string()))?;
    let (calibration, routing) = calibrate_and_route(settings, data, &out_of_fold).unzip();
    Ok(Fitted {
        model,
        selection,
        out_of_fold,
        calibration,
        routing,
    })
}

/// Fits the calibration on the out-of-fold predictions and chooses the routing
/// threshold on the confidences the model will serve: calibrated when the
/// calibration serves (a temperature is not monotone across rows of several
/// classes, so a threshold chosen on the raw confidences would not keep its
/// promise on the tempered ones), raw otherwise; None without out-of-fold
/// predictions.
fn calibrate_and_route(
    settings: &Settings,
    data: &TrainingSet<'_>,
    out_of_fold: &[Prediction],
) -> Option<(Calibrated, Routing)> {
    if out_of_fold.is_empty() {
        return None;
    }
    let calibrated = calibration::calibrate(out_of_fold, data.labels);
    let served = calibration::served(Some(&calibrated), out_of_fold);
    let routing = routing::route(
        &routing::scored(&served, data.labels),
        data.label_names.len(),
        settings.review.target_precision,
    );
    info!(
        target: "triage::training",
        temperature = format!("{:.3}", calibrated.temperature),
        served = calibrated.served,
        ece_before = format!("{:.4}", calibrated.ece_before),
        ece_temperature = format!("{:.4}", calibrated.ece_temperature),
        ece_isotonic = format!("{:.4}", calibrated.ece_isotonic),
        threshold = format!("{:.4}", routing.global.threshold),
        expected_coverage = format!("{:.3}", routing.global.coverage),
        expected_precision = format!("{:.4}", routing.global.precision),
        "Calibration fitted (out-of-fold), routing threshold chosen on the served confidences."
    );
    Some((calibrated, routing))
}
