//! `audit stats`: calls, errors and latency percentiles, in total and by backend and
//! tool, by user and by kind.
//!
//! Why apart: the same report is computed two ways (SQL aggregates in PostgreSQL, or
//! in memory over the file) and must agree. This module does not list events.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::super::config::AuditConfig;
use super::super::event::AuditEvent;
use super::query::{pg_client, pg_query, scan_file, Filter};
use super::table::{print_table, user_of};
use super::{parse_since, Source, StatsArgs};

/// One row of a stats table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatRow {
    pub key: Vec<String>,
    pub calls: i64,
    pub errors: i64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    since: DateTime<Utc>,
    total: StatRow,
    by_backend_target: Vec<StatRow>,
    by_user: Vec<StatRow>,
    by_kind: Vec<StatRow>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[derive(Default)]
struct Acc {
    errors: i64,
    lat: Vec<f64>,
}

impl Acc {
    fn add(&mut self, e: &AuditEvent) {
        self.errors += e.is_error() as i64;
        self.lat.push(e.latency_ms);
    }
    fn row(mut self, key: Vec<String>) -> StatRow {
        self.lat.sort_by(|a, b| a.total_cmp(b));
        let calls = self.lat.len() as i64;
        StatRow {
            key,
            calls,
            errors: self.errors,
            error_rate: if calls > 0 {
                self.errors as f64 / calls as f64
            } else {
                0.0
            },
            p50_ms: percentile(&self.lat, 0.5),
            p99_ms: percentile(&self.lat, 0.99),
        }
    }
}

fn top(map: HashMap<Vec<String>, Acc>, n: usize) -> Vec<StatRow> {
    let mut rows: Vec<StatRow> = map.into_iter().map(|(k, a)| a.row(k)).collect();
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.key.cmp(&b.key)));
    rows.truncate(n);
    rows
}

async fn pg_stats(
    client: &tokio_postgres::Client,
    schema: &str,
    f: &Filter,
    group: &[&str],
    requests_only: bool,
    limit: usize,
) -> anyhow::Result<Vec<StatRow>> {
    let (mut w, params) = f.sql();
    if requests_only {
        w = if w.is_empty() {
            "WHERE kind = 'request'".into()
        } else {
            format!("{w} AND kind = 'request'")
        };
    }
    let keys: Vec<String> = group
        .iter()
        .map(|g| format!("coalesce({g}, '-')"))
        .collect();
    let (select_keys, group_by) = if keys.is_empty() {
        ("ARRAY[]::text[]".to_string(), String::new())
    } else {
        (
            format!("ARRAY[{}]", keys.join(", ")),
            format!(
                "GROUP BY {}",
                (1..=keys.len())
                    .map(|i| format!("k{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    let named: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS k{}", i + 1))
        .collect();
    let inner_keys = if named.is_empty() {
        String::new()
    } else {
        format!("{}, ", named.join(", "))
    };
    let outer_keys = if keys.is_empty() {
        select_keys
    } else {
        format!(
            "ARRAY[{}]",
            (1..=keys.len())
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let q = format!(
        "SELECT {outer_keys}, count(*), \
           count(*) FILTER (WHERE http_status >= 400 OR rpc_error IS NOT NULL), \
           coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), 0), \
           coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms), 0) \
         FROM (SELECT {inner_keys}http_status, rpc_error, latency_ms \
               FROM \"{schema}\".audit_events {w}) x \
         {group_by} ORDER BY 2 DESC, 1 LIMIT {limit}"
    );
    let rows = pg_query(client, &q, &params).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let calls: i64 = r.get(1);
            let errors: i64 = r.get(2);
            StatRow {
                key: r.get(0),
                calls,
                errors,
                error_rate: if calls > 0 {
                    errors as f64 / calls as f64
                } else {
                    0.0
                },
                p50_ms: r.get(3),
                p99_ms: r.get(4),
            }
        })
        .collect())
}

pub(super) async fn stats(
    source: &Source,
    a: &StatsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let since = parse_since(&a.since, Utc::now())?;
    let f = Filter {
        since: Some(since),
        user: a.user.clone(),
        backend: a.backend.clone(),
        target: None,
        errors: false,
    };
    let report = match source {
        Source::Postgres { cfg, url } => pg_report(cfg, url, &f, since, a.top).await?,
        Source::File(path) => file_report(path, &f, since, a.top)?,
    };
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    print_report(out, &report)
}

/// The report from SQL aggregates.
async fn pg_report(
    cfg: &AuditConfig,
    url: &str,
    f: &Filter,
    since: DateTime<Utc>,
    top: usize,
) -> anyhow::Result<Report> {
    let client = pg_client(cfg, url).await?;
    let s = &cfg.schema;
    let total = pg_stats(&client, s, f, &[], true, 1)
        .await?
        .pop()
        .unwrap_or_else(|| Acc::default().row(vec![]));
    Ok(Report {
        since,
        total,
        by_backend_target: pg_stats(&client, s, f, &["backend", "target"], true, top).await?,
        by_user: pg_stats(&client, s, f, &["coalesce(email, sub)"], true, top).await?,
        by_kind: pg_stats(&client, s, f, &["kind"], false, top).await?,
    })
}

/// The report computed in memory over the JSON Lines file.
fn file_report(
    path: &Path,
    f: &Filter,
    since: DateTime<Utc>,
    top_n: usize,
) -> anyhow::Result<Report> {
    let mut total = Acc::default();
    let mut by_target: HashMap<Vec<String>, Acc> = HashMap::new();
    let mut by_user: HashMap<Vec<String>, Acc> = HashMap::new();
    let mut by_kind: HashMap<Vec<String>, Acc> = HashMap::new();
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    scan_file(path, |e| {
        if !f.matches(&e) {
            return;
        }
        by_kind.entry(vec![e.kind.clone()]).or_default().add(&e);
        if e.kind != super::super::event::KIND_REQUEST {
            return;
        }
        total.add(&e);
        by_target
            .entry(vec![dash(&e.backend), dash(&e.target)])
            .or_default()
            .add(&e);
        by_user.entry(vec![user_of(&e)]).or_default().add(&e);
    })?;
    Ok(Report {
        since,
        total: total.row(vec![]),
        by_backend_target: top(by_target, top_n),
        by_user: top(by_user, top_n),
        by_kind: top(by_kind, top_n),
    })
}

/// The report as a summary line and three tables.
fn print_report(out: &mut dyn Write, report: &Report) -> anyhow::Result<()> {
    let t = &report.total;
    writeln!(
        out,
        "since {} : {} requests, {} errors ({:.2}%), p50 {:.1} ms, p99 {:.1} ms",
        report.since.format("%Y-%m-%dT%H:%M:%SZ"),
        t.calls,
        t.errors,
        t.error_rate * 100.0,
        t.p50_ms,
        t.p99_ms
    )?;
    let cells = |r: &StatRow| -> Vec<String> {
        let mut v = r.key.clone();
        v.extend([
            r.calls.to_string(),
            r.errors.to_string(),
            format!("{:.2}%", r.error_rate * 100.0),
            format!("{:.1}", r.p50_ms),
            format!("{:.1}", r.p99_ms),
        ]);
        v
    };
    let sections: [(&[&str], &Vec<StatRow>); 3] = [
        (
            &[
                "BACKEND", "TARGET", "CALLS", "ERRORS", "ERROR%", "P50_MS", "P99_MS",
            ],
            &report.by_backend_target,
        ),
        (
            &["USER", "CALLS", "ERRORS", "ERROR%", "P50_MS", "P99_MS"],
            &report.by_user,
        ),
        (
            &["KIND", "EVENTS", "ERRORS", "ERROR%", "P50_MS", "P99_MS"],
            &report.by_kind,
        ),
    ];
    for (header, rows) in sections {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = rows.iter().map(cells).collect();
        print_table(out, header, &rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_postgres() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert!((percentile(&v, 0.99) - 3.97).abs() < 1e-9);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
