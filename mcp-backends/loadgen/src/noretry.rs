//! `--no-retry`: a client that never resends a request, as the official MCP SDKs
//! behave with a POST. Every call is sent once; any socket error (connect refused, a
//! reused connection found closed, a reset, a cut answer), any status but 200, any
//! answer without a `result` is a failed call. After an answer with `Connection: close`
//! the next call goes on a new connection (that is not a retry: nothing was lost), and
//! those answers are counted: they show a server draining.
//!
//! Runs until `--duration` seconds have passed, or until the file named by `--stop-file`
//! exists (a test drives upgrades meanwhile and ends the load when it is done), then
//! prints one line (or one JSON object) and exits 3 when any call failed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::{is_success, Args, Conn};

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    closed_by_server: AtomicU64,
    connections: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.first_failures.lock() {
            if v.len() < 10 {
                v.push(why);
            }
        }
    }
}

/// One connection's loop: `per_second` calls a second at most (0: as fast as it goes).
async fn worker(
    url: hyper::Uri,
    extra: Vec<(String, String)>,
    body: Arc<super::Prepared>,
    per_second: f64,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> Result<()> {
    let mut conn = Conn::open(&url, &extra, super::Era::Legacy).await?;
    conn.initialize().await?;
    counts.connections.fetch_add(1, Ordering::Relaxed);
    let session = conn.session.clone();
    let mut pace = (per_second > 0.0).then(|| {
        let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iv
    });
    let mut current = Some(conn);
    while !stop.load(Ordering::Relaxed) {
        if let Some(iv) = pace.as_mut() {
            iv.tick().await;
        }
        let mut c = match current.take() {
            Some(c) => c,
            None => match Conn::open(&url, &extra, super::Era::Legacy).await {
                Ok(mut c) => {
                    counts.connections.fetch_add(1, Ordering::Relaxed);
                    c.session = session.clone();
                    c
                }
                Err(e) => {
                    counts.fail(format!("connect: {e:#}"));
                    // Do not spin on a server that is gone.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        match c.post_full(&body).await {
            Ok((status, close, bytes)) => {
                if is_success(status, &bytes) {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.fail(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ));
                }
                if close {
                    counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                } else {
                    current = Some(c);
                }
            }
            Err(e) => counts.fail(format!("socket: {e:#}")),
        }
    }
    Ok(())
}

pub async fn run(args: Arc<Args>, url: hyper::Uri, body: Arc<super::Prepared>) -> Result<()> {
    let extra = crate::parse_headers(&args.headers)?;
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let per_second = args.rate / args.connections.max(1) as f64;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (url, extra, body, stop, counts) = (
            url.clone(),
            extra.clone(),
            body.clone(),
            stop.clone(),
            counts.clone(),
        );
        tasks.push(tokio::spawn(worker(
            url, extra, body, per_second, stop, counts,
        )));
    }
    let started = Instant::now();
    let limit = Duration::from_secs_f64(args.duration);
    while started.elapsed() < limit && !stop_file_exists(args.stop_file.as_ref()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    report(&args, &counts, elapsed);
    if counts.failed.load(Ordering::Relaxed) > 0 {
        std::process::exit(3);
    }
    Ok(())
}

fn stop_file_exists(path: Option<&PathBuf>) -> bool {
    path.is_some_and(|p| p.exists())
}

fn report(args: &Args, counts: &Counts, elapsed: f64) {
    let ok = counts.ok.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let closes = counts.closed_by_server.load(Ordering::Relaxed);
    let conns = counts.connections.load(Ordering::Relaxed);
    let rps = ok as f64 / elapsed;
    let first: Vec<String> = counts
        .first_failures
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    if args.json {
        println!(
            "{}",
            json!({"mode": "no-retry", "connections": args.connections, "ok": ok,
                   "failed": failed, "connection_close": closes, "connections_opened": conns,
                   "seconds": elapsed, "rps": rps, "first_failures": first})
        );
    } else {
        println!(
            "no-retry: {ok} ok, {failed} failed in {elapsed:.1}s: {rps:.0} calls/s; \
             {closes} answers with Connection: close; {conns} connections opened"
        );
        for f in first {
            println!("  failed: {f}");
        }
    }
}
