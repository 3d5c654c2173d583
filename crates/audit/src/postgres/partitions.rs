//! Monthly partitions of `audit_events`: created ahead of time and on demand, dropped
//! after `audit.retention_days`.
//!
//! Why apart: partition naming and the retention arithmetic are easy to get wrong and
//! have unit tests of their own. This module does not write events.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use deadpool_postgres::Object;

use super::migrations::TUNE_INDEXES;
use super::{sql, PgSink, WriteError};

/// The partitions of `{schema}.audit_events` (`$1`: the schema).
const LIST_PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = $1 AND p.relname = 'audit_events'";

/// What a maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
}

/// Months since year 0 (`year * 12 + month0`): a partition's key.
pub(super) fn month_of(ts: &DateTime<Utc>) -> i32 {
    ts.year() * 12 + ts.month0() as i32
}

fn month_start(m: i32) -> DateTime<Utc> {
    let (y, mo) = (m.div_euclid(12), m.rem_euclid(12) as u32 + 1);
    Utc.with_ymd_and_hms(y, mo, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn partition_name(m: i32) -> String {
    format!(
        "audit_events_y{:04}m{:02}",
        m.div_euclid(12),
        m.rem_euclid(12) + 1
    )
}

fn parse_partition_name(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("audit_events_y")?;
    let (y, mo) = rest.split_once('m')?;
    let (y, mo) = (y.parse::<i32>().ok()?, mo.parse::<i32>().ok()?);
    (1..=12).contains(&mo).then_some(y * 12 + mo - 1)
}
impl PgSink {
    async fn list_partitions(&self, client: &Object) -> Result<Vec<(String, i32)>, WriteError> {
        let rows = self
            .timed(
                self.write_timeout,
                "listing partitions",
                client.query(LIST_PARTITIONS, &[&self.schema]),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                parse_partition_name(&name).map(|m| (name, m))
            })
            .collect())
    }

    pub(super) async fn create_partitions(
        &mut self,
        client: &mut Object,
        months: &[i32],
    ) -> Result<Vec<String>, WriteError> {
        let mut created = Vec::new();
        let missing: Vec<i32> = months
            .iter()
            .copied()
            .filter(|m| !self.partitions.contains(m))
            .collect();
        if missing.is_empty() {
            return Ok(created);
        }
        let t = self.write_timeout;
        let tx = self.timed(t, "BEGIN", client.transaction()).await?;
        self.timed(
            t,
            "the partition lock",
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&self.lock_key],
            ),
        )
        .await?;
        let existing: HashSet<i32> = {
            let rows = self
                .timed(
                    t,
                    "listing partitions",
                    tx.query(LIST_PARTITIONS, &[&self.schema]),
                )
                .await?;
            rows.iter()
                .filter_map(|r| parse_partition_name(&r.get::<_, String>(0)))
                .collect()
        };
        for m in &missing {
            if existing.contains(m) {
                continue;
            }
            let name = partition_name(*m);
            let stmt = format!(
                "CREATE TABLE IF NOT EXISTS \"{s}\".\"{name}\" PARTITION OF \"{s}\".audit_events \
                 FOR VALUES FROM ('{from}') TO ('{to}')",
                s = self.schema,
                from = month_start(*m).format("%Y-%m-%d %H:%M:%S+00"),
                to = month_start(*m + 1).format("%Y-%m-%d %H:%M:%S+00"),
            );
            self.timed(t, "creating a partition", tx.batch_execute(&stmt))
                .await?;
            created.push(name);
        }
        if !created.is_empty() {
            self.timed(
                t,
                "tuning the new partitions' indexes",
                tx.batch_execute(&sql(TUNE_INDEXES, &self.schema)),
            )
            .await?;
        }
        self.timed(t, "COMMIT", tx.commit()).await?;
        self.partitions.extend(existing);
        self.partitions.extend(missing);
        for name in &created {
            tracing::info!(schema = %self.schema, partition = %name, "audit: partition created");
        }
        Ok(created)
    }

    /// Creates the partitions of this month and the next `partitions_ahead`, and drops
    /// those wholly older than `retention_days`.
    pub(crate) async fn maintain(&mut self) -> Result<Maintenance, WriteError> {
        let mut client = self.client().await?;
        let res = self.maintain_with(&mut client).await;
        if res.is_err() {
            let _ = Object::take(client);
        }
        res
    }

    async fn maintain_with(&mut self, client: &mut Object) -> Result<Maintenance, WriteError> {
        let mut report = Maintenance::default();
        let existing = self.list_partitions(client).await?;
        self.partitions = existing.iter().map(|(_, m)| *m).collect();
        let now = month_of(&Utc::now());
        let months: Vec<i32> = (0..=self.partitions_ahead as i32)
            .map(|k| now + k)
            .collect();
        report.created = self.create_partitions(client, &months).await?;
        if self.retention_days > 0 {
            let cutoff = Utc::now() - chrono::Duration::days(self.retention_days as i64);
            let t = self.write_timeout;
            for (name, m) in existing {
                // Every row of the partition is before its end.
                if month_start(m + 1) > cutoff {
                    continue;
                }
                let tx = self.timed(t, "BEGIN", client.transaction()).await?;
                self.timed(
                    t,
                    "the partition lock",
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtext($1))",
                        &[&self.lock_key],
                    ),
                )
                .await?;
                let stmt = format!("DROP TABLE IF EXISTS \"{}\".\"{name}\"", self.schema);
                self.timed(t, "dropping a partition", tx.batch_execute(&stmt))
                    .await?;
                self.timed(t, "COMMIT", tx.commit()).await?;
                self.partitions.remove(&m);
                tracing::info!(
                    schema = %self.schema,
                    partition = %name,
                    retention_days = self.retention_days,
                    "audit: partition dropped (retention)"
                );
                report.dropped.push(name);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let ts = Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 59).unwrap();
        let m = month_of(&ts);
        assert_eq!(partition_name(m), "audit_events_y2025m12");
        assert_eq!(parse_partition_name("audit_events_y2025m12"), Some(m));
        assert_eq!(
            month_start(m + 1),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(parse_partition_name("audit_events_y2025m13"), None);
        assert_eq!(parse_partition_name("other"), None);
    }
}
