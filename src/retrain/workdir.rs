//! The retraining job's local work folder (`<registry_dir>/retrain/`): one job at a
//! time on a machine (a lock file naming the job's process), and old runs' files
//! pruned so the folder does not grow without end.
//!
//! The webhook receiver already runs one job at a time in its process; the lock also
//! keeps a `triage retrain` by hand from racing it. It is a local file: with a bucket
//! registry, two machines can still run one job each (their promotions stay safe:
//! alias moves are conditional and a moved champion is never overwritten).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// The lock file's name inside the work folder.
pub const LOCK_FILE: &str = ".job.lock";

/// Held while a job runs; removes its lock file when dropped.
#[derive(Debug)]
pub struct JobLock {
    path: PathBuf,
}

impl JobLock {
    /// Takes the lock in `dir`, or says which process holds it. A lock left by a
    /// process that is gone (a killed job) is taken over.
    pub fn acquire(dir: &Path) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    writeln!(file, "{}", std::process::id())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    if holder.parse::<u32>().is_ok_and(is_running) {
                        return Err(format!(
                            "another retraining job (process {holder}) is running on this machine; its decision will be in `triage models decisions`. If no triage is running, delete {}",
                            path.display()
                        ));
                    }
                    warn!(target: "triage::retrain", lock = %path.display(), holder, "A retraining job's lock was left by a process that is gone: taking it over.");
                    let _ = fs::remove_file(&path);
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(format!(
            "cannot take the retraining lock {}: it keeps coming back; delete it if no triage is running",
            path.display()
        ))
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether a process with this id exists (Linux's /proc; elsewhere assume it does,
/// and the error names the file to delete).
fn is_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Removes the oldest run folders of `dir` beyond the newest `keep`, except those
/// holding one of `protected` (e.g. the training data of the champion and the
/// previous champion, which a later job and a rollback read back). Returns how many
/// were removed.
pub fn prune(dir: &Path, keep: usize, protected: &[PathBuf]) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut runs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    runs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    // Compared as real paths: a card may name its data relative to another folder.
    let protected: Vec<PathBuf> = protected
        .iter()
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    let mut removed = 0;
    for (_, run) in runs.into_iter().skip(keep) {
        let real = fs::canonicalize(&run).unwrap_or_else(|_| run.clone());
        if protected.iter().any(|p| p.starts_with(&real)) {
            continue;
        }
        match fs::remove_dir_all(&run) {
            Ok(()) => removed += 1,
            Err(e) => {
                warn!(target: "triage::retrain", folder = %run.display(), error = %e, "Cannot remove an old retraining run's files.")
            }
        }
    }
    if removed > 0 {
        info!(target: "triage::retrain", removed, keep, "Old retraining runs' files removed (retrain.keep_runs).");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_at_a_time_and_a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = JobLock::acquire(dir.path()).unwrap();
        let err = JobLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.contains(&format!("process {}", std::process::id())) && err.contains(LOCK_FILE),
            "{err}"
        );
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists(), "released on drop");
        let _again = JobLock::acquire(dir.path()).unwrap();
        drop(_again);

        // A pid that cannot be running (beyond Linux's pid_max).
        fs::write(dir.path().join(LOCK_FILE), "4294967295\n").unwrap();
        let taken = JobLock::acquire(dir.path()).unwrap();
        let holder = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(holder.trim(), std::process::id().to_string());
        drop(taken);
    }

    #[test]
    fn pruning_keeps_the_newest_runs_and_the_protected_ones() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
        for i in 0..5u64 {
            let run = dir.path().join(format!("run-{i}"));
            fs::create_dir(&run).unwrap();
            let file = run.join("train.jsonl");
            fs::write(&file, "{}\n").unwrap();
            // Oldest first: run-0 is the oldest.
            let when = base + std::time::Duration::from_secs(i * 10);
            fs::File::open(&run).unwrap().set_modified(when).unwrap();
        }
        fs::write(dir.path().join(LOCK_FILE), "1\n").unwrap();
        let protected = [dir.path().join("run-0/train.jsonl")];
        assert_eq!(prune(dir.path(), 2, &protected), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [LOCK_FILE, "run-0", "run-3", "run-4"]);
        assert_eq!(
            prune(dir.path(), 2, &protected),
            0,
            "nothing more to remove"
        );
        assert_eq!(prune(&dir.path().join("missing"), 2, &[]), 0);
    }
}
