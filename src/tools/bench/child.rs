//! The benchmarked service: `triage run` as a child process, and what the bench
//! reads of it (its /proc entry and its `/metrics`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::unique;
use crate::config::Settings;
use crate::tools::common::http_get;

/// `triage run` in a child process, as users run it: the bench's effective
/// settings go to a config file (the child's own TRIAGE_* variables are removed, so
/// the file is the whole truth) with the secrets redacted, and the secrets go to the
/// child as `TRIAGE__KAFKA__...` variables, never to disk; `/metrics` listens on a
/// free port, and memory is read from the child's /proc entry.
pub(super) struct Service {
    pub(super) child: Child,
    pub(super) port: u16,
    pub(super) dir: PathBuf,
}

impl Service {
    pub(super) fn start(settings: &Settings) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut s = settings.clone();
        s.http.listen = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(unique("service"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("triage.toml");
        std::fs::write(&config, toml::to_string(&s)?)?;
        let log = std::fs::File::create(dir.join("service.log"))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRIAGE_") {
                cmd.env_remove(key);
            }
        }
        // The file shows them as ***: the variables give them back.
        cmd.envs(s.kafka.secret_variables());
        let child = cmd
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self { child, port, dir })
    }

    /// An error with the end of the service's log if it has exited.
    pub(super) fn check(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                let log = std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                anyhow::bail!(
                    "the benchmarked `triage run` exited ({status}); its log ends:\n{}",
                    tail.join("\n")
                )
            }
        }
    }

    pub(super) fn memory_mb(&self, field: &str) -> f64 {
        status_mb(&format!("/proc/{}/status", self.child.id()), field)
    }

    /// The service's Prometheus exposition.
    pub(super) async fn metrics(&self) -> anyhow::Result<String> {
        let port = self.port;
        let body =
            tokio::task::spawn_blocking(move || http_get(port, "/metrics", Duration::from_secs(5)))
                .await??;
        Ok(body)
    }

    /// SIGTERM, as an operator would; SIGKILL if it has not stopped after its drain.
    /// Returns the service's peak RSS.
    pub(super) async fn stop(mut self) -> f64 {
        let peak = self.memory_mb("VmHWM");
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        peak
    }
}

/// A memory figure from a /proc status file (Linux), in MB: `VmHWM` (peak
/// resident set) or `VmRSS` (now).
pub(super) fn status_mb(status: &str, field: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat (Linux;
/// clock ticks of 1/100 s, the USER_HZ every Linux architecture triage runs on uses).
pub(super) fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Peak resident set size of this process.
pub fn peak_rss_mb() -> f64 {
    status_mb("/proc/self/status", "VmHWM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let before = cpu_seconds("self");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds("self") > before, "{before} s did not grow");
    }

    #[test]
    fn memory_figures_come_from_proc_status() {
        let (now, peak) = (status_mb("/proc/self/status", "VmRSS"), peak_rss_mb());
        assert!(now > 0.0 && peak >= now, "VmRSS {now} MB, VmHWM {peak} MB");
    }
}
