//! The Prometheus admin listener.

use crate::common::*;
use serde_json::json;

fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `promtool check metrics` on a scrape (the Debian package `prometheus`; installed
/// by `ops/scripts/install-tools.sh --test`): empty output when it has nothing to say.
pub fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus, or ops/scripts/install-tools.sh --test)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{said}"
    );
    said
}

fn scrape(url: &str) -> String {
    let (status, text) = http_get(url).expect("metrics answer");
    assert_eq!(status, 200);
    text
}

#[test]
fn counters_move_under_load() {
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let port = free_port();
    // `tools = { echo = {} }`: the tool is named in the config, so it gets its own label.
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 1\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[backend]]\nname = \"alpha\"\nurl = \"{}\"\ntools = {{ echo = {{}} }}\n",
        a.url
    );
    let gw = spawn_gateway(&cfg);
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_until(std::time::Duration::from_secs(10), || {
        http_get(&url).is_some_and(|(s, _)| s == 200)
    });
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    for _ in 0..5 {
        assert_eq!(
            text_of(&cl.call_tool("alpha__echo", json!({"text": "m"}))),
            "m"
        );
    }
    let first = scrape(&url);
    let calls = "mcpgw_requests_total{backend=\"alpha\",method=\"tools/call\",outcome=\"ok\",route=\"mcp\",tool=\"alpha__echo\"}";
    assert!(sample(&first, calls) >= 5.0, "{first}");
    assert!(
        first.contains(
            "mcpgw_request_duration_seconds_bucket{backend=\"alpha\",method=\"tools/call\""
        ),
        "{first}"
    );
    assert!(
        first.contains("mcpgw_backend_request_duration_seconds_bucket{backend=\"alpha\""),
        "{first}"
    );
    assert!(
        first.contains("mcpgw_backend_up{backend=\"alpha\"} 1"),
        "{first}"
    );
    assert!(
        first.contains("# TYPE mcpgw_backend_requests_total counter"),
        "{first}"
    );
    for _ in 0..3 {
        cl.call_tool("alpha__echo", json!({"text": "m"}));
    }
    let second = scrape(&url);
    assert_eq!(sample(&second, calls), sample(&first, calls) + 3.0);
    let upstream = "mcpgw_backend_requests_total{backend=\"alpha\"}";
    assert!(sample(&second, upstream) >= sample(&first, upstream) + 3.0);
}

/// The metric names a shipped file (dashboard, alert rules) queries with `prefix`.
pub fn queried_metrics(path: &str, prefixes: &[&str]) -> std::collections::BTreeSet<String> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(path)).expect("shipped file");
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| prefixes.iter().any(|p| t.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// The metric names of a scrape (histograms' `_bucket`, `_sum`, `_count` included).
pub fn scraped_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every family follows Prometheus' conventions, as `promtool check metrics` checks
/// them, with the audit log on (its families are there too), and the standard ones
/// (build info, process) are there.
#[test]
fn promtool_accepts_the_gateway_metrics() {
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let dir = tempdir();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nfile = {:?}\n\n[[backend]]\nname = \"alpha\"\nurl = \"{}\"\n",
        dir.join("audit.jsonl").display().to_string(),
        a.url
    );
    let cfg = format!(
        "{cfg}\n[[backend]]\nname = \"io\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--stdio\", \"--name\", \"io\", \"--no-dynamic\"]\n\n[[backend]]\nname = \"ps\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--stdio\", \"--name\", \"ps\", \"--no-dynamic\"]\nsharing = \"per_session\"\n",
        mock_bin().display(),
        mock_bin().display()
    );
    let gw = spawn_gateway(&cfg);
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    cl.call_tool("alpha__echo", json!({"text": "m"}));
    cl.call_tool("io__echo", json!({"text": "m"}));
    cl.call_tool("ps__echo", json!({"text": "m"}));
    let text = scrape(&format!(
        "{}/metrics",
        gw.admin.as_deref().expect("admin listener")
    ));
    for family in [
        "mcpgw_build_info{version=",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "mcpgw_audit_events_written_total",
        "mcpgw_audit_queue_events",
        "mcpgw_auth_token_cache_lookups_total",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    for old in [
        "mcpgw_backend_counter",
        "mcpgw_audit{",
        "mcpgw_auth_token_cache{",
    ] {
        assert!(!text.contains(old), "{old} still exported");
    }
    let said = promtool_check_metrics(&text);
    assert!(said.trim().is_empty(), "promtool: {said}");

    // The shipped dashboard and alert rules query only metrics that exist (the
    // sidecar's `mcpauth_*` are checked by the sidecar's tests; `up` is Prometheus').
    let scraped = scraped_names(&text);
    for file in ["ops/grafana/mcp-gateway.json", "ops/prometheus/alerts.yml"] {
        for name in queried_metrics(file, &["mcpgw_", "process_"]) {
            assert!(
                scraped.contains(&name),
                "{file} queries {name}, which the gateway does not export"
            );
        }
    }
}

#[test]
fn shipped_alert_rules_pass_promtool() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("ops/prometheus/alerts.yml"))
        .output()
        .expect("promtool (ops/scripts/install-tools.sh --test)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("ops/grafana/mcp-gateway.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() > 10));
}
