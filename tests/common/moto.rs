//! moto's S3-compatible server for one test: own port, one bucket, killed on drop.
//! It honours conditional puts (`If-None-Match: *`, `If-Match`), which the registry's
//! immutable versions and atomic alias moves rely on.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::broker::free_port;
use super::daemon::Daemon;

pub struct Moto {
    pub port: u16,
    pub bucket: String,
    daemon: Daemon,
}

impl Moto {
    /// Starts `moto_server` (`$TRIAGE_MOTO`, or scripts/install-moto.sh's) on a free
    /// loopback port with its log in `dir`, and creates the bucket `bucket`.
    pub fn start(dir: &Path, bucket: &str) -> Self {
        let port = free_port();
        let mut cmd = Command::new(super::tool("TRIAGE_MOTO", "install-moto.sh"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        // Ready once the bucket exists; a refusal is final.
        let daemon = Daemon::start(
            &format!("moto_server on port {port}"),
            cmd,
            dir.join(format!("moto-{port}.log")),
            "run scripts/install-moto.sh, or set TRIAGE_MOTO",
            Duration::from_secs(30),
            || match request(port, "PUT", &format!("/{bucket}")) {
                Some(200) => true,
                Some(status) => panic!("moto refused to create bucket {bucket}: HTTP {status}"),
                None => false,
            },
        );
        Self {
            port,
            bucket: bucket.to_string(),
            daemon,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The standard AWS variables that point an S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// `cmd` with its registry in this bucket under `prefix`.
    pub fn registry<'a>(&self, cmd: &'a mut Command, prefix: &str) -> &'a mut Command {
        cmd.env("TRIAGE__PATHS__REGISTRY_URL", self.url(prefix))
            .envs(self.env())
    }
}

/// One bodiless request to moto on `port`; the HTTP status, or None when nothing
/// listens yet.
fn request(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    // moto tells S3 from its other services by the signature's scope.
    let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}
