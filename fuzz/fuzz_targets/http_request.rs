//! The HTTP server (hyper with wirewatch's limits, timeouts and request handling) on arbitrary
//! bytes from a client, through an in-memory pipe: never a panic or a hang, every answer is an
//! HTTP status line, nothing but /healthz answers 200 without the token, and no file outside
//! the evidence directory is ever served.
#![no_main]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wirewatch::export::api::{serve_stream, Ctx, EventStore};

const TOKEN: &[u8] = b"fuzz-token";
const OUTSIDE: &[u8] = b"OUTSIDE-THE-EVIDENCE-DIRECTORY";

struct World {
    rt: tokio::runtime::Runtime,
    ctx: Arc<Ctx>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("ww-fuzz-http-{}", std::process::id()));
        let evidence = base.join("evidence");
        std::fs::create_dir_all(&evidence).unwrap();
        std::fs::write(evidence.join("1700000000000-syn_rejected-w0-1.pcapng"), b"evidence")
            .unwrap();
        for name in ["secret.pcapng", "1700000000000-syn_rejected-w0-2.pcapng"] {
            std::fs::write(base.join(name), OUTSIDE).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ctx = Arc::new(Ctx {
            token: Some(String::from_utf8(TOKEN.to_vec()).unwrap()),
            evidence_dir: evidence,
            prom: None,
            store: Arc::new(EventStore::new(16)),
            health: Arc::default(),
        });
        World { rt, ctx }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|input: &[u8]| {
    // The first byte says whether the token goes in after the first line, so the fuzzer
    // reaches the handlers behind it (it cannot learn the token: the comparison is
    // constant-time, no memcmp to observe).
    // The next three bits pick the start of a request line, so the fuzzer spends its time
    // on queries, evidence ids and headers rather than on finding the paths.
    let Some((&flags, rest)) = input.split_first() else { return };
    let authorized = flags & 1 == 1;
    const STARTS: [&[u8]; 8] = [
        b"",
        b"GET /api/events?",
        b"GET /api/evidence/",
        b"HEAD /metrics",
        b"GET /api/flows/top",
        b"GET /healthz",
        b"GET /api/events?kind=syn_rejected&since=",
        b"POST /api/events",
    ];
    let mut data = STARTS[usize::from(flags >> 1) & 7].to_vec();
    data.extend_from_slice(rest);
    if authorized {
        let at = data.windows(2).position(|w| w == b"\r\n").map_or(data.len(), |i| i + 2);
        let header = format!("Authorization: Bearer {}\r\n", std::str::from_utf8(TOKEN).unwrap());
        data.splice(at..at, header.into_bytes());
    }
    let data = &data[..];
    let w = world();
    let answer = w.rt.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(serve_stream(server, w.ctx.clone()));
        let (mut rx, mut tx) = tokio::io::split(client);
        let input = data.to_vec();
        let send = tokio::spawn(async move {
            // The server may close early (431, a parse error): the rest is not taken.
            let _ = tx.write_all(&input).await;
            let _ = tx.shutdown().await;
        });
        let mut answer = Vec::new();
        let mut limited = (&mut rx).take(4 << 20);
        let done =
            tokio::time::timeout(Duration::from_secs(5), limited.read_to_end(&mut answer)).await;
        assert!(done.is_ok(), "the server hung on {} bytes", data.len());
        send.abort();
        served.abort();
        answer
    });
    let text = String::from_utf8_lossy(&answer);
    let statuses: Vec<&str> = text
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    if !answer.is_empty() {
        assert!(text.starts_with("HTTP/1."), "not an HTTP answer: {text:?}");
    }
    for s in &statuses {
        assert!(s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()), "status {s:?}");
    }
    if !authorized && !contains(data, TOKEN) && !contains(data, b"/healthz") {
        assert!(!statuses.contains(&"200"), "200 without the token: {text:?}");
    }
    assert!(!contains(&answer, OUTSIDE), "a file outside the evidence directory was served");
});
