//! The audit log through the real gateway: who did what with which outcome, the
//! record surviving a PostgreSQL outage and a `kill -9` of the gateway, and the
//! `audit tail` reader.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::issuer::*;
use crate::common::pg::OwnPostgres;
use crate::common::*;
use serde_json::{json, Value};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-At", "-c", sql])
        .output()
        .expect("psql");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn count(url: &str, schema: &str, filter: &str) -> i64 {
    psql(
        url,
        &format!("SELECT count(*) FROM {schema}.audit_events WHERE {filter}"),
    )
    .parse()
    .unwrap_or(-1)
}

struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        psql(PG, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
    }
}

fn audit_table(url: &str, schema: &str, spool: &std::path::Path, extra: &str) -> String {
    format!(
        "\n[audit]\npostgres_url = \"{url}\"\nschema = \"{schema}\"\nspool_dir = \"{}\"\nflush_interval_ms = 20\n{extra}\n",
        spool.display()
    )
}

#[test]
fn a_scripted_session_leaves_exactly_its_rows() {
    let schema = Schema(unique("audit_e2e").replace('-', "_"));
    let issuer = start_issuer();
    let open = spawn_mock("open", &["--no-dynamic", "--json"]);
    let grafana = spawn_mock("grafana", &["--no-dynamic", "--json"]);
    let flaky = spawn_mock(
        "flaky",
        &["--no-dynamic", "--json", "--fail-methods", "tools/call"],
    );
    let spool = tempdir();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 3600\n[auth]\nmode = \"oauth\"\nissuer = \"{}\"\n{}\n[[backend]]\nname = \"open\"\nurl = \"{}\"\n\n[[backend]]\nname = \"grafana\"\nurl = \"{}\"\nallow_groups = [\"sre\"]\n\n[[backend]]\nname = \"flaky\"\nurl = \"{}\"\n",
        issuer.url,
        audit_table(PG, &schema.0, &spool, "log_arguments = true"),
        open.url,
        grafana.url,
        flaky.url
    );
    let gw = spawn_gateway(&cfg);
    let token = mint_with(
        json!({"iss": issuer.url, "sub": "sub-carol", "aud": gw.url, "exp": now() + 600, "iat": now(),
               "email": "carol@example.com", "groups": ["dev"], "client_id": "e2e-client", "scope": "mcp"}),
        KEY1,
        "k1",
    );
    let auth = format!("Bearer {token}");
    let mut cl = Client::new(&gw.url);
    let post = |cl: &Client, msg: Value| {
        cl.post_raw(
            msg.to_string(),
            &[("authorization", &auth), ("user-agent", "audit-e2e/1")],
        )
    };
    let a = post(
        &cl,
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
    );
    cl.session = a
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let call = |name: &str, args: Value| {
        post(&cl, json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":args}})).response(&json!(1))
    };
    assert_eq!(
        text_of(&call(
            "open__echo",
            json!({"text": "hello", "api_key": "sk-live-123"})
        )),
        "hello"
    );
    assert_eq!(
        call("grafana__echo", json!({"text": "x"}))["error"]["code"],
        -32003
    );
    assert_eq!(
        call("flaky__echo", json!({"text": "y"}))["error"]["code"],
        -32603
    );

    check_call_rows(&schema.0);
    check_audit_tail(&schema.0);
}

/// The session's three calls as rows: who, what, the outcome and why, arguments kept
/// with their secrets redacted, digests there.
fn check_call_rows(s: &str) {
    let url = PG;
    wait_until(Duration::from_secs(20), || {
        count(url, s, "rpc_method = 'tools/call'") == 3
    });
    let rows = psql(url, &format!(
        "SELECT backend, target, coalesce(rpc_error::text, 'ok'), email, client_id, http_status, user_agent, args::text, \
         coalesce(detail, '') FROM {s}.audit_events WHERE rpc_method = 'tools/call' ORDER BY ts"));
    let rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        &rows[0][..7],
        &[
            "open",
            "open__echo",
            "ok",
            "carol@example.com",
            "e2e-client",
            "200",
            "audit-e2e/1"
        ]
    );
    assert!(
        rows[0][7].contains("hello") && !rows[0][7].contains("sk-live-123"),
        "arguments kept, secrets redacted: {}",
        rows[0][7]
    );
    assert_eq!(&rows[1][..3], &["grafana", "grafana__echo", "-32003"]);
    assert_eq!(&rows[2][..3], &["flaky", "flaky__echo", "-32603"]);
    // The record says why: the refusal in words, the backend's own error message.
    assert_eq!(rows[0][8], "", "{rows:?}");
    assert!(
        rows[1][8].starts_with("refused by policy: Forbidden: carol@example.com may not use"),
        "{rows:?}"
    );
    assert!(!rows[2][8].is_empty(), "{rows:?}");
    // Every row of the session belongs to carol, and digests are there.
    assert_eq!(count(url, s, "email <> 'carol@example.com'"), 0);
    assert_eq!(
        count(url, s, "rpc_method = 'tools/call' AND args_digest IS NULL"),
        0
    );
}

/// The reader a person uses (`mcp-gateway audit tail`) shows them.
fn check_audit_tail(s: &str) {
    let url = PG;
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .args([
            "audit",
            "--postgres-url",
            url,
            "--schema",
            s,
            "tail",
            "--user",
            "carol@example.com",
            "--json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in ["open__echo", "grafana__echo", "flaky__echo"] {
        assert!(
            text.contains(needle),
            "{needle} missing from audit tail: {text}"
        );
    }
}

/// 20,000 calls while PostgreSQL is killed for several seconds and started again.
#[test]
fn twenty_thousand_calls_survive_a_database_outage() {
    let pg = OwnPostgres::start();
    let backend = spawn_mock("load", &["--no-dynamic", "--json"]);
    let spool = tempdir();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 3600\n{}\n[[backend]]\nname = \"load\"\nurl = \"{}\"\n",
        audit_table(&pg.url(), "public", &spool, ""),
        backend.url
    );
    let gw = spawn_gateway(&cfg);
    const TOTAL: usize = 20_000;
    const THREADS: usize = 8;
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (url, done, failed) = (gw.url.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut cl = Client::new(&url);
                cl.initialize();
                for _ in 0..TOTAL / THREADS {
                    let r = cl.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"load__echo","arguments":{"text":"x"}}}));
                    if r.status != 200 || !r.body.contains("\"result\"") {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Kill the database a little into the load, keep it down for several seconds.
    wait_until(Duration::from_secs(60), || {
        done.load(Ordering::Relaxed) >= TOTAL / 10
    });
    pg.down();
    let down_at = Instant::now();
    wait_until(Duration::from_secs(60), || {
        down_at.elapsed() >= Duration::from_secs(4) || done.load(Ordering::Relaxed) >= TOTAL
    });
    let during = done.load(Ordering::Relaxed);
    pg.up();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a request failed while the database was down"
    );
    assert!(during > TOTAL / 10, "no load ran during the outage");
    let url = pg.url();
    wait_until(Duration::from_secs(90), || {
        count(&url, "public", "rpc_method = 'tools/call'") == TOTAL as i64
    });
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) - count(DISTINCT id) FROM public.audit_events"
        ),
        "0",
        "duplicate ids"
    );
    assert_eq!(
        count(&url, "public", "rpc_method = 'tools/call'"),
        TOTAL as i64
    );
}

/// Events acknowledged to the spool survive `kill -9` of the gateway and reach the
/// database from the next process.
#[test]
fn a_killed_gateway_loses_nothing_it_spooled() {
    let pg = OwnPostgres::start();
    pg.down();
    let backend = spawn_mock("k", &["--no-dynamic", "--json"]);
    let spool = tempdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 3600\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n{}\n[[backend]]\nname = \"k\"\nurl = \"{}\"\n",
        audit_table(&pg.url(), "public", &spool, "write_ahead = true\nconnect_timeout_ms = 500"),
        backend.url
    );
    let mut gw = spawn_gateway(&cfg);
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    const N: usize = 300;
    for _ in 0..N {
        assert_eq!(text_of(&cl.call_tool("k__echo", json!({"text": "z"}))), "z");
    }
    // Every call's record has been written to the spool (write-ahead) before the kill.
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let spooled = || {
        http_get(&metrics)
            .map(|(_, t)| {
                t.lines()
                    .find(|l| l.starts_with("mcpgw_audit_spool_events "))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .unwrap_or(0.0)
    };
    wait_until(Duration::from_secs(20), || spooled() >= (N + 2) as f64);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGKILL) };
    let _ = gw.child.wait();
    gw.kill();
    pg.up();
    let _gw2 = spawn_gateway(&cfg);
    let url = pg.url();
    wait_until(Duration::from_secs(60), || {
        count(&url, "public", "rpc_method = 'tools/call'") == N as i64
    });
}
