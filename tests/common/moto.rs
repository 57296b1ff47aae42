//! moto's S3-compatible server for one test: own port, one bucket, killed on drop.
//! It honours conditional puts (`If-None-Match: *`, `If-Match`), which the registry's
//! immutable versions and atomic alias moves rely on.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::broker::free_port;

pub struct Moto {
    pub port: u16,
    pub bucket: String,
    child: Child,
}

impl Moto {
    /// Starts `moto_server` (`$TRIAGE_MOTO`, or scripts/install-moto.sh's) on a free
    /// loopback port with its log in `dir`, and creates the bucket `bucket`.
    pub fn start(dir: &Path, bucket: &str) -> Self {
        let port = free_port();
        let log = std::fs::File::create(dir.join(format!("moto-{port}.log"))).unwrap();
        let child = Command::new(super::tool("TRIAGE_MOTO", "install-moto.sh"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("moto_server starts");
        let moto = Self {
            port,
            bucket: bucket.to_string(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match moto.request("PUT", &format!("/{bucket}")) {
                Some(200) => break,
                Some(status) => panic!("moto refused to create bucket {bucket}: HTTP {status}"),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                None => panic!("moto_server did not listen on port {port} within 30 s"),
            }
        }
        moto
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

    /// One bodiless request; the HTTP status, or None when nothing listens yet.
    fn request(&self, method: &str, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        // moto tells S3 from its other services by the signature's scope.
        let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).ok()?;
        out.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
