//! `audit tail`: the last events, oldest first, and with `--follow` the new ones as
//! they land.
//!
//! Why apart: following is a loop of its own (late rows, a bounded set of ids already
//! shown). This module does not aggregate: see [`super::stats`].

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use chrono::Utc;

use super::super::event::AuditEvent;
use super::query::{pg_client, pg_events, scan_file, Filter};
use super::table::{outcome, print_table, user_of};
use super::{parse_since, Source, TailArgs};

const TAIL_HEADER: &[&str] = &[
    "TIME", "USER", "METHOD", "BACKEND", "TARGET", "STATUS", "MS", "REQUEST", "DETAIL",
];

fn tail_row(e: &AuditEvent) -> Vec<String> {
    let method = if e.kind == super::super::event::KIND_REQUEST {
        e.rpc_method.clone().unwrap_or_else(|| "-".into())
    } else {
        format!("[{}]", e.kind)
    };
    vec![
        e.ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        user_of(e),
        method,
        e.backend.clone().unwrap_or_else(|| "-".into()),
        e.target.clone().unwrap_or_else(|| "-".into()),
        outcome(e),
        format!("{:.1}", e.latency_ms),
        e.request_id.clone().unwrap_or_else(|| "-".into()),
        e.detail.clone().unwrap_or_default(),
    ]
}

fn print_events(
    out: &mut dyn Write,
    events: &[AuditEvent],
    json: bool,
    header: bool,
) -> anyhow::Result<()> {
    if json {
        for e in events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
    } else if header {
        let rows: Vec<Vec<String>> = events.iter().map(tail_row).collect();
        print_table(out, TAIL_HEADER, &rows)?;
    } else {
        for e in events {
            writeln!(out, "{}", tail_row(e).join("  ").trim_end())?;
        }
    }
    out.flush()?;
    Ok(())
}

pub(super) async fn tail(source: &Source, a: &TailArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = Utc::now();
    let f = Filter {
        since: a
            .since
            .as_deref()
            .map(|s| parse_since(s, now))
            .transpose()?,
        user: a.user.clone(),
        backend: a.backend.clone(),
        target: a.target.clone(),
        errors: a.errors,
    };
    match source {
        Source::Postgres { cfg, url } => {
            let client = pg_client(cfg, url).await?;
            let mut events = pg_events(&client, &cfg.schema, &f, a.limit).await?;
            events.reverse();
            print_events(out, &events, a.json, true)?;
            if !a.follow {
                return Ok(());
            }
            // Rows can land late (batching, spool replay): look back a while and skip
            // what was shown.
            let mut seen: HashSet<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            let mut order: VecDeque<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut g = f.clone();
                let back = Utc::now() - chrono::Duration::minutes(10);
                g.since = Some(f.since.map_or(back, |s| s.max(back)));
                let mut fresh = pg_events(&client, &cfg.schema, &g, 10_000).await?;
                fresh.retain(|e| !seen.contains(&e.id));
                fresh.reverse();
                for e in &fresh {
                    seen.insert(e.id);
                    order.push_back(e.id);
                }
                while order.len() > 200_000 {
                    if let Some(old) = order.pop_front() {
                        seen.remove(&old);
                    }
                }
                print_events(out, &fresh, a.json, false)?;
            }
        }
        Source::File(path) => {
            let mut last: VecDeque<AuditEvent> = VecDeque::new();
            scan_file(path, |e| {
                if f.matches(&e) {
                    last.push_back(e);
                    if last.len() > a.limit {
                        last.pop_front();
                    }
                }
            })?;
            let mut events: Vec<AuditEvent> = last.into();
            events.sort_by_key(|e| (e.ts, e.id));
            print_events(out, &events, a.json, true)?;
            if a.follow {
                bail!(
                    "--follow reads PostgreSQL; for the file, use tail -f {}",
                    path.display()
                );
            }
            Ok(())
        }
    }
}
