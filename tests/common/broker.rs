//! A tansu broker for one test: own port, own data folder, killed on drop.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::daemon::Daemon;

/// The tansu binary: `$TRIAGE_TANSU`, or the one scripts/install-tansu.sh installs.
pub fn tansu_bin() -> PathBuf {
    super::tool("TRIAGE_TANSU", "install-tansu.sh")
}

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    pub fn start(dir: &std::path::Path) -> Self {
        let mut broker = Self {
            port: free_port(),
            dir: dir.join("broker"),
            daemon: None,
        };
        std::fs::create_dir_all(&broker.dir).unwrap();
        broker.resume();
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn resume(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = self
            .dir
            .join(format!("tansu-{}.log", Instant::now().elapsed().as_nanos()));
        let mut cmd = Command::new(tansu_bin());
        cmd.current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"]);
        let port = self.port;
        self.daemon = Some(Daemon::start(
            &format!("tansu on port {port}"),
            cmd,
            log,
            "run scripts/install-tansu.sh, or set TRIAGE_TANSU",
            Duration::from_secs(20),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        ));
    }

    /// Kills the broker (data stays).
    pub fn stop(&mut self) {
        self.daemon = None;
    }
}
