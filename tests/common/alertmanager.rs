//! An Alertmanager for one test (the Debian package's binary), on loopback, with
//! the repository's configuration pointed at the retrainer under test.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::broker::free_port;
use super::daemon::{Daemon, answers_200};

pub struct Alertmanager {
    pub addr: String,
    daemon: Daemon,
}

impl Alertmanager {
    /// Starts Alertmanager with deploy/alertmanager/alertmanager.yml, its webhook
    /// sent to `retrainer` with the token in `token_file`, and `edit` applied to the
    /// configuration text (e.g. a shorter group_wait).
    pub fn start(
        dir: &Path,
        retrainer: &str,
        token_file: &Path,
        edit: impl Fn(String) -> String,
    ) -> Self {
        let bin = std::env::var("TRIAGE_ALERTMANAGER")
            .unwrap_or_else(|_| "prometheus-alertmanager".into());
        let dir = dir.join("alertmanager");
        std::fs::create_dir_all(&dir).unwrap();
        let deploy = super::repo().join("deploy/alertmanager/alertmanager.yml");
        let config = std::fs::read_to_string(deploy)
            .unwrap()
            .replace("127.0.0.1:9465", retrainer)
            .replace(
                "/etc/triage/retrain-webhook.token",
                &token_file.display().to_string(),
            );
        assert!(
            config.contains(retrainer),
            "alertmanager.yml has no retrainer URL"
        );
        std::fs::write(dir.join("alertmanager.yml"), edit(config)).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(&bin);
        cmd.arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=");
        let daemon = Daemon::start(
            "alertmanager",
            cmd,
            dir.join("alertmanager.log"),
            "run scripts/install-alertmanager.sh, or set TRIAGE_ALERTMANAGER",
            Duration::from_secs(30),
            answers_200(&addr, "/-/ready"),
        );
        Self { addr, daemon }
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}
