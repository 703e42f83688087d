//! The HTTP endpoint: `/metrics` for Prometheus, `/healthz`, and a small read-only API over the
//! recent events and the evidence files. Loopback by default; a bearer token protects
//! everything but `/healthz`, and a non-loopback address without a token is refused.
//!
//! The server is built to stay up whatever a client does (hyper's HTTP/1 on one thread with
//! tokio, no thread per connection):
//! - request headers are capped at [`MAX_HEADER_BYTES`]; a larger head is answered 431 and the
//!   connection closed, before authentication and without buffering more (what the client
//!   still sends is read and discarded for up to [`LINGER_TIME`], at most [`LINGER_BYTES`],
//!   so that it reads the 431 rather than a RST: see `linger`);
//! - a request head must arrive within [`HEADER_TIMEOUT`] (this also closes idle keep-alive
//!   connections), and a connection that moves no byte either way for [`STALL_TIMEOUT`] (a
//!   client that pipelines requests and never reads the answers) is closed;
//! - at most a number of connections well below the file-descriptor limit are open: at the cap,
//!   or when `accept` fails for lack of descriptors (EMFILE), the connection that has been
//!   quiet the longest is closed to make room (as nginx reuses connections when
//!   `worker_connections` run out), so a flood of idle connections cannot lock out a scrape or
//!   a health check;
//! - the accept loop never ends on an error: it backs off (up to a second) and tries again.
use std::collections::{HashMap, VecDeque};
use std::future::Future as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use dataplane::anomaly::{Event, Kind};
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Request line and headers together; a bearer token and a Host header need a few hundred.
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// A request head (or the next one on a kept-alive connection) must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that neither sends nor takes a byte for this long is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections at most, whatever the descriptor limit (scrapers and operators need a few).
pub const MAX_CONNECTIONS: usize = 512;
/// The longest pause of the accept loop after an error.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

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

/// What `/healthz` reports: the problems `run` found on its last check (none: healthy).
#[derive(Default)]
pub struct Health {
    problems: Mutex<Vec<String>>,
}

impl Health {
    /// Replaces the problems; a change is logged once (a warning when one appears).
    pub fn set(&self, now: Vec<String>) {
        let mut was = self.problems.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *was != now {
            if now.is_empty() {
                log::info!("healthy again");
            } else {
                log::warn!("unhealthy (/healthz answers 503): {}", now.join("; "));
            }
            *was = now;
        }
    }

    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

pub struct ApiConfig {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub allow_insecure: bool,
    pub evidence_dir: PathBuf,
}

/// Refuses an empty token, and a non-loopback address without a token (unless forced).
pub fn check_bind(cfg: &ApiConfig) -> Result<()> {
    if cfg.token.as_deref().is_some_and(str::is_empty) {
        bail!("--api-token is empty: an empty token would let anyone in; set a real one");
    }
    if !cfg.addr.ip().is_loopback() && cfg.token.is_none() && !cfg.allow_insecure {
        bail!(
            "--metrics {}: refusing to serve events and evidence on a non-loopback address without --api-token-file (or --api-token; force it with --api-insecure)",
            cfg.addr
        );
    }
    Ok(())
}

/// Everything a request may read.
pub struct Ctx {
    pub token: Option<String>,
    pub evidence_dir: PathBuf,
    pub prom: Option<PrometheusHandle>,
    pub store: Arc<EventStore>,
    pub health: Arc<Health>,
}

/// Binds now (so a taken address is an error at start) and serves on a thread of its own.
pub fn serve(
    cfg: ApiConfig,
    prom: PrometheusHandle,
    store: Arc<EventStore>,
    health: Arc<Health>,
) -> Result<std::thread::JoinHandle<()>> {
    check_bind(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the HTTP server's runtime")?;
    let listener = {
        let _in_rt = rt.enter();
        listen(cfg.addr).map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (--metrics): {e}; is another wirewatch running? choose another address with --metrics", cfg.addr)
        })?
    };
    let cap = connection_cap();
    log::info!("metrics and API on http://{}/metrics (at most {cap} connections)", cfg.addr);
    let ctx = Arc::new(Ctx {
        token: cfg.token,
        evidence_dir: cfg.evidence_dir,
        prom: Some(prom),
        store,
        health,
    });
    Ok(std::thread::Builder::new()
        .name("ww-http".into())
        .spawn(move || rt.block_on(accept_loop(listener, ctx, cap)))?)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The kernel caps it at net.core.somaxconn.
    socket.listen(1024)
}

/// Half the descriptors still free under RLIMIT_NOFILE (the rest stay for evidence files,
/// sockets and maps), at most [`MAX_CONNECTIONS`], at least 4.
fn connection_cap() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // Safety: getrlimit writes into the rlimit it is given, which lives on this stack.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as usize
    } else {
        1024
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, Iterator::count);
    (soft.saturating_sub(open) / 2).clamp(4, MAX_CONNECTIONS)
}

/// Milliseconds since the server started (monotonic).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One open connection, as the accept loop sees it.
#[derive(Default)]
struct ConnState {
    /// When a byte last moved either way.
    last_ms: AtomicU64,
    /// Requests being answered right now.
    in_service: AtomicU32,
    /// Told to close (to make room for a new connection).
    evict: Notify,
}

type Registry = Mutex<HashMap<u64, Arc<ConnState>>>;

fn lock(r: &Registry) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Closes the connection that has been quiet the longest, preferring one that is not
/// answering a request; it leaves the registry at once, so it is not chosen twice. Returns
/// whether there was one (its task closes it when it next runs: yield to let it).
fn evict_quietest(registry: &Registry) -> bool {
    let mut conns = lock(registry);
    let victim = conns
        .iter()
        .min_by_key(|(_, c)| (c.in_service.load(Relaxed) > 0, c.last_ms.load(Relaxed)))
        .map(|(id, _)| *id);
    let Some(c) = victim.and_then(|id| conns.remove(&id)) else { return false };
    drop(conns);
    c.evict.notify_one();
    crate::export::metrics::http_closed("evicted");
    true
}

/// Whether an accept error means the process or the system is out of descriptors or memory.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, cap: usize) {
    let registry: Arc<Registry> = Arc::default();
    let mut backoff = Duration::from_millis(10);
    let mut next_id = 0u64;
    let (mut last_log, mut unlogged) = (None::<Instant>, 0u64);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                backoff = Duration::from_millis(10);
                if lock(&registry).len() >= cap && evict_quietest(&registry) {
                    tokio::task::yield_now().await;
                }
                let _ = stream.set_nodelay(true);
                let state = Arc::new(ConnState::default());
                state.last_ms.store(now_ms(), Relaxed);
                next_id += 1;
                let id = next_id;
                let open = {
                    let mut conns = lock(&registry);
                    conns.insert(id, state.clone());
                    conns.len()
                };
                crate::export::metrics::http_connections(open);
                let (ctx, registry) = (ctx.clone(), registry.clone());
                tokio::spawn(async move {
                    connection(stream, state, ctx).await;
                    let open = {
                        let mut conns = lock(&registry);
                        conns.remove(&id);
                        conns.len()
                    };
                    crate::export::metrics::http_connections(open);
                });
            }
            Err(e) => {
                let resources = out_of_resources(&e);
                crate::export::metrics::http_accept_error(resources);
                // The connection waiting in the backlog stays there: free a descriptor for it
                // and try again at once; with nothing left to close, back off.
                let freed = resources && evict_quietest(&registry);
                unlogged += 1;
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    log::warn!(
                        "HTTP accept failed ({unlogged} time(s) since the last report): {e}; retrying{}",
                        if resources {
                            " after closing the quietest connection (raise LimitNOFILE if this repeats)"
                        } else {
                            ""
                        }
                    );
                    last_log = Some(Instant::now());
                    unlogged = 0;
                }
                if freed {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// Serves one connection over any byte stream, with the limits and timeouts of the real
/// server (the HTTP fuzz target drives it through an in-memory pipe).
pub async fn serve_stream<S>(stream: S, ctx: Arc<Ctx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::default());
    state.last_ms.store(now_ms(), Relaxed);
    connection(stream, state, ctx).await;
}

/// Serves one connection until it ends, is evicted or stalls.
async fn connection<S>(mut stream: S, state: Arc<ConnState>, ctx: Arc<Ctx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let evicted = state.evict.notified();
    let mut evicted = std::pin::pin!(evicted);
    let lingers = {
        let io =
            hyper_util::rt::TokioIo::new(Tracked { stream: &mut stream, state: state.clone() });
        let service_state = state.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (ctx, state) = (ctx.clone(), service_state.clone());
            async move {
                state.in_service.fetch_add(1, Relaxed);
                let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
                let resp = respond(&ctx, req.method(), req.uri().path(), req.uri().query(), auth);
                state.in_service.fetch_sub(1, Relaxed);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_header_size(MAX_HEADER_BYTES)
            .max_buf_size(MAX_HEADER_BYTES * 4)
            .max_headers(64)
            .keep_alive(true);
        let conn = h1.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        std::future::poll_fn(|cx| {
            // Errors (a closed socket, a timed-out or oversized head) end the connection;
            // hyper has already answered what deserves an answer (431, 400). A client that
            // sent nothing in time is not waited for again.
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(r.is_ok() || r.is_err_and(|e| !e.is_timeout()));
            }
            if evicted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            while watchdog.poll_tick(cx).is_ready() {
                let quiet = now_ms().saturating_sub(state.last_ms.load(Relaxed));
                if quiet > STALL_TIMEOUT.as_millis() as u64 {
                    crate::export::metrics::http_closed("stalled");
                    return Poll::Ready(false);
                }
            }
            Poll::Pending
        })
        .await
    };
    if lingers {
        // Still in the registry: an eviction cuts the lingering short.
        let lingering = linger(&mut stream);
        let mut lingering = std::pin::pin!(lingering);
        std::future::poll_fn(|cx| {
            if lingering.as_mut().poll(cx).is_ready() || evicted.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// The longest a closed connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// The most a closed connection reads and discards.
pub const LINGER_BYTES: usize = 1 << 20;

/// Closes a connection in stages, as RFC 9112 §9.6 asks: the answer is already sent, so the
/// sending side is shut (FIN) and what the client is still sending is read and discarded,
/// for a bounded time and number of bytes, before the socket closes. Closing with unread
/// input at once makes the kernel answer with a RST, which can reach the client before it
/// has read the answer (a 431 to an oversized head would then be lost as a broken pipe).
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let drain = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 4 << 10];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// A stream that notes when a byte last moved, for the stall check and eviction order.
struct Tracked<S> {
    stream: S,
    state: Arc<ConnState>,
}

impl<S> Tracked<S> {
    fn moved(&self) {
        self.state.last_ms.store(now_ms(), Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

type Resp = Response<Full<Bytes>>;

/// A file of the evidence directory, named by the rest of the request path (percent-decoded):
/// only a name `ours` accepts is read (400 with `bad_id` otherwise); served as `content_type`,
/// or 404 with `missing` when retention has removed it.
fn served_file(
    ctx: &Ctx,
    rest: &str,
    ours: impl Fn(&str) -> bool,
    bad_id: &'static str,
    (content_type, missing): (&'static str, &'static str),
) -> Resp {
    let Some(id) = percent_decode(rest, false).filter(|id| ours(id)) else {
        return text(StatusCode::BAD_REQUEST, bad_id);
    };
    match std::fs::read(ctx.evidence_dir.join(id)) {
        Ok(bytes) => with_type(StatusCode::OK, content_type, bytes),
        Err(_) => text(StatusCode::NOT_FOUND, missing),
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Resp {
    with_type(code, "text/plain; charset=utf-8", body.into().into_bytes())
}

fn with_type(code: StatusCode, ctype: &'static str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn json(v: &serde_json::Value) -> Resp {
    with_type(StatusCode::OK, "application/json", v.to_string().into_bytes())
}

/// Equal in time whatever the first difference (the token is a secret).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` escapes, and `+` as a space when `plus` (query values, as forms send them).
/// None for a bad escape or a result that is not UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

const ENDPOINTS: &str = "endpoints: /metrics /healthz /api/events?kind=&since=&limit= /api/evidence/{id} /api/report/{id} /api/flows/top\n";

/// The answer to one request (the server's only entry into the rest of wirewatch; fuzzed).
pub fn respond(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Resp {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/healthz" {
        let problems = ctx.health.problems();
        return if problems.is_empty() {
            text(StatusCode::OK, "ok\n")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {}\n", problems.join("; ")))
        };
    }
    if let Some(tok) = &ctx.token {
        let expected = format!("Bearer {tok}");
        if !authorization.is_some_and(|a| same_secret(a, expected.as_bytes())) {
            let mut r = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let mut q: HashMap<&str, String> = HashMap::new();
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let Some(v) = percent_decode(v, true) else {
            return text(
                StatusCode::BAD_REQUEST,
                "a query value has a bad %-escape or is not UTF-8\n",
            );
        };
        q.insert(k, v);
    }
    match path {
        "/metrics" => {
            let page = ctx.prom.as_ref().map(|p| {
                p.run_upkeep();
                p.render()
            });
            with_type(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                (page.unwrap_or_default() + &crate::export::metrics::process_text()).into_bytes(),
            )
        }
        "/api/events" => {
            let kind = match q.get("kind").filter(|k| !k.is_empty()) {
                Some(k) => match Kind::from_name(k) {
                    Some(k) => Some(k),
                    None => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "unknown kind (`wirewatch explain` lists them)\n",
                        )
                    }
                },
                None => None,
            };
            let since = match q.get("since").filter(|s| !s.is_empty()).map(|s| parse_since(s)) {
                Some(Ok(ns)) => ns,
                Some(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                None => 0,
            };
            let limit = match q.get("limit").filter(|l| !l.is_empty()) {
                None => 100,
                Some(l) => match l.parse::<usize>() {
                    Ok(n) => n.min(10_000),
                    Err(_) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "limit: expected a whole number (at most 10000 are returned)\n",
                        )
                    }
                },
            };
            let mut evs: Vec<Event> = ctx
                .store
                .snapshot()
                .into_iter()
                .filter(|e| kind.is_none_or(|k| e.kind == k) && e.time_last_ns >= since)
                .collect();
            let skip = evs.len().saturating_sub(limit);
            evs.drain(..skip);
            json(&serde_json::to_value(&evs).unwrap_or_default())
        }
        "/api/flows/top" => {
            let mut by_flow: HashMap<String, (u64, Vec<&'static str>)> = HashMap::new();
            for e in ctx.store.snapshot() {
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
                v.into_iter()
                    .map(|(flow, (n, kinds))| {
                        serde_json::json!({"flow": flow, "anomalies": n, "kinds": kinds})
                    })
                    .collect(),
            ))
        }
        p if p.starts_with("/api/evidence/") => served_file(
            ctx,
            &p["/api/evidence/".len()..],
            // Only a file name wirewatch writes: no separators, no parent references.
            dataplane::evidence::is_evidence_name,
            "evidence ids are file names like 1700000000000-syn_rejected-w0-1.pcapng\n",
            ("application/x-pcapng", "no such evidence file (removed by retention?)\n"),
        ),
        p if p.starts_with("/api/report/") => {
            let mut r = served_file(
                ctx,
                &p["/api/report/".len()..],
                // The page of an evidence file: its name with .html, nothing else.
                |id| {
                    id.strip_suffix(".html").is_some_and(|stem| {
                        dataplane::evidence::is_evidence_name(&format!("{stem}.pcapng"))
                    })
                },
                "report ids are evidence file names with .html, like 1700000000000-syn_rejected-w0-1.html\n",
                (
                    "text/html; charset=utf-8",
                    "no such report (removed by retention with its evidence?)\n",
                ),
            );
            if r.status() == StatusCode::OK {
                // The page says it too; the header holds for a browser that ignores it.
                r.headers_mut().insert(
                    hyper::header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(dataplane::report::CSP),
                );
            }
            r
        }
        _ => text(StatusCode::NOT_FOUND, ENDPOINTS),
    }
}

/// `since` as Unix seconds (fractional allowed) or an RFC 3339 time ("2026-11-21T17:00:00Z",
/// "2026-11-21T18:00:00+01:00"; without an offset the time is UTC). jiff parses it: years up to
/// 9999, at most nine fractional digits, a leap second read as :59.
fn parse_since(s: &str) -> Result<u64> {
    // The reply never quotes the input (it can be anything a client sends).
    const WANT: &str = "since: expected Unix seconds or an RFC 3339 time such as \
                        2026-11-21T17:00:00Z (or +01:00 in place of Z; none means UTC)";
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            bail!("{WANT}");
        }
        // Saturating: a time before 1970 is 0, one past 2554 is the end of time.
        return Ok((secs.max(0.0) * 1e9) as u64);
    }
    // An offset (Z, ±hh:mm) or a zone annotation ([…]) is honoured as written; only a time
    // that carries none is taken as UTC.
    let time = s.split_once(['T', 't', ' ']).map_or("", |(_, t)| t);
    let zoned = s.ends_with(['Z', 'z']) || s.contains('[') || time.contains(['+', '-']);
    let t = if zoned {
        s.parse::<jiff::Timestamp>().ok()
    } else {
        s.parse::<jiff::civil::DateTime>()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
            .map(|z| z.timestamp())
            .ok()
    };
    let t = t.context(WANT)?;
    // Before 1970 is 0; jiff's range ends in 9999, inside u64 nanoseconds' saturation.
    Ok(t.as_nanosecond().clamp(0, i128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(token: Option<&str>) -> Ctx {
        Ctx {
            token: token.map(String::from),
            evidence_dir: std::env::temp_dir().join("ww-api-unit-none"),
            prom: None,
            store: Arc::new(EventStore::new(10)),
            health: Arc::default(),
        }
    }

    #[test]
    fn since_accepts_rfc3339_and_unix_seconds() {
        assert_eq!(parse_since("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(parse_since("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(parse_since("2023-11-14T23:13:20.5+01:00").unwrap(), 1_700_000_000_500_000_000);
        assert_eq!(parse_since("2023-11-14T22:13:20").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(parse_since("1969-12-31T23:00:00Z").unwrap(), 0);
        // A zone annotation without an offset is not UTC by default: it is refused or
        // honoured, never silently read as UTC.
        assert_ne!(
            parse_since("2023-11-14T22:13:20[+05:00]").ok(),
            Some(1_700_000_000_000_000_000)
        );
        // Whatever a client sends, the error names what is expected, never the input.
        let e = parse_since("2023-11-14OUTSIDE-THE-EVIDENCE-DIRECTORY").unwrap_err();
        assert!(!e.to_string().contains("OUTSIDE"), "{e}");
        for bad in ["yesterday", "nan", "inf", "2023-13-14T22:13:20Z", "2023-11-14T25:00:00Z"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            percent_decode("2023-11-14T22%3A13%3A20Z", true).unwrap(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(percent_decode("a+b%20c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        for bad in ["%", "%4", "%zz", "%ff"] {
            assert_eq!(percent_decode(bad, true), None, "{bad}");
        }
        let c = ctx(None);
        let r =
            respond(&c, &Method::GET, "/api/events", Some("since=2023-11-14T22%3A13%3A20Z"), None);
        assert_eq!(r.status(), StatusCode::OK);
        let r = respond(&c, &Method::GET, "/api/events", Some("since=%zz"), None);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = respond(&c, &Method::GET, "/api/events", Some("limit=ten"), None);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_token_guards_all_but_healthz_and_health_problems_are_503() {
        let c = ctx(Some("s3cret"));
        assert_eq!(respond(&c, &Method::GET, "/healthz", None, None).status(), StatusCode::OK);
        assert_eq!(respond(&c, &Method::HEAD, "/healthz", None, None).status(), StatusCode::OK);
        for auth in [None, Some(&b"Bearer wrong!"[..]), Some(b"Bearer s3cre"), Some(b"s3cret")] {
            let r = respond(&c, &Method::GET, "/api/events", None, auth);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        }
        let ok = respond(&c, &Method::GET, "/api/events", None, Some(b"Bearer s3cret"));
        assert_eq!(ok.status(), StatusCode::OK);
        let post = respond(&c, &Method::POST, "/api/events", None, Some(b"Bearer s3cret"));
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        c.health.set(vec!["tap0: the XDP program is no longer attached".into()]);
        assert_eq!(
            respond(&c, &Method::GET, "/healthz", None, None).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn evidence_ids_are_our_file_names_only() {
        let c = ctx(None);
        for id in [
            "..%2F..%2Fetc%2Fpasswd",
            "../x.pcapng",
            "%2e%2e",
            "x.pcapng",
            "1-syn_rejected-w0-1.pcapng.tmp",
            "1-syn_rejected-w0-1.pcapng%00",
        ] {
            let r = respond(&c, &Method::GET, &format!("/api/evidence/{id}"), None, None);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{id}");
        }
        let r = respond(&c, &Method::GET, "/api/evidence/1-syn_rejected-w0-1.pcapng", None, None);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn report_ids_are_our_page_names_only() {
        let c = ctx(None);
        for id in [
            "..%2F1-syn_rejected-w0-1.html",
            "index.html",
            "1-syn_rejected-w0-1.pcapng",
            "1-syn_rejected-w0-1.html.tmp",
            "1-not_a_kind-w0-1.html",
            "%2e%2e",
        ] {
            let r = respond(&c, &Method::GET, &format!("/api/report/{id}"), None, None);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{id}");
        }
        let r = respond(&c, &Method::GET, "/api/report/1-syn_rejected-w0-1.html", None, None);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_report_is_served_as_html_under_its_policy_and_the_token() {
        let dir = std::env::temp_dir().join(format!("ww-api-unit-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1-syn_rejected-w0-1.html"), "<!DOCTYPE html><p>page</p>").unwrap();
        let c = Ctx { evidence_dir: dir.clone(), ..ctx(Some("s3cret")) };
        let path = "/api/report/1-syn_rejected-w0-1.html";
        let r = respond(&c, &Method::GET, path, None, None);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the evidence's token rules");
        let r = respond(&c, &Method::GET, path, None, Some(b"Bearer s3cret"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(r.headers()[hyper::header::CONTENT_SECURITY_POLICY], dataplane::report::CSP);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_token_is_refused() {
        let cfg = ApiConfig {
            addr: "0.0.0.0:9464".parse().unwrap(),
            token: Some(String::new()),
            allow_insecure: false,
            evidence_dir: PathBuf::new(),
        };
        assert!(check_bind(&cfg).unwrap_err().to_string().contains("empty"));
    }
}
