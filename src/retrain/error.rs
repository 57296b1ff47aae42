//! Why a retraining job failed. The text is the decision's `reason` (before "; the
//! champion is unchanged"); the cause is a stable key for the decision record and
//! the metrics, so failed runs can be told apart without reading sentences.

use crate::registry::RegistryError;

/// A retraining job's failure, by cause.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// The job could not start: the embedder or the registry did not load.
    #[error("{0}")]
    Start(String),
    /// Another job holds this machine's lock or the bucket's lease.
    #[error("{0}")]
    Locked(String),
    /// Reading or writing the registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The recent features or labels could not be read.
    #[error("{0}")]
    Read(String),
    /// Too few recent rows, or too few of a class, to train and judge.
    #[error("{0}")]
    NotEnoughData(String),
    /// The original training data could not be read.
    #[error("{0}")]
    OriginalData(String),
    /// The run's work folder or files could not be written.
    #[error("{0}")]
    WorkFolder(String),
    /// Fitting the challenger failed.
    #[error("training the challenger failed: {0}")]
    Training(String),
    /// Scoring the models on the held-out slice failed.
    #[error("scoring on the held-out slice failed ({versions}): {reason}")]
    Scoring { versions: String, reason: String },
    /// The champion moved during the run, or the promotion failed.
    #[error("{0}")]
    Promotion(String),
}

impl RetrainError {
    /// The stable key of the cause (`start`, `locked`, `registry`, `read`,
    /// `not_enough_data`, `original_data`, `work_folder`, `training`, `scoring`,
    /// `promotion`): a closed set, fit for a metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Start(_) => "start",
            Self::Locked(_) => "locked",
            Self::Registry(_) => "registry",
            Self::Read(_) => "read",
            Self::NotEnoughData(_) => "not_enough_data",
            Self::OriginalData(_) => "original_data",
            Self::WorkFolder(_) => "work_folder",
            Self::Training(_) => "training",
            Self::Scoring { .. } => "scoring",
            Self::Promotion(_) => "promotion",
        }
    }

    /// Every cause key, for metrics that start at zero.
    pub const CAUSES: [&'static str; 10] = [
        "start",
        "locked",
        "registry",
        "read",
        "not_enough_data",
        "original_data",
        "work_folder",
        "training",
        "scoring",
        "promotion",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_the_reason_and_every_cause_is_listed() {
        let e = RetrainError::Training("no classes".into());
        assert_eq!(e.to_string(), "training the challenger failed: no classes");
        let all = [
            RetrainError::Start(String::new()),
            RetrainError::Locked(String::new()),
            RetrainError::Registry(RegistryError::NothingToRollBack),
            RetrainError::Read(String::new()),
            RetrainError::NotEnoughData(String::new()),
            RetrainError::OriginalData(String::new()),
            RetrainError::WorkFolder(String::new()),
            e,
            RetrainError::Scoring {
                versions: String::new(),
                reason: String::new(),
            },
            RetrainError::Promotion(String::new()),
        ];
        let causes: Vec<&str> = all.iter().map(RetrainError::cause).collect();
        assert_eq!(causes, RetrainError::CAUSES);
    }
}
