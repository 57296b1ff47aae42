//! A `triage run` or `triage retrainer` process for one test: HTTP on a free loopback
//! port, info logs to a file, waited for until it answers, killed when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::broker::free_port;
use super::kafka::{http, wait_http};

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
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
        let child = cmd
            .env(listen_key, &addr)
            .env("TRIAGE__LOG__LEVEL", "info")
            .arg(subcommand)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Self { child, addr, log };
        assert!(
            wait_http(&server.addr, ready, Duration::from_secs(60), |s, _| s
                == 200),
            "triage {subcommand} did not become ready:\n{}",
            server.log()
        );
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
