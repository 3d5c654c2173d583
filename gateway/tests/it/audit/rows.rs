//! What lands in the table: exactly the events recorded, every field, the current
//! layout (migrated from the first), no duplicates on replay, a refused row set aside,
//! arguments redacted, old partitions dropped, and the writer's sustained rate.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_events_make_exactly_n_rows_with_every_field() {
    let (schema, spool, auditor) = pg_auditor().await;
    let mut full = sample(1);
    full.args_digest = Some("ab".repeat(32));
    full.args = Some(json!({"text": "hi", "n": [1, 2]}));
    full.detail = Some("refused by policy".into());
    full.groups = vec!["a b".into(), "c,d".into(), "{e}".into()];
    auditor.record(full.clone());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let a = auditor.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                a.record(sample(t * 1000 + i));
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rows_become(PG, &schema.name, 5001, Duration::from_secs(30)).await;
    let m = auditor.metrics();
    assert_eq!(m.sink, "postgres");
    assert_eq!(m.written_total, 5001);
    assert_eq!(m.dropped_total, 0);
    assert!(m.postgres_up);
    assert!(m.last_write_latency_ms > 0.0);

    let c = connect(PG).await.unwrap();
    check_every_field(&c, &schema.name, &full).await;
    check_migrations_and_layout(&c, &schema.name).await;

    auditor.shutdown().await;
    assert!(
        spool_dirs(spool.path()).is_empty(),
        "nothing left in the spool"
    );

    // A second start on the same schema migrates nothing and writes on.
    let again = Auditor::start(pg_config(PG, &schema, spool.path()))
        .await
        .unwrap();
    again.record(sample(9));
    rows_become(PG, &schema.name, 5002, Duration::from_secs(30)).await;
    again.shutdown().await;
}

/// Every field of `full` round-trips through its row.
async fn check_every_field(c: &tokio_postgres::Client, schema: &str, full: &AuditEvent) {
    let r = c
        .query_one(
            &format!(
                "SELECT ts, kind, sub, email, groups, client_id, session, request_id, rpc_method,
                        backend, target, args_digest, args, http_status, rpc_error, latency_ms,
                        bytes_in, bytes_out, source_addr, user_agent, detail
                   FROM \"{}\".audit_events WHERE id = $1",
                schema
            ),
            &[&full.id],
        )
        .await
        .unwrap();
    let ts: chrono::DateTime<Utc> = r.get(0);
    assert_eq!(ts.timestamp_micros(), full.ts.timestamp_micros());
    assert_eq!(r.get::<_, String>(1), "request");
    assert_eq!(r.get::<_, Option<String>>(2), full.sub);
    assert_eq!(r.get::<_, Option<String>>(3), full.email);
    assert_eq!(r.get::<_, Vec<String>>(4), full.groups);
    assert_eq!(r.get::<_, Option<String>>(5), full.client_id);
    assert_eq!(r.get::<_, Option<String>>(6), full.session);
    assert_eq!(r.get::<_, Option<String>>(7), full.request_id);
    assert_eq!(r.get::<_, Option<String>>(8), full.rpc_method);
    assert_eq!(r.get::<_, Option<String>>(9), full.backend);
    assert_eq!(r.get::<_, Option<String>>(10), full.target);
    assert_eq!(r.get::<_, Option<String>>(11), full.args_digest);
    assert_eq!(r.get::<_, Option<Value>>(12), full.args);
    assert_eq!(r.get::<_, i32>(13), 200);
    assert_eq!(r.get::<_, Option<i64>>(14), None);
    assert_eq!(r.get::<_, f64>(15), full.latency_ms);
    assert_eq!(r.get::<_, i64>(16), 120);
    assert_eq!(r.get::<_, i64>(17), 480);
    assert_eq!(r.get::<_, Option<String>>(18), full.source_addr);
    assert_eq!(r.get::<_, Option<String>>(19), full.user_agent);
    assert_eq!(r.get::<_, Option<String>>(20), full.detail);
}

/// Migrations are versioned and ran once; the partition of this month and the next two
/// exist; the indexes exist.
async fn check_migrations_and_layout(c: &tokio_postgres::Client, schema: &str) {
    let v: Vec<i32> = c
        .query(
            &format!("SELECT version FROM \"{}\".audit_schema_migrations", schema),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(v, vec![1, 2, 3, 4]);
    let parts: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
              WHERE n.nspname = $1 AND p.relname = 'audit_events'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, 3);
    assert_eq!(index_layout(c, schema).await, LAYOUT);
    assert_eq!(
        deduplicating(c, schema).await,
        Vec::<String>::new(),
        "the partitions made at start do not deduplicate their secondary indexes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_made_by_the_first_migration_is_moved_to_the_current_layout() {
    let schema = Schema::new();
    let spool = TempDir::new();
    let c = connect(PG).await.unwrap();
    // The database as the first release left it: migration 1 only, with rows in it.
    let (version, name, body) = mcp_gateway::audit::MIGRATIONS[0];
    let quoted = format!("\"{}\"", schema.name);
    c.batch_execute(&format!(
        "CREATE SCHEMA {quoted};
         CREATE TABLE {quoted}.audit_schema_migrations (version integer PRIMARY KEY,
             name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
         {}
         CREATE TABLE {quoted}.audit_events_old PARTITION OF {quoted}.audit_events
             FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');",
        body.replace("{s}", &quoted)
    ))
    .await
    .unwrap();
    c.execute(
        &format!("INSERT INTO {quoted}.audit_schema_migrations (version, name) VALUES ($1, $2)"),
        &[&version, &name],
    )
    .await
    .unwrap();
    let old_id = uuid::Uuid::now_v7();
    c.execute(
        &format!(
            "INSERT INTO {quoted}.audit_events (id, ts, kind, http_status, latency_ms, bytes_in, bytes_out)
             VALUES ($1, '2020-01-15T12:00:00Z', 'request', 200, 1.5, 10, 20)"
        ),
        &[&old_id],
    )
    .await
    .unwrap();

    // The current gateway migrates it at start and writes on; the old row stays, and the
    // new key still makes a replayed event a no-op.
    let auditor = Auditor::start(pg_config(PG, &schema, spool.path()))
        .await
        .unwrap();
    let e = sample(1);
    auditor.record(e.clone());
    rows_become(PG, &schema.name, 2, Duration::from_secs(30)).await;
    auditor.record(e);
    metrics_until(
        &auditor,
        Duration::from_secs(30),
        "the replayed event handled",
        |m| m.duplicates_total == 1,
    )
    .await;
    assert_eq!(counts(PG, &schema.name).await, (2, 2));
    let kept: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM {quoted}.audit_events WHERE id = $1"),
            &[&old_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept, 1,
        "the row written before the migration is still there"
    );
    assert_eq!(index_layout(&c, &schema.name).await, LAYOUT);
    // The partition made under migration 1 carries the new indexes too.
    let on_old: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = 'audit_events_old'",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_old, 3);
    assert_eq!(
        deduplicating(&c, &schema.name).await,
        Vec::<String>::new(),
        "migration 3 turned deduplication off on the existing partitions too"
    );
    auditor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_same_events_never_duplicates() {
    let (schema, _spool, auditor) = pg_auditor().await;
    // One in ten anonymous (no email, no sub): those must not be written twice either.
    let events: Vec<AuditEvent> = (0..1000)
        .map(|i| {
            let mut e = sample(i);
            if i % 10 == 0 {
                (e.sub, e.email) = (None, None);
            }
            e
        })
        .collect();
    for e in &events {
        auditor.record(e.clone());
    }
    rows_become(PG, &schema.name, 1000, Duration::from_secs(30)).await;
    for e in &events {
        auditor.record(e.clone());
    }
    metrics_until(
        &auditor,
        Duration::from_secs(30),
        "the second 1000 written",
        |m| m.written_total == 2000,
    )
    .await;
    assert_eq!(counts(PG, &schema.name).await, (1000, 1000));
    assert_eq!(auditor.metrics().duplicates_total, 1000);
    auditor.shutdown().await;
}

/// A row PostgreSQL refuses as data (here a trigger raising SQLSTATE 22023 for one
/// target) is set aside in `rejected.jsonl`; the rest of its batch is written.
#[tokio::test]
async fn a_row_postgresql_refuses_is_set_aside_and_its_batch_written() {
    let schema = Schema::new();
    let spool = TempDir::new();
    let mut cfg = pg_config(PG, &schema, spool.path());
    // The whole batch in one COPY: the refusal must be isolated inside it.
    cfg.flush_interval_ms = 60_000;
    cfg.batch_size = 100;
    let auditor = Auditor::start(cfg).await.unwrap();
    let c = connect(PG).await.unwrap();
    c.batch_execute(&format!(
        r#"CREATE FUNCTION "{s}".poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.target = 'poison' THEN
               RAISE EXCEPTION 'poisoned row' USING ERRCODE = '22023';
             END IF;
             RETURN NEW;
           END $$;
           CREATE TRIGGER poison BEFORE INSERT ON "{s}".audit_events
             FOR EACH ROW EXECUTE FUNCTION "{s}".poison();"#,
        s = schema.name
    ))
    .await
    .unwrap();
    let mut events: Vec<AuditEvent> = (0..100).map(sample).collect();
    events[37].target = Some("poison".into());
    let poisoned = events[37].id;
    for e in events {
        auditor.record(e);
    }
    rows_become(PG, &schema.name, 99, Duration::from_secs(30)).await;
    metrics_until(
        &auditor,
        Duration::from_secs(10),
        "the refused row set aside",
        |m| m.rejected_total == 1,
    )
    .await;
    let rejected = std::fs::read_to_string(spool.path().join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains(&poisoned.to_string()), "{rejected}");
    let m = auditor.metrics();
    assert_eq!((m.written_total, m.dropped_total), (99, 0), "{m:?}");
    auditor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_are_redacted_recursively_and_only_logged_on_request() {
    let dir = TempDir::new();
    let file = dir.path().join("audit.jsonl");
    let args = json!({
        "query": "select 1",
        "password": "hunter2",
        "Authorization": "Bearer abc",
        "nested": {"apiKey": "k", "items": [{"access_token": "t", "keep": 1}], "x-api-key": "z"},
        "github_token": {"deep": "object"},
        "author": "kept"
    });
    let cfg = AuditConfig {
        file: file.clone(),
        log_arguments: true,
        ..AuditConfig::default()
    };
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(auditor.log_arguments());
    let r = auditor.redact(&args);
    assert_eq!(
        r,
        json!({
            "query": "select 1",
            "password": REDACTED,
            "Authorization": REDACTED,
            "nested": {"apiKey": REDACTED, "items": [{"access_token": REDACTED, "keep": 1}], "x-api-key": REDACTED},
            "github_token": REDACTED,
            "author": "kept"
        })
    );
    let (digest, logged) = auditor.arguments(&args);
    assert_eq!(logged.as_ref(), Some(&r));
    assert_eq!(digest.len(), 64);
    // The digest is of the redacted arguments: secrets do not change it.
    let mut other = args.clone();
    other["password"] = json!("different");
    assert_eq!(auditor.arguments(&other).0, digest);
    let mut e = sample(0);
    e.args_digest = Some(digest);
    e.args = logged;
    auditor.record(e);
    auditor.shutdown().await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("Bearer"));

    // Default: no arguments stored; custom keys.
    let cfg = AuditConfig {
        file: dir.path().join("b.jsonl"),
        redact_keys: vec!["query".into()],
        max_args_bytes: 64,
        ..AuditConfig::default()
    };
    let plain = Auditor::start(cfg.clone()).await.unwrap();
    assert!(!plain.log_arguments());
    assert_eq!(plain.arguments(&args).1, None);
    assert_eq!(plain.redact(&args)["query"], json!(REDACTED));
    assert_eq!(plain.redact(&args)["password"], json!("hunter2"));
    plain.shutdown().await;
    let big = Auditor::start(AuditConfig {
        log_arguments: true,
        ..cfg
    })
    .await
    .unwrap();
    assert_eq!(
        big.arguments(&json!({"text": "x".repeat(100)})).1.unwrap()["_truncated"],
        json!(true)
    );
    big.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions() {
    let (schema, spool, auditor) = pg_auditor().await;
    let mut old = sample(1);
    old.ts = Utc::now() - chrono::Duration::days(400);
    let old_part = format!("audit_events_y{}", old.ts.format("%Ym%m"));
    auditor.record(old);
    auditor.record(sample(2));
    rows_become(PG, &schema.name, 2, Duration::from_secs(30)).await;
    auditor.shutdown().await;
    let c = connect(PG).await.unwrap();
    async fn table_exists(c: &tokio_postgres::Client, schema: &str, name: &str) -> bool {
        c.query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
            &[&schema, &name],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    }
    assert!(
        table_exists(&c, &schema.name, &old_part).await,
        "an old event gets its partition"
    );
    assert_eq!(
        deduplicating(&c, &schema.name).await,
        Vec::<String>::new(),
        "a partition made on demand does not deduplicate its secondary indexes"
    );

    let mut cfg = pg_config(PG, &schema, spool.path());
    cfg.retention_days = 90;
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(
        !table_exists(&c, &schema.name, &old_part).await,
        "dropped at start by retention"
    );
    assert_eq!(counts(PG, &schema.name).await, (1, 1));
    let current = format!("audit_events_y{}", Utc::now().format("%Ym%m"));
    assert!(
        table_exists(&c, &schema.name, &current).await,
        "the current month is kept"
    );
    auditor.shutdown().await;
}

/// `ops/scripts/bench-audit.sh`: sustained insert rate of the writer into the shared
/// PostgreSQL. Ignored by default; prints a Markdown table row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_insert_rate() {
    let n: usize = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let schema = Schema::new();
    let spool = TempDir::new();
    let mut cfg = pg_config(PG, &schema, spool.path());
    cfg.flush_interval_ms = 100;
    cfg.queue_capacity = 10_000;
    cfg.batch_size = 5_000;
    cfg.write_ahead = std::env::var("AUDIT_BENCH_WRITE_AHEAD").is_ok();
    let auditor = Auditor::start(cfg.clone()).await.unwrap();
    let events: Vec<AuditEvent> = (0..n).map(sample).collect();
    let offered_rate: f64 = std::env::var("AUDIT_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000.0);
    let rate = Duration::from_secs_f64(1.0 / offered_rate);
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    for (i, e) in events.into_iter().enumerate() {
        let due = t0 + rate * i as u32;
        if i % 250 == 0 && due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let t = Instant::now();
        auditor.record(e);
        worst = worst.max(t.elapsed());
    }
    let offered = t0.elapsed();
    let a = auditor.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    while a.metrics().written_total < n as u64 {
        assert!(
            Instant::now() < deadline,
            "bench timed out: {:?}",
            a.metrics()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = t0.elapsed();
    let m = auditor.metrics();
    auditor.shutdown().await;
    assert_eq!(counts(PG, &schema.name).await, (n as i64, n as i64));
    println!(
        "| audit writer → PostgreSQL (batch {}, {}) | {n} events | {:.0} events/s sustained | offered {:.0}/s | spooled {} | worst record() {:.2} ms |",
        cfg.batch_size,
        if cfg.write_ahead {
            "write-ahead".to_string()
        } else {
            format!("queue {}", cfg.queue_capacity)
        },
        n as f64 / total.as_secs_f64(),
        n as f64 / offered.as_secs_f64(),
        m.spooled_total,
        worst.as_secs_f64() * 1000.0
    );
}
