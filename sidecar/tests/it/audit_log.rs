//! Auth events in the gateway's audit log (`[audit]`): a sign-in against the fake
//! Google leaves `login_ok` and `token_issued` rows, a refused person a `login_refused`
//! row with the reason, in a fresh PostgreSQL schema; the queue is written out when
//! the sidecar is stopped with SIGTERM.

use std::time::Duration;

use crate::common::*;

/// `[audit]` writing to `schema` of the test database.
fn audit_table(schema: &str, dir: &TempDir, extra: &str) -> String {
    format!(
        "[audit]\npostgres_url = \"{DB_URL}\"\nschema = \"{schema}\"\nspool_dir = \"{}\"\nfile = \"{}\"\n{extra}\n",
        dir.path.join("spool").display(),
        dir.path.join("audit.jsonl").display(),
    )
}

#[derive(Debug, Clone)]
struct Row {
    kind: String,
    sub: Option<String>,
    email: Option<String>,
    groups: Vec<String>,
    client_id: Option<String>,
    target: Option<String>,
    source_addr: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

async fn rows(schema: &str) -> Vec<Row> {
    let (client, conn) = tokio_postgres::connect(DB_URL, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.audit_events")],
        )
        .await
        .expect("to_regclass")
        .get(0);
    if !exists {
        return Vec::new();
    }
    client
        .query(
            &format!(
                "SELECT kind, sub, email, groups, client_id, target, source_addr, user_agent, detail \
                 FROM {schema}.audit_events ORDER BY id"
            ),
            &[],
        )
        .await
        .expect("select audit rows")
        .iter()
        .map(|r| Row {
            kind: r.get(0),
            sub: r.get(1),
            email: r.get(2),
            groups: r.get::<_, Option<Vec<String>>>(3).unwrap_or_default(),
            client_id: r.get(4),
            target: r.get(5),
            source_addr: r.get(6),
            user_agent: r.get(7),
            detail: r.get(8),
        })
        .collect()
}

/// Polls until `pred` holds for the rows of `schema`; returns them.
async fn wait_rows(schema: &str, what: &str, pred: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = rows(schema).await;
        if pred(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; rows: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(rows: &[Row], kind: &str, email: &str) -> bool {
    rows.iter()
        .any(|r| r.kind == kind && r.email.as_deref() == Some(email))
}

/// A browser with a recognisable User-Agent.
fn named_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent("audit-test-browser/1.0")
        .build()
        .expect("client")
}

#[tokio::test]
async fn sign_in_and_refusal_are_rows_of_the_audit_log() {
    let google = FakeGoogle::start().await;
    let audit_schema = schema("audit");
    let dir = TempDir::new("audit");
    let mut opts = SidecarOptions::new("auditlog");
    opts.extra = audit_table(&audit_schema, &dir, "");
    let sidecar = Sidecar::start(&google, &opts).await;
    let client = register_public(&sidecar).await;

    // alice signs in and gets tokens.
    let b = named_browser();
    let p = pkce();
    let req = AuthRequest::new(&client, &p);
    let code = sign_in_code(&b, &sidecar, &req, "alice@example.com").await;
    let (status, tokens) = exchange(&sidecar, &client, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = verify(&sidecar, tokens["access_token"].as_str().unwrap()).await;
    let sub = claims["sub"].as_str().unwrap().to_string();

    // eve is from another company.
    let b = named_browser();
    let p = pkce();
    let req = AuthRequest::new(&client, &p);
    match sign_in(&b, &sidecar, &req, "eve@other.com").await {
        Outcome::Page(403, _) => {}
        Outcome::Page(s, page) => panic!("eve: HTTP {s}: {page}"),
        Outcome::Redirect(q) => panic!("eve was not refused: {q:?}"),
    }

    let rows = wait_rows(
        &audit_schema,
        "login_ok, token_issued and login_refused",
        |r| {
            has(r, "login_ok", "alice@example.com")
                && r.iter().any(|r| r.kind == "token_issued")
                && has(r, "login_refused", "eve@other.com")
        },
    )
    .await;

    let login = rows.iter().find(|r| r.kind == "login_ok").unwrap();
    assert_eq!(login.sub.as_deref(), Some(sub.as_str()));
    assert_eq!(login.client_id.as_deref(), Some(client.client_id.as_str()));
    assert!(
        login.groups.contains(&"eng@example.com".to_string()),
        "{login:?}"
    );
    assert_eq!(login.target.as_deref(), Some(RESOURCE));
    assert_eq!(login.source_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(login.user_agent.as_deref(), Some("audit-test-browser/1.0"));
    assert_eq!(login.detail, None);

    let issued = rows.iter().find(|r| r.kind == "token_issued").unwrap();
    assert_eq!(issued.sub.as_deref(), Some(sub.as_str()));
    assert_eq!(issued.client_id.as_deref(), Some(client.client_id.as_str()));

    let refused = rows.iter().find(|r| r.kind == "login_refused").unwrap();
    assert_eq!(refused.email.as_deref(), Some("eve@other.com"));
    assert_eq!(refused.detail.as_deref(), Some("domain_not_allowed"));
    assert_eq!(
        refused.client_id.as_deref(),
        Some(client.client_id.as_str())
    );

    assert!(
        rows.iter().any(|r| r.kind == "client_registered"
            && r.client_id.as_deref() == Some(client.client_id.as_str())),
        "registration recorded: {rows:#?}"
    );
    assert!(
        rows.iter().any(|r| r.kind == "consent_granted"),
        "consent recorded: {rows:#?}"
    );
    // Nothing secret in any row.
    for r in &rows {
        let text = format!("{r:?}");
        for secret in [
            tokens["access_token"].as_str().unwrap(),
            tokens["refresh_token"]
                .as_str()
                .unwrap_or("no refresh token"),
            code.as_str(),
            GOOGLE_SECRET,
        ] {
            assert!(!text.contains(secret), "a secret in {r:?}");
        }
    }
    assert!(
        !dir.path.join("audit.jsonl").exists(),
        "with postgres_url the JSON Lines file is not used"
    );
    sidecar.drop_schema().await;
    drop_schema(&audit_schema).await;
}

#[tokio::test]
async fn sigterm_writes_out_the_audit_queue() {
    let google = FakeGoogle::start().await;
    let audit_schema = schema("auditq");
    let dir = TempDir::new("auditq");
    let mut opts = SidecarOptions::new("auditq");
    // Events wait in memory for a minute (or 1000 of them): only the stop writes them.
    opts.extra = audit_table(
        &audit_schema,
        &dir,
        "flush_interval_ms = 60000\nbatch_size = 1000\n",
    );
    let mut sidecar = Sidecar::start(&google, &opts).await;
    let client = register_public(&sidecar).await;
    let b = browser();
    let p = pkce();
    let req = AuthRequest::new(&client, &p);
    let code = sign_in_code(&b, &sidecar, &req, "alice@example.com").await;
    let (status, tokens) = exchange(&sidecar, &client, &code, &p).await;
    assert_eq!(status, 200, "{tokens}");
    // The migrations ran at start; the events are still queued.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rows(&audit_schema).await.is_empty(),
        "events were written before the flush interval"
    );

    let status = sidecar.terminate().await;
    assert!(status.success(), "SIGTERM: clean exit, got {status}");
    let rows = rows(&audit_schema).await;
    for kind in [
        "client_registered",
        "consent_granted",
        "login_ok",
        "token_issued",
    ] {
        assert!(
            rows.iter().any(|r| r.kind == kind),
            "{kind} written at stop: {rows:#?}"
        );
    }
    sidecar.drop_schema().await;
    drop_schema(&audit_schema).await;
}
