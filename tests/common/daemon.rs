//! A process a test starts and waits for: stdout discarded, stderr in a log file,
//! polled until ready within a deadline, killed when dropped (so a failed assertion
//! leaves nothing running). The broker, the servers, Prometheus, Alertmanager and
//! moto are each one of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` as `what`, logging to `log`, then polls `ready` every 100 ms
    /// until it holds. Panics with `fix` when it cannot start, and with the log when
    /// it is not ready within `timeout` or exits first.
    pub fn start(
        what: &str,
        mut cmd: Command,
        log: PathBuf,
        fix: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Self {
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {what} ({}): {e}; {fix}",
                    cmd.get_program().display()
                )
            });
        let mut daemon = Self { child, log };
        let deadline = Instant::now() + timeout;
        while !ready() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "{what} exited ({status}) before it was ready:\n{}",
                    daemon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what} was not ready within {timeout:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A readiness check: `GET path` on `addr` answers 200.
pub fn answers_200<'a>(addr: &'a str, path: &'a str) -> impl FnMut() -> bool + 'a {
    move || super::kafka::http(addr, "GET", path, b"").is_some_and(|(status, _)| status == 200)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
