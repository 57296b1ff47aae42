//! Late labels: the join of labels that arrive on their own topic with the
//! predictions they belong to, for rolling accuracy and macro-F1 per model version
//! (`join.rs`, pure), checked against each version's card and for classes it never
//! learned (`promise.rs`, pure; the cards read once per version in `cards.rs`), the
//! live race of a champion and its challenger in shadow on the same late-labelled
//! messages (`race.rs`, pure) and the guard's label-free check that a new
//! champion's confidence did not collapse next to the one it replaced
//! (`confidence.rs`, pure), fed from Kafka (`follow.rs`), exported as
//! `triage_performance_*` and `triage_race_*` (`metrics.rs`). `triage retrainer` runs it beside its
//! webhook.

pub mod cards;
pub mod confidence;
pub mod follow;
pub mod join;
pub mod metrics;
pub mod promise;
pub mod race;
