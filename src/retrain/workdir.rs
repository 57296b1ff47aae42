//! The retraining job's local work folder (`<registry_dir>/retrain/`): one job at a
//! time on a machine (an advisory lock on a lock file naming the job's process), a
//! folder per run with its rows as JSON lines (the files a challenger is trained and
//! judged on, read back as any labelled data file), and old runs' files pruned so the
//! folder does not grow without end.
//!
//! The lock is the kernel's (`flock`, through [`std::fs::File::try_lock`]), not the
//! file's existence: it goes with the process that held it, however it ended, so a
//! lock is never stale. (A lock judged by the PID in the file waited forever in a
//! container, where the restarted retrainer is PID 1 again, as was the dead holder.)
//!
//! The webhook receiver already runs one job at a time in its process; the lock also
//! keeps a `triage retrain` by hand from racing it. It is a local file: with a bucket
//! registry, two machines can still run one job each (their promotions stay safe:
//! alias moves are conditional and a moved champion is never overwritten).

use super::collect::Example;
use super::error::RetrainError;
use std::fs;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// The lock file's name inside the work folder.
pub const LOCK_FILE: &str = ".job.lock";

/// Held while a job runs; the kernel releases it when dropped or when the process
/// ends. The file stays (removing it would let a process that opened it just before
/// lock a file no one else sees); it names the last holder.
#[derive(Debug)]
pub struct JobLock {
    _file: fs::File,
}

impl JobLock {
    /// Takes the lock in `dir`, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, RetrainError> {
        let io = |what: &str, path: &Path, e: std::io::Error| {
            RetrainError::WorkFolder(format!("cannot {what} {}: {e}", path.display()))
        };
        fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() { "unknown" } else { holder };
                return Err(RetrainError::Locked(format!(
                    "another retraining job (process {holder}) is running on this machine and holds the lock on {}; its decision will be in `triage models decisions`",
                    path.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(RetrainError::WorkFolder(format!(
                    "cannot lock {}: {e}; the work folder must be on a file system with advisory locks (a local disk or volume)",
                    path.display()
                )));
            }
        }
        let left = fs::read_to_string(&path).unwrap_or_default();
        if !left.trim().is_empty() {
            info!(target: "triage::retrain", lock = %path.display(), previous = left.trim(), "Retraining lock taken (the previous holder is gone).");
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        if let Err(e) = written {
            // The lock holds all the same; only the name of the holder is missing.
            warn!(target: "triage::retrain", lock = %path.display(), error = %e, "Cannot write the process id into the retraining lock file.");
        }
        Ok(Self { _file: file })
    }
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

/// Creates a new folder for a run under `base`: `name`, or `name-2`, `name-3`...
/// when taken. Returns the name given and the folder.
pub fn run_folder(base: &Path, name: &str) -> Result<(String, PathBuf), RetrainError> {
    let failed =
        |dir: &Path, e| RetrainError::WorkFolder(format!("cannot create {}: {e}", dir.display()));
    fs::create_dir_all(base).map_err(|e| failed(base, e))?;
    for n in 1.. {
        let name = match n {
            1 => name.to_string(),
            n => format!("{name}-{n}"),
        };
        let dir = base.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok((name, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed(&dir, e)),
        }
    }
    unreachable!("a free folder name is always found")
}

/// Writes `examples` to `path` as JSON lines (`id`, `text`, `label`).
pub fn write_examples<'e>(
    path: &Path,
    examples: impl IntoIterator<Item = &'e Example>,
) -> Result<(), RetrainError> {
    let failed = |e: std::io::Error| {
        RetrainError::WorkFolder(format!("cannot write {}: {e}", path.display()))
    };
    let mut out = BufWriter::new(fs::File::create(path).map_err(failed)?);
    for example in examples {
        let line = serde_json::to_string(example).map_err(|e| failed(e.into()))?;
        writeln!(out, "{line}").map_err(failed)?;
    }
    out.flush().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_takes_the_next_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("retrain");
        let (first, a) = run_folder(&base, "retrain-1").unwrap();
        let (second, b) = run_folder(&base, "retrain-1").unwrap();
        assert_eq!(
            (first.as_str(), second.as_str()),
            ("retrain-1", "retrain-1-2")
        );
        assert!(a.is_dir() && b.is_dir() && a != b);
    }

    #[test]
    fn one_job_at_a_time_and_a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = JobLock::acquire(dir.path()).unwrap();
        let err = JobLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())) && err.contains(LOCK_FILE),
            "{err}"
        );
        drop(lock);
        let again = JobLock::acquire(dir.path()).expect("released on drop");
        drop(again);

        // A pid that cannot be running (beyond Linux's pid_max).
        fs::write(dir.path().join(LOCK_FILE), "4294967295\n").unwrap();
        let taken = JobLock::acquire(dir.path()).unwrap();
        let holder = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(holder.trim(), std::process::id().to_string());
        drop(taken);
    }

    #[test]
    fn a_restart_with_the_same_pid_takes_the_lock_over() {
        // A retrainer killed mid-job in a container restarts as PID 1 and finds
        // the lock file naming PID 1, a process that is running: itself.
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(LOCK_FILE),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let lock = JobLock::acquire(dir.path()).expect("a lock no live process holds");
        drop(lock);
    }

    #[test]
    fn a_lock_held_by_another_live_process_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        fs::write(&path, "12345\n").unwrap();
        // flock(1) holds the lock in a process of its own until its stdin closes.
        let Ok(mut holder) = std::process::Command::new("flock")
            .arg("--exclusive")
            .arg(&path)
            .args(["sh", "-c", "echo locked; cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("flock(1) is not installed: skipped");
            return;
        };
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let err = JobLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("process 12345"), "{err}");
        drop(holder.stdin.take());
        holder.wait().unwrap();
        JobLock::acquire(dir.path()).expect("free once the holder is gone");
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
