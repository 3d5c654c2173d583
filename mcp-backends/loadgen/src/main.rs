//! `mcp-load`: drives an MCP endpoint over Streamable HTTP and prints throughput and
//! latency. Each connection is one keep-alive HTTP/1.1 connection with its own MCP
//! session, so the numbers measure the server, not the client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    /// tools/call in a loop.
    Call,
    /// tools/list in a loop.
    List,
    /// Open --sessions sessions, keep them, report, hold for --hold seconds.
    Sessions,
    /// One call of --tool at a time, a tool whose server asks the client for input:
    /// every request answered as a client of --era does (asking.rs); prints the
    /// latency of the whole round trip.
    Asking,
}

/// The protocol era the load speaks.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Era {
    /// 2025-11-25: `initialize` opens a session per connection; calls carry its id.
    #[value(name = "2025")]
    Legacy,
    /// 2026-07-28: no session; every request carries `_meta` and `Mcp-Method` /
    /// `Mcp-Name`; each connection starts with one `server/discover`.
    #[value(name = "2026-07-28")]
    Modern,
}

/// The revision a modern request names.
const MODERN: &str = "2026-07-28";

#[derive(Parser, Debug)]
#[command(
    name = "mcp-load",
    about = "Load generator for MCP Streamable HTTP endpoints"
)]
struct Args {
    /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "call")]
    mode: Mode,
    /// Protocol era of every request (`sessions` mode: 2025 only).
    #[arg(long, value_enum, default_value = "2025")]
    era: Era,
    /// Concurrent connections (one session each).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long to run, in seconds (after warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up before measuring, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Tool to call in `call` mode.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Arguments of the tool call (JSON).
    #[arg(long, default_value = r#"{"text":"hi"}"#)]
    arguments: String,
    /// Sessions to open in `sessions` mode.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Seconds to hold the sessions open in `sessions` mode.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Extra request header, "name: value" (repeatable), e.g. an Authorization header.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Stop after this many seconds whatever happens (safety bound).
    #[arg(long, default_value_t = 300.0)]
    max_seconds: f64,
    /// Never resend a call; count every socket error as a failed call, and the answers
    /// with `Connection: close` (see noretry.rs). `--warmup` is not used.
    #[arg(long)]
    no_retry: bool,
    /// With --no-retry: calls per second in all, at most (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// With --no-retry: stop as soon as this file exists (or after --duration).
    #[arg(long, value_name = "FILE")]
    stop_file: Option<std::path::PathBuf>,
}

mod asking;
mod noretry;

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    path: hyper::Uri,
    /// The headers of every request on this connection (host, content type, accept,
    /// the era's version, `--header`s), made once: a load loop's per-call cost is what
    /// is measured, and parsing its own headers again and again is not part of it.
    base: HeaderMap,
    session: Option<String>,
    era: Era,
}

impl Conn {
    async fn open(url: &hyper::Uri, extra: &[(String, String)], era: Era) -> Result<Conn> {
        let host = url.host().ok_or_else(|| anyhow!("url has no host"))?;
        let port = url.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connect {host}:{port}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut base = HeaderMap::new();
        let version = match era {
            Era::Legacy => "2025-11-25",
            Era::Modern => MODERN,
        };
        for (k, v) in [
            ("host", format!("{host}:{port}").as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", version),
        ]
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            let name = HeaderName::from_bytes(k.as_bytes())
                .with_context(|| format!("header name {k:?}"))?;
            let value = HeaderValue::from_str(v).with_context(|| format!("value of header {k}"))?;
            base.append(name, value);
        }
        Ok(Conn {
            sender,
            path: url.path().parse().context("url path")?,
            base,
            session: None,
            era,
        })
    }

    async fn post(&mut self, body: &Value) -> Result<(u16, Option<String>, Bytes)> {
        self.post_prepared(&Prepared::of(body)?).await
    }

    /// [`Conn::post`] of a body made ready once (the load loop sends the same one).
    async fn post_prepared(&mut self, body: &Prepared) -> Result<(u16, Option<String>, Bytes)> {
        let (status, sid, _, bytes) = self.send(body).await?;
        Ok((status, sid, bytes))
    }

    /// One call: (status, answered with `Connection: close`, body).
    async fn post_full(&mut self, body: &Prepared) -> Result<(u16, bool, Bytes)> {
        let (status, _, close, bytes) = self.send(body).await?;
        Ok((status, close, bytes))
    }

    async fn send(&mut self, body: &Prepared) -> Result<(u16, Option<String>, bool, Bytes)> {
        let req = self.request(body)?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let close = resp.headers().get_all("connection").iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("close"))
        });
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, sid, close, bytes))
    }

    /// A POST of `body` with the headers of this connection's era and session.
    fn request(&self, body: &Prepared) -> Result<hyper::Request<Full<Bytes>>> {
        let mut req = hyper::Request::new(Full::new(body.bytes.clone()));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        *h = self.base.clone();
        if self.era == Era::Modern {
            if let Some(m) = &body.method {
                h.insert("mcp-method", m.clone());
            }
            if let Some(n) = &body.name {
                h.insert("mcp-name", n.clone());
            }
        }
        if let Some(s) = &self.session {
            h.insert("mcp-session-id", HeaderValue::from_str(s)?);
        }
        Ok(req)
    }

    /// Opens the connection's session (2025), or asks `server/discover` once (2026).
    async fn initialize(&mut self) -> Result<()> {
        self.initialize_with(json!({})).await
    }

    /// [`Conn::initialize`], declaring client capabilities `caps`.
    async fn initialize_with(&mut self, caps: Value) -> Result<()> {
        if self.era == Era::Modern {
            let discover = json!({"jsonrpc":"2.0","id":0,"method":"server/discover",
                                  "params":{"_meta": modern_meta()}});
            let (status, _, body) = self.post(&discover).await?;
            if status != 200 {
                bail!(
                    "server/discover: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            return Ok(());
        }
        let (status, sid, body) = self
            .post(
                &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":caps,
                "clientInfo":{"name":"mcp-load","version":"1"}}}),
            )
            .await?;
        if status != 200 {
            bail!(
                "initialize: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        self.session = sid;
        let (status, _, _) = self
            .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await?;
        if status != 202 {
            bail!("notifications/initialized: HTTP {status}");
        }
        Ok(())
    }
}

/// A reply is good when HTTP is 200 and it holds a `result` (JSON or SSE).
fn is_success(status: u16, body: &[u8]) -> bool {
    if status != 200 {
        return false;
    }
    let text = String::from_utf8_lossy(body);
    text.contains("\"result\"") && !text.contains("\"isError\":true")
}

#[derive(Default)]
struct Totals {
    ok: AtomicU64,
    errors: AtomicU64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `_meta` every modern request carries.
fn modern_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": MODERN,
           "io.modelcontextprotocol/clientCapabilities": {},
           "io.modelcontextprotocol/clientInfo": {"name": "mcp-load", "version": "1"}})
}

/// A request body serialized once, with what its modern headers mirror (the era of a
/// connection decides whether they are sent): a load loop sends the same body again and
/// again, and what it costs to make is not part of what is measured.
struct Prepared {
    bytes: Bytes,
    method: Option<HeaderValue>,
    name: Option<HeaderValue>,
}

impl Prepared {
    fn of(body: &Value) -> Result<Prepared> {
        let header = |what: &str, v: Option<&Value>| -> Result<Option<HeaderValue>> {
            v.and_then(Value::as_str)
                .map(|t| {
                    HeaderValue::from_str(t).with_context(|| format!("{what} {t:?} as a header"))
                })
                .transpose()
        };
        Ok(Prepared {
            bytes: Bytes::from(serde_json::to_vec(body)?),
            method: header("method", body.get("method"))?,
            name: header(
                "name",
                body.pointer("/params/name").or(body.pointer("/params/uri")),
            )?,
        })
    }
}

fn call_body(args: &Args) -> Result<Value> {
    let mut body = match args.mode {
        Mode::Call => {
            let arguments: Value =
                serde_json::from_str(&args.arguments).context("--arguments is not JSON")?;
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
                   "params":{"name": args.tool, "arguments": arguments}})
        }
        _ => json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}),
    };
    if args.era == Era::Modern {
        body["params"]["_meta"] = modern_meta();
    }
    Ok(body)
}

async fn run_loop(args: Arc<Args>, url: hyper::Uri) -> Result<()> {
    let body = Arc::new(Prepared::of(&call_body(&args)?)?);
    if args.no_retry {
        if args.era == Era::Modern {
            bail!("--no-retry speaks the 2025 era (one session per run)");
        }
        return noretry::run(args, url, body).await;
    }
    let era = args.era;
    let totals = Arc::new(Totals::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let extra = parse_headers(&args.headers)?;
    for _ in 0..args.connections {
        let extra = extra.clone();
        let (url, body, totals, measuring, stop) = (
            url.clone(),
            body.clone(),
            totals.clone(),
            measuring.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut conn = Conn::open(&url, &extra, era).await?;
            conn.initialize().await?;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match conn.post_prepared(&body).await {
                    Ok((s, _, b)) => is_success(s, &b),
                    Err(_) => {
                        // Reconnect and go on; the error is counted.
                        conn = Conn::open(&url, &extra, era).await?;
                        conn.initialize().await?;
                        false
                    }
                };
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        totals.ok.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok::<Vec<f64>, anyhow::Error>(lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let ok = totals.ok.load(Ordering::Relaxed);
    let errors = totals.errors.load(Ordering::Relaxed);
    let rps = ok as f64 / elapsed;
    let (p50, p90, p99) = (
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
    );
    if args.json {
        println!(
            "{}",
            json!({"mode": format!("{:?}", args.mode).to_lowercase(), "connections": args.connections,
                   "ok": ok, "errors": errors, "seconds": elapsed, "rps": rps,
                   "p50_ms": p50, "p90_ms": p90, "p99_ms": p99})
        );
    } else {
        println!(
            "{} ok, {errors} errors in {elapsed:.1}s: {rps:.0} req/s; latency p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms",
            ok
        );
    }
    if errors > 0 {
        std::process::exit(3);
    }
    Ok(())
}

async fn run_sessions(args: Arc<Args>, url: hyper::Uri) -> Result<()> {
    let started = Instant::now();
    if args.era == Era::Modern {
        bail!("--mode sessions opens 2025 sessions: the 2026-07-28 era has none");
    }
    let era = args.era;
    let per = args.sessions.div_ceil(args.connections.max(1));
    let mut tasks = Vec::new();
    let extra = parse_headers(&args.headers)?;
    for w in 0..args.connections.max(1) {
        let url = url.clone();
        let extra = extra.clone();
        let n = per.min(args.sessions.saturating_sub(w * per));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url, &extra, era).await?;
            for _ in 0..n {
                conn.session = None;
                conn.initialize().await?;
            }
            Ok::<usize, anyhow::Error>(n)
        }));
    }
    let mut opened = 0;
    for t in tasks {
        opened += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"mode": "sessions", "opened": opened, "seconds": secs})
        );
    } else {
        println!(
            "opened {opened} sessions in {secs:.1}s; holding for {}s",
            args.hold
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    Ok(())
}

fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>> {
    raw.iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow!("--header {h:?} is not \"name: value\""))
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let url: hyper::Uri = args.url.parse().context("--url")?;
    if url.scheme_str() != Some("http") {
        bail!("--url must be http://");
    }
    let bound = Duration::from_secs_f64(args.max_seconds);
    let work = async {
        match args.mode {
            Mode::Sessions => run_sessions(args.clone(), url).await,
            Mode::Asking => {
                let arguments: Value =
                    serde_json::from_str(&args.arguments).context("--arguments is not JSON")?;
                let extra = parse_headers(&args.headers)?;
                let times = (args.warmup, args.duration);
                asking::run(
                    url, extra, args.era, &args.tool, arguments, times, args.json,
                )
                .await
            }
            _ => run_loop(args.clone(), url).await,
        }
    };
    tokio::time::timeout(bound, work)
        .await
        .map_err(|_| anyhow!("gave up after --max-seconds {}", args.max_seconds))?
}
