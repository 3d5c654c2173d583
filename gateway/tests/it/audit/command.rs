//! `mcp-gateway audit tail` and `stats` against PostgreSQL and the JSON-lines file.

use super::*;

/// `mcp-gateway audit` against PostgreSQL schema `schema`, on a thread of its own (the
/// CLI starts its own runtime): what it printed, or its error.
fn run_cli(schema: &str, command: AuditCommand) -> anyhow::Result<String> {
    let schema = schema.to_string();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        cli::run_to(
            AuditCliArgs {
                postgres_url: Some(PG.into()),
                config: None,
                schema: Some(schema),
                command,
            },
            &cli::expand_env,
            &mut out,
        )
        .map(|()| String::from_utf8(out).unwrap())
    })
    .join()
    .unwrap()
}

/// `tail` asks for the newest rows over growing time windows (no b-tree orders the
/// table by time alone): the answer must be the newest N wherever they lie, across
/// windows and partitions, and `--user` finds people by email or by sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tail_finds_the_newest_events_however_old() {
    let (schema, _spool, auditor) = pg_auditor().await;
    let now = Utc::now();
    // Newest first: 5 now, 3 two hours ago, 2 three days ago, 1 forty days ago.
    let ages = [
        0, 0, 0, 0, 0, 7_200, 7_200, 7_200, 259_200, 259_201, 3_456_000,
    ];
    let events: Vec<AuditEvent> = ages
        .iter()
        .enumerate()
        .map(|(i, age)| {
            let mut e = sample(i);
            e.ts = now - chrono::Duration::seconds(*age) - chrono::Duration::milliseconds(i as i64);
            e.id = AuditEvent::at("request", e.ts).id;
            e
        })
        .collect();
    for e in &events {
        auditor.record(e.clone());
    }
    rows_become(
        PG,
        &schema.name,
        events.len() as i64,
        Duration::from_secs(30),
    )
    .await;
    auditor.shutdown().await;

    let tail = |n: usize, since: Option<&str>, user: Option<&str>| {
        let out = run_cli(
            &schema.name,
            AuditCommand::Tail(TailArgs {
                user: user.map(Into::into),
                backend: None,
                target: None,
                since: since.map(Into::into),
                errors: false,
                limit: n,
                json: true,
                follow: false,
            }),
        )
        .unwrap();
        out.lines()
            .map(|l| serde_json::from_str::<AuditEvent>(l).unwrap().id)
            .collect::<Vec<_>>()
    };
    // Oldest first, like tail(1): the given events of `events` (newest first) reversed.
    let newest = |idx: &[usize]| idx.iter().rev().map(|i| events[*i].id).collect::<Vec<_>>();
    assert_eq!(
        tail(5, None, None),
        newest(&[0, 1, 2, 3, 4]),
        "all in the first window"
    );
    assert_eq!(
        tail(9, None, None),
        newest(&[0, 1, 2, 3, 4, 5, 6, 7, 8]),
        "across windows, the newer of two three-day-old events"
    );
    assert_eq!(
        tail(50, None, None),
        newest(&(0..11).collect::<Vec<_>>()),
        "everything"
    );
    assert_eq!(
        tail(50, Some("1d"), None),
        newest(&(0..8).collect::<Vec<_>>()),
        "not before --since"
    );
    // sample(i) belongs to user-{i % 7}: events 3 and 10.
    assert_eq!(
        tail(50, None, Some("user-3@example.com")),
        newest(&[3, 10]),
        "by email"
    );
    assert_eq!(tail(1, None, Some("user-3")), newest(&[3]), "by sub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tail_and_stats_read_postgres_and_the_file() {
    let (schema, _spool, auditor) = pg_auditor().await;
    let mut refused = sample(3);
    refused.http_status = 200;
    refused.rpc_error = Some(-32003);
    refused.detail = Some("refused by policy".into());
    refused.email = Some("carol@example.com".into());
    refused.backend = Some("gamma".into());
    for i in 1..=20 {
        let mut e = sample(i);
        e.rpc_error = None;
        auditor.record(e);
    }
    auditor.record(refused);
    rows_become(PG, &schema.name, 21, Duration::from_secs(30)).await;
    auditor.shutdown().await;

    let run = |command: AuditCommand| run_cli(&schema.name, command);
    let tail = |user: Option<&str>, backend: Option<&str>, json: bool| TailArgs {
        user: user.map(Into::into),
        backend: backend.map(Into::into),
        target: None,
        since: Some("1h".into()),
        errors: false,
        limit: 50,
        json,
        follow: false,
    };
    let out = run(AuditCommand::Tail(tail(
        Some("carol@example.com"),
        None,
        false,
    )))
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("TIME"));
    assert!(
        lines[1].contains("gamma")
            && lines[1].contains("200 -32003")
            && lines[1].contains("refused by policy"),
        "{out}"
    );
    let out = run(AuditCommand::Tail(tail(None, Some("alpha"), true))).unwrap();
    let evs: Vec<AuditEvent> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs.len(), 10);
    assert!(evs.windows(2).all(|w| w[0].ts <= w[1].ts), "oldest first");
    assert!(evs.iter().all(|e| e.backend.as_deref() == Some("alpha")));

    let stats = StatsArgs {
        since: "1h".into(),
        user: None,
        backend: None,
        top: 20,
        json: true,
    };
    check_stats(&schema.name, &stats);

    // The same questions of the JSON Lines file, through a config file.
    let v = stats_of_a_file(&evs, stats).await;
    assert_eq!(v["total"]["calls"], 10);
}

/// `audit stats` of the 21 events (one refused), as JSON and as text.
fn check_stats(schema: &str, stats: &StatsArgs) {
    let run = |command: AuditCommand| run_cli(schema, command);
    let out = run(AuditCommand::Stats(stats.clone())).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"]["calls"], 21);
    assert_eq!(v["total"]["errors"], 1);
    let by: &Vec<Value> = v["by_backend_target"].as_array().unwrap();
    assert_eq!(by[0]["key"], json!(["alpha", "echo"]));
    assert_eq!(by[0]["calls"], 10);
    assert!(by
        .iter()
        .any(|r| r["key"] == json!(["gamma", "echo"]) && r["error_rate"] == 1.0));
    assert!(v["by_user"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["key"] == json!(["carol@example.com"])));
    let text = run(AuditCommand::Stats(StatsArgs {
        json: false,
        ..stats.clone()
    }))
    .unwrap();
    assert!(text.contains("21 requests, 1 errors"), "{text}");
    assert!(
        text.contains("BACKEND") && text.contains("P99_MS"),
        "{text}"
    );
}

/// `audit stats` (JSON) of a JSON Lines file holding `evs`, read through a config file.
async fn stats_of_a_file(evs: &[AuditEvent], stats: StatsArgs) -> Value {
    let dir = TempDir::new();
    let file = dir.path().join("audit.jsonl");
    let fa = Auditor::start(AuditConfig {
        file: file.clone(),
        ..AuditConfig::default()
    })
    .await
    .unwrap();
    for e in evs {
        fa.record(e.clone());
    }
    fa.shutdown().await;
    let conf = dir.path().join("gateway.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nfile = {:?}\n",
            file.display().to_string()
        ),
    )
    .unwrap();
    let out = std::thread::spawn(move || {
        let mut out = Vec::new();
        cli::run_to(
            AuditCliArgs {
                postgres_url: None,
                config: Some(conf),
                schema: None,
                command: AuditCommand::Stats(stats),
            },
            &cli::expand_env,
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    })
    .join()
    .unwrap();
    serde_json::from_str(&out).unwrap()
}
