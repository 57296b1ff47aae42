//! Tools around the product, beside it rather than inside it: `triage bench`
//! (the service measured end to end through a broker), `triage drift eval` (the
//! drift detectors on replayed traffic) and the console producer and consumer
//! (`triage topics tail`), the replay producer (`triage produce`, which
//! `triage topics send` runs too) and the review queue's order measured on a
//! replay (`triage review-order`). They share [`common`]; the serving modules do
//! not import anything from here.

pub mod bench;
pub mod common;
pub mod drift_eval;
pub mod produce;
pub mod review_order;
pub mod tail;
