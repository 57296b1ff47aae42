//! The retraining job (`triage retrain`, or `triage retrainer` on an alert): recent
//! labelled feature records -> a challenger -> judged against the champion on the
//! same held-out slice -> promoted or not, with a decision recorded either way. The
//! run (`job.rs`), its data as plain functions (`collect.rs`), the promotion rule
//! (`verdict.rs`), its work folder, lock and pruning (`workdir.rs`), its errors by
//! cause (`error.rs`).

pub mod collect;
pub mod error;
pub mod job;
pub mod verdict;
pub mod workdir;
