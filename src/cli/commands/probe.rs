//! `triage probe`: GET one HTTP endpoint of a triage on this host, for container
//! health checks (the image has no curl, and the check needs no shell).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::args::ProbeArgs;
use crate::config::Settings;

/// The most of an answer read: the status line and a line of the body are enough.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

pub(super) fn probe(settings: &Settings, args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let (key, listen) = if args.retrainer {
        ("retrain.listen", &settings.retrain.listen)
    } else {
        ("http.listen", &settings.http.listen)
    };
    anyhow::ensure!(
        !listen.is_empty(),
        "{key} is empty: this configuration serves no HTTP, so there is nothing to probe"
    );
    anyhow::ensure!(
        args.path.starts_with('/') && !args.path.contains(char::is_whitespace),
        "{:?} is not a path: give one such as /healthz or /readyz",
        args.path
    );
    let addr = reachable(
        listen
            .parse()
            .with_context(|| format!("{key} {listen:?} is not host:port"))?,
    );
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("nothing answers on {addr} ({key}): is triage running?"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        args.path
    )?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .with_context(|| format!("{addr} did not answer GET {} in time", args.path))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        return Ok(ExitCode::SUCCESS);
    }
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b.trim());
    eprintln!(
        "GET {} on {addr}: {} {}",
        args.path,
        if status.is_empty() {
            "no answer"
        } else {
            status
        },
        body.chars().take(300).collect::<String>()
    );
    Ok(ExitCode::from(1))
}

/// A listener on every interface (0.0.0.0, [::]) is reached on loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_address_listeners_are_probed_on_loopback() {
        let on = |s: &str| reachable(s.parse().unwrap()).to_string();
        assert_eq!(on("0.0.0.0:9464"), "127.0.0.1:9464");
        assert_eq!(on("[::]:9465"), "[::1]:9465");
        assert_eq!(on("10.0.0.5:9464"), "10.0.0.5:9464");
    }
}
