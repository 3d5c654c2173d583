//! What an operator sees of a sign-in: the metrics listener (checked by `promtool
//! check metrics`) and the spans a real OTLP/HTTP receiver gets
//! (gateway/tests/interop/otlp_receiver.py, protobuf decoded with the official
//! definitions).

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The OTLP receiver (a child killed on drop) and its base URL.
async fn receiver() -> (tokio::process::Child, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/venv/bin/python");
    assert!(python.exists(), "run ops/scripts/install-tools.sh --test");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(root.join("gateway/tests/interop/otlp_receiver.py"));
    let (child, url) = spawn_listening(cmd, "otlp_receiver.py").await;
    (child, url.trim_end_matches("/mcp").to_string())
}

fn promtool(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (ops/scripts/install-tools.sh --test)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics:\n{said}");
    said
}

#[tokio::test]
async fn a_sign_in_is_counted_and_traced() {
    let (_rx, otlp) = receiver().await;
    let google = FakeGoogle::start().await;
    let port = free_port();
    let mut opts = SidecarOptions::new("observe");
    opts.extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    opts.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into()),
    ];
    let sidecar = Sidecar::start(&google, &opts).await;
    let client = register_public(&sidecar).await;
    let b = browser();
    let p = pkce();
    let req = AuthRequest::new(&client, &p);
    let code = sign_in_code(&b, &sidecar, &req, "alice@example.com").await;
    let (status, v, _) = token(
        &sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &client.redirect_uri),
            ("client_id", &client.client_id),
            ("code_verifier", &p.verifier),
            ("resource", RESOURCE),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let text = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    check_sign_in_counted(&text);
    check_shipped_queries_exist(&text);

    // The sign-in's requests and its call to Google's token endpoint are spans.
    let seen = spans_once_exported(&otlp).await;
    for w in [
        "GET authorize",
        "GET callback",
        "google.token",
        "POST token",
    ] {
        assert!(seen.iter().any(|n| n == w), "no span {w:?} in {seen:?}");
    }
    sidecar.drop_schema().await;
}

/// One sign-in counted by its outcome, event, route and Google call; the pool, build and
/// process families there; and the exposition valid to promtool.
fn check_sign_in_counted(text: &str) {
    assert_eq!(
        sample(text, "mcpauth_sign_ins_total{outcome=\"ok\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(text, "mcpauth_events_total{kind=\"token_issued\"}"),
        1.0,
        "{text}"
    );
    assert!(
        sample(
            text,
            "mcpauth_http_requests_total{route=\"token\",status=\"2xx\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("mcpauth_google_request_duration_seconds_bucket{call=\"token\""),
        "{text}"
    );
    for family in [
        "mcpauth_db_pool_connections{state=\"idle\"}",
        "mcpauth_db_pool_max_connections 8",
        "mcpauth_build_info{version=",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let said = promtool(text);
    assert!(said.trim().is_empty(), "promtool: {said}");
}

/// The shipped dashboard and alert rules query only sidecar metrics that exist.
fn check_shipped_queries_exist(text: &str) {
    let scraped: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["ops/grafana/mcp-gateway.json", "ops/prometheus/alerts.yml"] {
        let shipped = std::fs::read_to_string(root.join(file)).expect("shipped file");
        for name in shipped
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("mcpauth_"))
        {
            assert!(
                scraped.contains(name),
                "{file} queries {name}, not exported"
            );
        }
    }
}

/// The sidecar's span names at the OTLP receiver, once the callback's, Google's token
/// call's and the token request's are there (or 20 s passed).
async fn spans_once_exported(otlp: &str) -> Vec<String> {
    let names = || async {
        let spans: Value = http()
            .get(format!("{otlp}/spans"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(
            spans
                .as_array()?
                .iter()
                .filter(|s| s["service"] == "mcp-oauth-sidecar")
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect::<Vec<_>>(),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while tokio::time::Instant::now() < deadline {
        seen = names().await.unwrap_or_default();
        let want = ["GET callback", "google.token", "POST token"];
        if want.iter().all(|w| seen.iter().any(|n| n == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}
