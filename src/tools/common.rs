//! Helpers the tools share: names unique to a run, a minimal HTTP GET for a
//! service's endpoints, and reading sums out of a Prometheus exposition. The
//! summary statistics (percentiles, medians) are in [`crate::stats`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `triage-{tag}-{pid}-{nanoseconds}`: a topic, group or folder name no other run
/// uses.
pub fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("triage-{tag}-{}-{n}", std::process::id())
}

/// The body of `GET path` from a local HTTP/1.1 server on `port` (blocking; the
/// connection closes after one response, so the body is all that follows the
/// headers).
pub fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// The sum of a Prometheus metric's samples whose labels include every `labels` pair.
pub fn metric_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_pick_the_series_with_every_label() {
        let text = "# HELP x\n\
            triage_stage_duration_seconds_sum{stage=\"embed\"} 2.5\n\
            triage_stage_duration_seconds_sum{stage=\"embedding\"} 9\n\
            triage_consumer_lag_messages{partition=\"0\",topic=\"in\"} 3\n\
            triage_consumer_lag_messages{partition=\"1\",topic=\"in\"} 4\n\
            triage_consumer_lag_messages{partition=\"0\",topic=\"other\"} 100\n";
        let stage = "triage_stage_duration_seconds_sum";
        assert_eq!(metric_sum(text, stage, &[("stage", "embed")]), 2.5);
        let lag = "triage_consumer_lag_messages";
        assert_eq!(metric_sum(text, lag, &[("topic", "in")]), 7.0);
        assert_eq!(metric_sum(text, "absent", &[]), 0.0);
    }

    #[test]
    fn unique_names_differ_between_calls() {
        let (a, b) = (unique("x"), unique("x"));
        assert!(a.starts_with("triage-x-"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn http_get_returns_the_body() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let first = String::from_utf8_lossy(&request)
                .lines()
                .next()
                .map(String::from);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
            first
        });
        let body = http_get(port, "/metrics", Duration::from_secs(5)).unwrap();
        assert_eq!(body, "hello");
        assert_eq!(
            server.join().unwrap().as_deref(),
            Some("GET /metrics HTTP/1.1")
        );
    }
}
