//! A `triage run` or `triage retrainer` process for one test: HTTP on a free loopback
//! port, info logs to a file, waited for until it answers, killed when dropped.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::broker::free_port;
use super::daemon::{Daemon, answers_200};
use super::kafka::http;

/// Derefs to its [`Daemon`]: `child` and `log` are the process's.
pub struct Server {
    daemon: Daemon,
    pub addr: String,
}

impl Deref for Server {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

impl Server {
    /// Spawns `cmd` (a `triage` command with its configuration, without a subcommand)
    /// as `subcommand` ("run": ready when /readyz answers 200; "retrainer": when
    /// /healthz does), logging to `log`.
    pub fn start(mut cmd: Command, subcommand: &str, log: PathBuf) -> Self {
        let (listen_key, ready) = match subcommand {
            "run" => ("TRIAGE__HTTP__LISTEN", "/readyz"),
            "retrainer" => ("TRIAGE__RETRAIN__LISTEN", "/healthz"),
            other => panic!("Server::start runs run or retrainer, not {other}"),
        };
        let addr = format!("127.0.0.1:{}", free_port());
        cmd.env(listen_key, &addr)
            .env("TRIAGE__LOG__LEVEL", "info")
            .arg(subcommand);
        let daemon = Daemon::start(
            &format!("triage {subcommand}"),
            cmd,
            log,
            "build the triage binary (cargo test builds it)",
            Duration::from_secs(60),
            answers_200(&addr, ready),
        );
        Self { daemon, addr }
    }

    pub fn signal(&mut self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit {status}:\n{}", self.log());
        self.log()
    }

    pub fn kill(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// The value of the first /metrics line that starts with `name_and_labels` (0 if none).
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        let (_, body) = http(&self.addr, "GET", "/metrics", b"").unwrap();
        body.lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}
