//! While PostgreSQL is away: events spooled to disk and replayed, a spool left by a
//! killed process replayed at the next start, the file fallback without a database,
//! and a private PostgreSQL stopped and started under load.

use super::*;

/// A TCP forwarder to PostgreSQL that can be cut: connections refused (accepted and
/// closed at once) and live ones severed.
struct Switch {
    addr: SocketAddr,
    on: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Switch {
    async fn start(target: &'static str, on: bool) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let on = Arc::new(AtomicBool::new(on));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (on2, conns2) = (on.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !on2.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Switch { addr, on, conns }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{}/test", self.addr)
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_postgres_spools_then_replays_everything() {
    let schema = Schema::new();
    let spool = TempDir::new();
    let switch = Switch::start("127.0.0.1:5432", false).await;
    let mut cfg = pg_config(&switch.url(), &schema, spool.path());
    cfg.queue_capacity = 64; // most events overflow to the spool from `record` itself
    let t0 = Instant::now();
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "start does not wait for PostgreSQL"
    );
    assert!(!auditor.metrics().postgres_up);

    let mut worst = Duration::ZERO;
    for i in 0..3000 {
        let t = Instant::now();
        auditor.record(sample(i));
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(100),
        "record() took {worst:?}"
    );
    metrics_until(
        &auditor,
        Duration::from_secs(20),
        "3000 events in the spool",
        |m| m.spooled_events == 3000,
    )
    .await;
    assert_eq!(counts(PG, &schema.name).await.0, 0);
    let m = auditor.metrics();
    assert!(m.failures_total > 0 && m.dropped_total == 0, "{m:?}");

    // Cut while writing, too: up, then down again mid-replay, then up for good.
    switch.set(true);
    metrics_until(
        &auditor,
        Duration::from_secs(30),
        "the replay to start",
        |m| m.written_total > 0,
    )
    .await;
    switch.set(false);
    for i in 3000..4000 {
        auditor.record(sample(i));
    }
    switch.set(true);
    rows_become(PG, &schema.name, 4000, Duration::from_secs(60)).await;
    metrics_until(&auditor, Duration::from_secs(10), "an empty spool", |m| {
        m.spooled_events == 0
    })
    .await;
    assert!(auditor.metrics().postgres_up);
    auditor.shutdown().await;
    assert!(spool_dirs(spool.path()).is_empty());
}

/// Run as a child process by the crash tests: records events against an unreachable
/// database, says when they are on disk, then waits to be killed.
#[test]
fn crash_child_helper() {
    let Ok(spool) = std::env::var("AUDIT_CRASH_CHILD_SPOOL") else {
        return; // not a child: nothing to do
    };
    let n: usize = std::env::var("AUDIT_CRASH_CHILD_N")
        .unwrap()
        .parse()
        .unwrap();
    let write_ahead = std::env::var("AUDIT_CRASH_CHILD_WAL").is_ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = AuditConfig {
            postgres_url: Some("postgres://postgres@127.0.0.1:1/test".into()),
            spool_dir: spool.into(),
            connect_timeout_ms: 500,
            write_ahead,
            fsync: FsyncPolicy::Never,
            ..AuditConfig::default()
        };
        let a = Auditor::start(cfg).await.unwrap();
        for i in 0..n {
            a.record(sample(i));
        }
        if !write_ahead {
            // Acknowledged to disk = in the spool.
            while a.metrics().spooled_events < n as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        println!("ACKED {n}");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

async fn crash_and_recover(write_ahead: bool) {
    let schema = Schema::new();
    let spool = TempDir::new();
    let n = 3000;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            // The test's libtest name inside the one `it` binary.
            "audit::spool::crash_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AUDIT_CRASH_CHILD_SPOOL", spool.path())
        .env("AUDIT_CRASH_CHILD_N", n.to_string())
        .envs(write_ahead.then_some(("AUDIT_CRASH_CHILD_WAL", "1")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            // libtest prints "test crash_child_helper ... " on the same line.
            if r.read_line(&mut line).unwrap() == 0 {
                return line;
            }
            if let Some(at) = line.find("ACKED ") {
                return line[at..].to_string();
            }
        }
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("the child acknowledges its events")
        .unwrap();
    assert_eq!(line.trim(), format!("ACKED {n}"));
    // kill -9: no shutdown, no flush.
    child.kill().unwrap();
    child.wait().unwrap();

    // A write torn by the crash: half a line at the end of the last segment.
    let dirs = spool_dirs(spool.path());
    assert_eq!(dirs.len(), 1, "the dead process's spool directory");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dirs[0])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segs.sort();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(segs.last().unwrap())
            .unwrap();
        f.write_all(b"{\"id\":\"0190").unwrap();
    }

    let auditor = Auditor::start(pg_config(PG, &schema, spool.path()))
        .await
        .unwrap();
    rows_become(PG, &schema.name, n as i64, Duration::from_secs(60)).await;
    metrics_until(
        &auditor,
        Duration::from_secs(10),
        "the adopted spool removed",
        |m| m.spooled_events == 0 && !dirs[0].exists(),
    )
    .await;
    assert_eq!(
        auditor.metrics().rejected_total,
        1,
        "the torn line is kept aside"
    );
    let rejected = std::fs::read_to_string(spool.path().join("rejected.jsonl")).unwrap();
    assert!(rejected.starts_with("{\"id\":\"0190"));
    auditor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_a_killed_process_is_replayed_at_the_next_start() {
    crash_and_recover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_ahead_loses_nothing_recorded_before_kill_9() {
    crash_and_recover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_events_go_to_a_json_lines_file() {
    let dir = TempDir::new();
    let file = dir.path().join("logs/audit.jsonl");
    let cfg = AuditConfig {
        file: file.clone(),
        fsync: FsyncPolicy::Always,
        ..AuditConfig::default()
    };
    let auditor = Auditor::start(cfg).await.unwrap();
    let events: Vec<AuditEvent> = (0..500).map(sample).collect();
    for e in &events {
        auditor.record(e.clone());
    }
    auditor.shutdown().await;
    assert_eq!(auditor.metrics().sink, "file");
    assert_eq!(auditor.metrics().written_total, 500);
    let text = std::fs::read_to_string(&file).unwrap();
    let got: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let key = |e: &AuditEvent| (e.id, e.ts, e.request_id.clone(), e.backend.clone());
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        events.iter().map(key).collect::<Vec<_>>()
    );
    // After shutdown, record still lands in the file.
    auditor.record(sample(1));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 501);
    assert_eq!(auditor.metrics().written_total, 501);
}

/// 20,000 events from 20 tasks over ~10 s; the database is killed after 2.5 s and
/// started again 5 s later. Afterwards: exactly 20,000 rows, no duplicate ids, and no
/// `record` call took long.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_postgres_stopped_and_started_under_load() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(OwnPostgres::start)
            .await
            .unwrap(),
    );
    let url = pg.url();
    let spool = TempDir::new();
    // The private cluster is ours alone: the default schema will do.
    let mut cfg = pg_config_in(&url, "public", spool.path());
    cfg.connect_timeout_ms = 1_000;
    cfg.write_timeout_ms = 2_000;
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(auditor.metrics().postgres_up);

    let recorded = Arc::new(AtomicU64::new(0));
    let worst_us = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (a, recorded, worst_us) = (auditor.clone(), recorded.clone(), worst_us.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0..1000 {
                if i % 10 == 0 {
                    tick.tick().await; // 100 events/s per task: the load spans the outage
                }
                let e = sample(t * 1000 + i);
                let t0 = Instant::now();
                a.record(e);
                worst_us.fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                recorded.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The outage, on the recorders' clock.
    tokio::time::sleep_until((started + Duration::from_millis(2500)).into()).await;
    let before = recorded.load(Ordering::Relaxed);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.down()).await.unwrap();
    let down_at = Instant::now();
    tokio::time::sleep_until((down_at + Duration::from_secs(5)).into()).await;
    let during = recorded.load(Ordering::Relaxed) - before;
    let spooled_while_down = auditor.metrics().spooled_total;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.up()).await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(recorded.load(Ordering::Relaxed), 20_000);
    assert!(
        before > 0 && during > 5_000,
        "events recorded before ({before}) and during ({during}) the outage"
    );
    assert!(spooled_while_down > 0, "the outage made the writer spool");

    rows_become(&url, "public", 20_000, Duration::from_secs(90)).await;
    metrics_until(&auditor, Duration::from_secs(10), "an empty spool", |m| {
        m.spooled_events == 0
    })
    .await;
    let m = auditor.metrics();
    let worst = Duration::from_micros(worst_us.load(Ordering::Relaxed));
    println!(
        "chaos: 20000 rows, outage 5 s with {during} events recorded while down; spooled {} \
         events; worst record() {worst:?}; metrics {m:?}",
        m.spooled_total
    );
    assert!(m.failures_total > 0 && m.dropped_total == 0, "{m:?}");
    assert!(
        worst < Duration::from_millis(100),
        "record() blocked {worst:?}"
    );
    auditor.shutdown().await;
    assert!(spool_dirs(spool.path()).is_empty());
}
