//! Plain-text output shared by the commands: aligned columns, and how a user and an
//! outcome are shown.
//!
//! Why apart: `tail` and `stats` print the same kind of table. This module does not
//! read events.

use std::io::Write;

use super::super::event::AuditEvent;

pub(super) fn user_of(e: &AuditEvent) -> String {
    e.email
        .clone()
        .or_else(|| e.sub.clone())
        .unwrap_or_else(|| "-".into())
}

pub(super) fn outcome(e: &AuditEvent) -> String {
    match e.rpc_error {
        Some(c) => format!("{} {c}", e.http_status),
        None => e.http_status.to_string(),
    }
}

pub(super) fn print_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count().min(60));
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let c: String = if c.chars().count() > 60 {
                c.chars().take(59).chain(std::iter::once('…')).collect()
            } else {
                c.clone()
            };
            if i + 1 == cells.len() {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    )?;
    for r in rows {
        writeln!(out, "{}", line(r.clone()))?;
    }
    Ok(())
}
