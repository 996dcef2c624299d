//! A small Prometheus exporter: the text exposition format (counters, gauges, histograms with
//! explicit buckets) and a minimal HTTP/1.1 server on a thread of its own, with no async
//! runtime and no dependency, so any fleetstream process (producer, worker) can serve
//! `GET /metrics` and a few control endpoints.
//!
//! ```
//! use fleetstream_obs::prometheus::{Exposition, Response, serve};
//! let server = serve("127.0.0.1:0", |req| {
//!     if req.path == "/metrics" {
//!         let mut e = Exposition::new();
//!         e.counter("demo_total", "Things done.", &[], 3.0);
//!         Response::metrics(e.finish())
//!     } else {
//!         Response::not_found()
//!     }
//! })
//! .unwrap();
//! println!("scrape http://{}/metrics", server.addr());
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Builds a text exposition (format 0.0.4). `# HELP`/`# TYPE` are written once per family,
/// before its first sample; write all samples of a family together.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    described: BTreeSet<String>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(out: &mut String, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out.push('}');
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    fn describe(&mut self, name: &str, help: &str, kind: &str) {
        if self.described.insert(name.to_string()) {
            let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }
    }

    fn sample(&mut self, name: &str, l: &[(&str, &str)], extra: Option<(&str, &str)>, v: f64) {
        self.out.push_str(name);
        labels(&mut self.out, l, extra);
        let _ = writeln!(self.out, " {}", number(v));
    }

    /// A counter sample (monotonic total).
    pub fn counter(&mut self, name: &str, help: &str, l: &[(&str, &str)], v: f64) {
        self.describe(name, help, "counter");
        self.sample(name, l, None, v);
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, l: &[(&str, &str)], v: f64) {
        self.describe(name, help, "gauge");
        self.sample(name, l, None, v);
    }

    /// A histogram sample with explicit buckets.
    pub fn histogram(&mut self, name: &str, help: &str, l: &[(&str, &str)], h: &HistogramSample) {
        self.describe(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (b, c) in h.bounds.iter().zip(&h.cumulative) {
            let le = number(*b);
            self.sample(&bucket, l, Some(("le", &le)), *c as f64);
        }
        self.sample(&bucket, l, Some(("le", "+Inf")), h.count as f64);
        self.sample(&format!("{name}_sum"), l, None, h.sum);
        self.sample(&format!("{name}_count"), l, None, h.count as f64);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// One histogram's state: `cumulative[i]` observations were `<= bounds[i]`; `count` and `sum`
/// are over all observations (the `+Inf` bucket is `count`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSample {
    /// Bucket upper bounds, ascending.
    pub bounds: Vec<f64>,
    /// Observations at or below each bound.
    pub cumulative: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Sum of all observations.
    pub sum: f64,
}

impl HistogramSample {
    /// Buckets of a [`crate::LatencyHistogram`], bounds in seconds.
    pub fn from_latency(h: &crate::LatencyHistogram, bounds_seconds: &[f64]) -> Self {
        HistogramSample {
            bounds: bounds_seconds.to_vec(),
            cumulative: bounds_seconds
                .iter()
                .map(|b| h.count_at_or_below_micros((b * 1e6) as u64))
                .collect(),
            count: h.len(),
            sum: h.sum_seconds(),
        }
    }
}

/// An HTTP request, as much of it as the exporter needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query, e.g. `/metrics`.
    pub path: String,
    /// Query parameters in order, undecoded except `+` as space.
    pub query: Vec<(String, String)>,
}

impl Request {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(line: &str) -> Option<Request> {
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?;
        let (path, q) = target.split_once('?').unwrap_or((target, ""));
        let query = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.replace('+', " "), v.replace('+', " "))
            })
            .collect();
        Some(Request {
            method,
            path: path.to_string(),
            query,
        })
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// 200 with a text exposition.
    pub fn metrics(body: String) -> Self {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
    /// 404.
    pub fn not_found() -> Self {
        Self::text(404, "not found: try GET /metrics\n")
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    }
}

/// A running exporter; stops when dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens on `addr` and answers each request with `handler`, one connection at a time on a
/// thread of its own (scrapes are rare; a slow client is cut off after 2 s).
pub fn serve<A, H>(addr: A, handler: H) -> std::io::Result<Server>
where
    A: ToSocketAddrs,
    H: Fn(&Request) -> Response + Send + 'static,
{
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("fs-metrics".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer(stream, &handler);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
    Ok(Server {
        addr,
        stop,
        thread: Some(thread),
    })
}

fn answer<H: Fn(&Request) -> Response>(mut s: TcpStream, handler: &H) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    // Read the head (request line and headers); bodies are not used.
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let response = match text.lines().next().and_then(Request::parse) {
        Some(req) => handler(&req),
        None => Response::text(400, "bad request\n"),
    };
    let out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        response.body
    );
    s.write_all(out.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, line: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "{line} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn exposition_has_one_header_per_family_and_cumulative_buckets() {
        let mut e = Exposition::new();
        e.counter("x_total", "X.", &[("class", "a\"b")], 1.0);
        e.counter("x_total", "X.", &[("class", "c")], 2.0);
        let h = HistogramSample {
            bounds: vec![0.1, 1.0],
            cumulative: vec![3, 5],
            count: 6,
            sum: 7.5,
        };
        e.histogram("lat_seconds", "Lat.", &[], &h);
        let t = e.finish();
        assert_eq!(t.matches("# TYPE x_total counter").count(), 1);
        assert!(t.contains("x_total{class=\"a\\\"b\"} 1\n"));
        assert!(t.contains("lat_seconds_bucket{le=\"0.1\"} 3\n"));
        assert!(t.contains("lat_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(t.contains("lat_seconds_count 6\n"));
        assert!(t.contains("lat_seconds_sum 7.5\n"));
    }

    #[test]
    fn latency_buckets_count_samples_at_or_below() {
        let mut l = crate::LatencyHistogram::new();
        for ms in [1, 2, 3, 50, 2000] {
            l.record(Duration::from_millis(ms));
        }
        let h = HistogramSample::from_latency(&l, &[0.0025, 0.1, 1.0]);
        assert_eq!(h.cumulative, vec![2, 4, 4]);
        assert_eq!(h.count, 5);
        assert!((h.sum - 2.056).abs() < 0.01, "{}", h.sum);
    }

    #[test]
    fn serves_requests_with_their_query() {
        let server = serve("127.0.0.1:0", |r| {
            Response::text(
                200,
                format!("{} {} {:?}", r.method, r.path, r.param("value")),
            )
        })
        .unwrap();
        let out = get(server.addr(), "POST /rate?value=500");
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("POST /rate Some(\"500\")"), "{out}");
    }
}
