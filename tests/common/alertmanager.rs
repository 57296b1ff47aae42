//! An Alertmanager for one test (the Debian package's binary), on loopback, with
//! the repository's configuration pointed at the retrainer under test.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::broker::free_port;
use super::kafka::wait_http;

pub struct Alertmanager {
    pub addr: String,
    child: Child,
    log: std::path::PathBuf,
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
        let log = dir.join("alertmanager.log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): run scripts/install-alertmanager.sh, or set TRIAGE_ALERTMANAGER")
            });
        let am = Self { addr, child, log };
        assert!(
            wait_http(&am.addr, "/-/ready", Duration::from_secs(30), |s, _| s
                == 200),
            "alertmanager did not become ready:\n{}",
            am.log()
        );
        am
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
