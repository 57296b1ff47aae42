//! Tools around the product, beside it rather than inside it: `triage bench`
//! (the service measured end to end through a broker), `triage drift eval` (the
//! drift detectors on replayed traffic) and the console producer and consumer
//! (`triage topics send` / `tail`). They share [`common`]; the serving modules do
//! not import anything from here.

pub mod bench;
pub mod common;
pub mod console;
pub mod drift_eval;
