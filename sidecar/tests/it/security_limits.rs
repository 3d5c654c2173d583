//! Abuse limits of the authorization server, black-box against the real binaries:
//! unauthenticated lookups (`/authorize`, metadata-document fetches) are rate-limited
//! per source address; unused registrations, cached metadata documents and stale
//! sign-ins are forgotten; every failure to fetch a metadata document reads the same;
//! slow request bodies are cut off while a normal sign-in goes on; IPv6 transition
//! addresses are never fetched.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DOC_REDIRECT: &str = "http://127.0.0.1:7777/callback";

#[derive(Clone, Copy)]
enum Doc {
    /// A valid metadata document whose `client_id` is the requested URL.
    Good,
    /// `404 Not Found`.
    NotFound,
    /// Reads the request and never answers.
    Hang,
}

/// A metadata-document server on 127.0.0.1; returns its base URL (`http://ADDR`).
async fn doc_server(mode: Doc) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let b = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let base = b.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let resp = match mode {
                    Doc::Good => {
                        let body = json!({"client_id": format!("{base}{path}"),
                            "client_name": "Metadata Client", "redirect_uris": [DOC_REDIRECT],
                            "token_endpoint_auth_method": "none"})
                        .to_string();
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Doc::NotFound => {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .into()
                    }
                    Doc::Hang => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                };
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

/// A metadata-document client at `url` (its redirect URI is `DOC_REDIRECT`).
fn doc_client(url: &str) -> Registered {
    Registered {
        client_id: url.to_string(),
        redirect_uri: DOC_REDIRECT.into(),
        body: Value::Null,
    }
}

async fn get_authorize(sidecar: &Sidecar, client_id: &str, xff: Option<&str>) -> reqwest::Response {
    let p = pkce();
    let mut rb = http().get(AuthRequest::new(&doc_client(client_id), &p).url(sidecar));
    if let Some(ip) = xff {
        rb = rb.header("x-forwarded-for", ip);
    }
    rb.send().await.expect("authorize")
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("HTTP {} without Retry-After", r.status()))
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test]
async fn authorize_and_metadata_lookups_are_rate_limited_per_address() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("lookuprl");
    // The harness lifts the limit; this test runs with the defaults, behind a proxy
    // that names the client in X-Forwarded-For (requests without it: the TCP peer).
    let sidecar = Sidecar::start_with(&google, &opts, |c| {
        *c = c.replace("lookups_burst = 100000", "").replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nclient_ip_header = \"x-forwarded-for\"",
        )
    })
    .await;
    let docs = doc_server(Doc::Good).await;

    // 120 sign-ins with fresh metadata-document clients from one address.
    let mut first_429 = None;
    let mut limited = 0;
    let mut wait_s = 0;
    for i in 0..120 {
        let r = get_authorize(&sidecar, &format!("{docs}/c/{i}-{}.json", random(4)), None).await;
        match r.status().as_u16() {
            200 => {}
            429 => {
                limited += 1;
                first_429.get_or_insert(i);
                wait_s = retry_after(&r);
                assert!((1..=60).contains(&wait_s), "Retry-After {wait_s}");
                assert!(r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"));
            }
            s => panic!(
                "request {i}: HTTP {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
    let first = first_429.expect("no 429 in 120 /authorize requests from one address");
    assert!(first <= 40, "first 429 only at request {first}");
    assert!(limited >= 60, "only {limited} of 120 refused");

    // /token with a metadata-document client not yet fetched is limited too (JSON).
    let r = http()
        .post(format!("{}/token", sidecar.url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", &format!("{docs}/t/{}.json", random(4))),
            ("code_verifier", "v"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 429);
    retry_after(&r);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "too_many_requests", "{v}");

    // After the advertised wait the same address gets through again.
    tokio::time::sleep(Duration::from_secs(wait_s)).await;
    let r = get_authorize(&sidecar, &format!("{docs}/after/{}.json", random(4)), None).await;
    assert_eq!(
        r.status(),
        200,
        "after Retry-After: {}",
        r.text().await.unwrap_or_default()
    );

    // The forwarded client address is the one limited.
    let mut refused = false;
    for i in 0..60 {
        let id = format!("{docs}/x/{i}-{}.json", random(4));
        if get_authorize(&sidecar, &id, Some("203.0.113.7"))
            .await
            .status()
            == 429
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "203.0.113.7 was never limited");
    let id = format!("{docs}/y/{}.json", random(4));
    let r = get_authorize(&sidecar, &id, Some("203.0.113.8")).await;
    assert_eq!(
        r.status(),
        200,
        "another forwarded address has its own budget"
    );
    sidecar.drop_schema().await;
}

async fn db() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(DB_URL, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

async fn count(db: &tokio_postgres::Client, sql: &str, arg: &str) -> i64 {
    db.query_one(sql, &[&arg]).await.expect(sql).get(0)
}

/// Polls `sql` (one `$1` argument, one count) until it returns `want`.
async fn wait_count(db: &tokio_postgres::Client, sql: &str, arg: &str, want: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = count(db, sql, arg).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {n} row(s) (want {want})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unused_registrations_metadata_clients_and_stale_sign_ins_expire() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("expiry");
    let sidecar = Sidecar::start_with(&google, &opts, |c| {
        *c = c
            .replace(
                "allow_http_cimd = true",
                "allow_http_cimd = true\nunused_registration_ttl_s = 4\ncimd_max_cache_s = 1",
            )
            .replace("pool_size = 8", "pool_size = 8\ncleanup_interval_s = 1")
            + "\n[authorization]\npending_ttl_s = 3\n";
    })
    .await;
    let s = &sidecar.schema;
    let db = db().await;
    let clients = format!("SELECT count(*) FROM {s}.clients WHERE client_id = $1");
    let pending = format!("SELECT count(*) FROM {s}.pending_authorizations WHERE client_id = $1");

    // A registration used to obtain a token, and one never used.
    let used = register_public(&sidecar).await;
    let unused = register_public(&sidecar).await;
    let b = browser();
    let (p, code) = sign_in_new(&b, &sidecar, &used, "alice@example.com").await;
    let (st, v) = exchange(&sidecar, &used, &code, &p).await;
    assert_eq!(st, 200, "{v}");

    // A metadata-document client and a sign-in left unfinished.
    let docs = doc_server(Doc::Good).await;
    let doc_id = format!("{docs}/expiry.json");
    let r = get_authorize(&sidecar, &doc_id, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        count(&db, &clients, &doc_id).await,
        1,
        "metadata client cached"
    );
    assert_eq!(count(&db, &pending, &doc_id).await, 1, "sign-in pending");

    wait_count(&db, &pending, &doc_id, 0, "expired pending sign-in deleted").await;
    wait_count(
        &db,
        &clients,
        &doc_id,
        0,
        "expired metadata client forgotten",
    )
    .await;
    wait_count(
        &db,
        &clients,
        &unused.client_id,
        0,
        "unused registration deleted",
    )
    .await;
    assert_eq!(
        count(&db, &clients, &used.client_id).await,
        1,
        "a used registration is kept"
    );

    let r = get_authorize(&sidecar, &unused.client_id, None).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap_or_default();
    assert!(page.contains("unknown client_id"), "{page}");
    let p = pkce();
    let r = http()
        .get(AuthRequest::new(&used, &p).url(&sidecar))
        .send()
        .await
        .expect("authorize");
    assert_eq!(r.status(), 200, "the used registration still signs in");
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn every_metadata_fetch_failure_reads_the_same() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("cimderr");
    opts.extra = "cimd_timeout_ms = 700".into();
    let sidecar = Sidecar::start(&google, &opts).await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        format!("http://{}/client.json", l.local_addr().expect("addr"))
    };
    let not_found = format!("{}/client.json", doc_server(Doc::NotFound).await);
    let hangs = format!("{}/client.json", doc_server(Doc::Hang).await);

    let mut pages = Vec::new();
    for id in [&closed, &not_found, &hangs] {
        let r = get_authorize(&sidecar, id, None).await;
        let status = r.status().as_u16();
        pages.push((status, r.text().await.unwrap_or_default()));
    }
    assert_eq!(pages[0].0, 400, "{}", pages[0].1);
    assert_eq!(pages[0], pages[1], "closed port vs HTTP 404 on /authorize");
    assert_eq!(pages[0], pages[2], "closed port vs timeout on /authorize");

    let mut bodies = Vec::new();
    for id in [&closed, &not_found, &hangs] {
        let (st, v, _) = token(
            &sidecar,
            &[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("client_id", id),
            ],
        )
        .await;
        bodies.push((st, v));
    }
    assert_eq!(bodies[0].0, 401, "{}", bodies[0].1);
    assert_eq!(bodies[0], bodies[1], "closed port vs HTTP 404 on /token");
    assert_eq!(bodies[0], bodies[2], "closed port vs timeout on /token");
    sidecar.drop_schema().await;
}

/// Sends a request head announcing a 100,000-byte body, then one body byte a second;
/// returns what the server answered before closing, or `None` if it never closed
/// within `hold`.
async fn slow_body(mut s: TcpStream, path: &str, hold: Duration) -> Option<String> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100000\r\n\r\na"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return Some(String::new());
    }
    let deadline = tokio::time::Instant::now() + hold;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            n = s.read(&mut buf) => match n {
                Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => { let _ = s.write_all(b"a").await; }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Holds a connection that sends nothing; returns whether the server closed it
/// within `hold`.
async fn silent(mut s: TcpStream, hold: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(hold, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

#[tokio::test]
async fn slow_bodies_are_cut_off_and_a_sign_in_still_completes() {
    let google = FakeGoogle::start().await;
    let sidecar = Sidecar::start(&google, &SidecarOptions::new("slowloris")).await;
    let addr = host_port(&sidecar.url);
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..2000 {
        let s = TcpStream::connect(&addr).await.expect("connect");
        let path = if i % 2 == 0 { "/token" } else { "/register" };
        slow.push(tokio::spawn(slow_body(s, path, Duration::from_secs(25))));
    }
    // Every slow connection has sent its head and is trickling its body: sign in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let client = register_public(&sidecar).await;
    let b = browser();
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let (st, v) = exchange(&sidecar, &client, &code, &p).await;
    let took = t.elapsed();
    println!("sign-in under 2,000 slow connections took {took:?}");
    assert_eq!(st, 200, "{v}");
    assert!(
        took < Duration::from_secs(2),
        "sign-in under 2,000 slow connections took {took:?}"
    );

    // The server cuts every slow body off at its deadline (default 10 s), with 408.
    let mut open = 0;
    let mut not_408 = Vec::new();
    for h in slow {
        match h.await.expect("task") {
            None => open += 1,
            Some(resp) if !resp.starts_with("HTTP/1.1 408") => not_408.push(resp),
            Some(_) => {}
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 2,000 slow connections still open after 25 s"
    );
    assert!(
        not_408.is_empty(),
        "{} not answered 408: {:?}",
        not_408.len(),
        &not_408[..1]
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "cut before the body deadline"
    );
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_and_idle_ones_are_closed() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("conncap");
    let sidecar = Sidecar::start_with(&google, &opts, |c| {
        *c = c.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_connections = 20\nbody_timeout_s = 2\nheader_timeout_s = 2",
        );
    })
    .await;
    let addr = host_port(&sidecar.url);
    let mut slow = Vec::new();
    let mut idle = Vec::new();
    for i in 0..20 {
        let s = TcpStream::connect(&addr).await.expect("connect");
        if i % 2 == 0 {
            slow.push(tokio::spawn(slow_body(
                s,
                "/token",
                Duration::from_secs(15),
            )));
        } else {
            idle.push(tokio::spawn(silent(s, Duration::from_secs(15))));
        }
    }
    // The cap is full: a 21st connection waits in the backlog until a slot frees.
    let t = Instant::now();
    let r = within(
        "healthz past the cap",
        http().get(format!("{}/healthz", sidecar.url)).send(),
    )
    .await
    .expect("healthz");
    let waited = t.elapsed();
    assert_eq!(r.status(), 200);
    assert!(
        waited >= Duration::from_millis(1200),
        "answered after {waited:?}: no cap"
    );
    for h in slow {
        let resp = h.await.expect("task").expect("slow body connection closed");
        assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    }
    for h in idle {
        assert!(
            h.await.expect("task"),
            "a silent connection was never closed"
        );
    }
    sidecar.drop_schema().await;
}

/// `[audit]` writing to `schema` of the test database.
fn audit_table(schema: &str, dir: &TempDir) -> String {
    format!(
        "[audit]\npostgres_url = \"{DB_URL}\"\nschema = \"{schema}\"\nspool_dir = \"{}\"\nfile = \"{}\"\nflush_interval_ms = 50\n",
        dir.path.join("spool").display(),
        dir.path.join("audit.jsonl").display(),
    )
}

#[tokio::test]
async fn ipv6_transition_addresses_are_refused_without_a_connection() {
    let google = FakeGoogle::start().await;
    let audit_schema = schema("v6audit");
    let dir = TempDir::new("v6audit");
    let mut opts = SidecarOptions::new("v6");
    opts.extra = audit_table(&audit_schema, &dir);
    let sidecar = Sidecar::start_with(&google, &opts, |c| {
        *c = c.replace("allow_private_cimd = true", "allow_private_cimd = false");
    })
    .await;
    // A name that resolves only to loopback: refused by the resolver, a fetch failure.
    let reference = get_authorize(&sidecar, "http://localhost:9/client.json", None).await;
    let reference = (
        reference.status().as_u16(),
        reference.text().await.unwrap_or_default(),
    );
    assert_eq!(reference.0, 400);
    let literals = [
        "http://[2002:7f00:1::1]/client.json", // 6to4 of 127.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/client.json", // Teredo
        "http://[fec0::1]/client.json",        // site-local
    ];
    for id in literals {
        let r = get_authorize(&sidecar, id, None).await;
        let got = (r.status().as_u16(), r.text().await.unwrap_or_default());
        assert_eq!(got, reference, "{id}: the uniform fetch-failure answer");
    }
    // The audit log says why: the address was refused before any connection.
    let db = db().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = db
            .query(
                &format!(
                    "SELECT client_id, detail FROM {audit_schema}.audit_events \
                     WHERE kind = 'client_metadata_refused'"
                ),
                &[],
            )
            .await
            .unwrap_or_default();
        let refused_early = |id: &str| {
            rows.iter().any(|r| {
                r.get::<_, Option<String>>(0).as_deref() == Some(id)
                    && r.get::<_, Option<String>>(1)
                        .is_some_and(|d| d.contains("not fetched: non-public address"))
            })
        };
        if literals.iter().all(|id| refused_early(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 'not fetched: non-public address' audit row for each literal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sidecar.drop_schema().await;
    drop_schema(&audit_schema).await;
}
