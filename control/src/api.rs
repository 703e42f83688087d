//! The HTTP endpoint: `/metrics` for Prometheus, `/healthz`, and a small read-only API over the
//! recent events and the evidence files. Loopback by default; a bearer token protects
//! everything but `/healthz`, and a non-loopback address without a token is refused.
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use dataplane::anomaly::{Event, Kind};
use metrics_exporter_prometheus::PrometheusHandle;
use tiny_http::{Header, Method, Response, Server};

/// The most recent events, bounded.
pub struct EventStore {
    events: Mutex<VecDeque<Event>>,
    cap: usize,
}

impl EventStore {
    pub fn new(cap: usize) -> Self {
        Self { events: Mutex::new(VecDeque::new()), cap }
    }
    pub fn push(&self, e: Event) {
        let mut q = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() == self.cap {
            q.pop_front();
        }
        q.push_back(e);
    }
    fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

pub struct ApiConfig {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub allow_insecure: bool,
    pub evidence_dir: PathBuf,
}

/// Refuses a non-loopback address without a token (unless forced).
pub fn check_bind(cfg: &ApiConfig) -> Result<()> {
    if !cfg.addr.ip().is_loopback() && cfg.token.is_none() && !cfg.allow_insecure {
        bail!(
            "--metrics {}: refusing to serve events and evidence on a non-loopback address without --api-token (or force it with --api-insecure)",
            cfg.addr
        );
    }
    Ok(())
}

pub fn serve(
    cfg: ApiConfig,
    prom: PrometheusHandle,
    store: Arc<EventStore>,
) -> Result<std::thread::JoinHandle<()>> {
    check_bind(&cfg)?;
    let server = Server::http(cfg.addr).map_err(|e| {
        anyhow::anyhow!("cannot listen on {} (--metrics): {e}; is another wirewatch running? choose another address with --metrics", cfg.addr)
    })?;
    log::info!("metrics and API on http://{}/metrics", cfg.addr);
    Ok(std::thread::Builder::new().name("ww-http".into()).spawn(move || {
        for req in server.incoming_requests() {
            let resp = handle(&cfg, &prom, &store, &req);
            let _ = req.respond(resp);
        }
    })?)
}

type Resp = Response<std::io::Cursor<Vec<u8>>>;

fn text(code: u16, body: impl Into<String>, ctype: &str) -> Resp {
    Response::from_data(body.into().into_bytes())
        .with_status_code(code)
        .with_header(Header::from_bytes("Content-Type", ctype).expect("valid header"))
}

fn json(v: &serde_json::Value) -> Resp {
    text(200, v.to_string(), "application/json")
}

fn handle(
    cfg: &ApiConfig,
    prom: &PrometheusHandle,
    store: &EventStore,
    req: &tiny_http::Request,
) -> Resp {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if *req.method() != Method::Get {
        return text(405, "only GET\n", "text/plain");
    }
    if path == "/healthz" {
        return text(200, "ok\n", "text/plain");
    }
    if let Some(tok) = &cfg.token {
        let ok = req
            .headers()
            .iter()
            .any(|h| h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {tok}"));
        if !ok {
            return text(401, "missing or wrong bearer token\n", "text/plain");
        }
    }
    let q: HashMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    match path {
        "/metrics" => {
            prom.run_upkeep();
            text(200, prom.render() + &crate::metrics::process_text(), "text/plain; version=0.0.4")
        }
        "/api/events" => {
            let kind = match q.get("kind") {
                Some(k) => match Kind::from_name(k) {
                    Some(k) => Some(k),
                    None => return text(400, format!("unknown kind `{k}`\n"), "text/plain"),
                },
                None => None,
            };
            let since = match q.get("since").map(|s| parse_since(s)) {
                Some(Ok(ns)) => ns,
                Some(Err(e)) => return text(400, format!("{e}\n"), "text/plain"),
                None => 0,
            };
            let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(100).min(10_000);
            let mut evs: Vec<Event> = store.snapshot().into_iter().filter(|e| kind.is_none_or(|k| e.kind == k) && e.time_last_ns >= since).collect();
            let skip = evs.len().saturating_sub(limit);
            evs.drain(..skip);
            json(&serde_json::to_value(&evs).unwrap_or_default())
        }
        "/api/flows/top" => {
            let mut by_flow: HashMap<String, (u64, Vec<&'static str>)> = HashMap::new();
            for e in store.snapshot() {
                let f = &e.flow;
                let (a, b) = ((f.src, f.sport), (f.dst, f.dport));
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                let key = format!("{}:{} ↔ {}:{}", a.0, a.1, b.0, b.1);
                let entry = by_flow.entry(key).or_default();
                entry.0 += 1;
                if !entry.1.contains(&e.kind.name()) {
                    entry.1.push(e.kind.name());
                }
            }
            let mut v: Vec<_> = by_flow.into_iter().collect();
            v.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
            v.truncate(20);
            json(&serde_json::Value::Array(
                v.into_iter().map(|(flow, (n, kinds))| serde_json::json!({"flow": flow, "anomalies": n, "kinds": kinds})).collect(),
            ))
        }
        p if p.starts_with("/api/evidence/") => {
            let id = &p["/api/evidence/".len()..];
            // A file name of ours: no separators, no parent references.
            if id.is_empty() || id.contains('/') || id.contains("..") || !id.ends_with(".pcapng") {
                return text(400, "evidence ids are file names like 1700000000000-kind-w0-1.pcapng\n", "text/plain");
            }
            match std::fs::read(cfg.evidence_dir.join(id)) {
                Ok(bytes) => Response::from_data(bytes).with_header(Header::from_bytes("Content-Type", "application/x-pcapng").expect("valid header")),
                Err(_) => text(404, "no such evidence file (removed by retention?)\n", "text/plain"),
            }
        }
        _ => text(404, "endpoints: /metrics /healthz /api/events?kind=&since=&limit= /api/evidence/{id} /api/flows/top\n", "text/plain"),
    }
}

/// `since` as Unix seconds (fractional allowed) or RFC 3339 UTC ("2026-11-21T17:00:00Z").
fn parse_since(s: &str) -> Result<u64> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e9) as u64);
    }
    let s = s.trim_end_matches('Z');
    let (date, time) =
        s.split_once('T').context("since: expected Unix seconds or YYYY-MM-DDTHH:MM:SSZ")?;
    let d: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .context("since: bad date")?;
    let t: Vec<f64> = time
        .split(':')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .context("since: bad time")?;
    if d.len() != 3 || t.len() != 3 {
        bail!("since: expected YYYY-MM-DDTHH:MM:SSZ");
    }
    // Days from civil (Howard Hinnant).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2];
    Ok((secs.max(0.0) * 1e9) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_accepts_rfc3339_and_unix_seconds() {
        assert_eq!(super::parse_since("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(super::parse_since("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000_000_000);
        assert!(super::parse_since("yesterday").is_err());
    }
}
