//! OpenTelemetry traces: a client's trace continues through the gateway to a backend,
//! as seen by a real OTLP/HTTP receiver (gateway/tests/interop/otlp_receiver.py, which
//! decodes the protobuf with the official definitions) and by the backend itself.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// The receiver and its recording MCP backend (same address).
fn spawn_receiver() -> Proc {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ops/scripts/install-tools.sh --test",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(root.join("gateway/tests/interop/otlp_receiver.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn otlp_receiver.py");
    let url = read_listen_line(&mut child, "otlp_receiver.py");
    Proc {
        child,
        url,
        admin: None,
    }
}

fn get_json(url: &str) -> Value {
    http_get(url)
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn a_client_trace_continues_through_gateway_and_backend() {
    let rx = spawn_receiver();
    let base = rx.url.trim_end_matches("/mcp").to_string();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[tracing]\nendpoint = \"{base}\"\nsample_ratio = 1.0\nservice_name = \"gw-under-test\"\n\n[[backend]]\nname = \"traced\"\nurl = \"{0}\"\n\n[[backend]]\nname = \"traced2\"\nurl = \"{0}\"\n",
        rx.url
    );
    let cfg = cfg.replace("[server]\n", "[server]\nlog_format = \"json\"\n");
    let log = tempdir().join("gateway.log");
    let gw = spawn_gateway_with(&cfg, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "50")], Some(&log));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "traced__echo", "arguments": {"text": "hi"}}});
    let a = cl.post_raw(
        serde_json::to_vec(&call).unwrap(),
        &[("traceparent", traceparent.as_str())],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(text_of(&a.response(&json!(7))), "hi");

    let spans_url = format!("{base}/spans");
    wait_until(Duration::from_secs(20), || {
        spans_of(&spans_url, TRACE).len() >= 2
    });
    let spans = spans_of(&spans_url, TRACE);
    let request = spans
        .iter()
        .find(|s| s["parent_span_id"] == CLIENT_SPAN)
        .unwrap_or_else(|| panic!("no span under the client's: {spans:#?}"));
    check_request_span(request);
    let call_span = spans
        .iter()
        .find(|s| s["parent_span_id"] == request["span_id"])
        .unwrap_or_else(|| panic!("no backend call under the request: {spans:#?}"));
    assert_eq!(call_span["name"], "tools/call traced", "{call_span:#}");
    assert_eq!(call_span["kind"], 3, "client span: {call_span:#}");
    assert_eq!(call_span["attributes"]["network.transport"], "http");

    check_backend_was_told(&base, call_span);
    check_access_log(&log, request);
    check_a_list_fans_out(&cl, &spans_url);
}

/// The spans the receiver at `spans_url` holds of trace `trace`.
fn spans_of(spans_url: &str, trace: &str) -> Vec<Value> {
    get_json(spans_url)
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["trace_id"] == trace)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The request's span: a server span named by method and tool, with the MCP attributes.
fn check_request_span(request: &Value) {
    assert_eq!(request["name"], "tools/call traced__echo", "{request:#}");
    assert_eq!(request["kind"], 2, "server span: {request:#}");
    assert_eq!(request["service"], "gw-under-test");
    let attrs = &request["attributes"];
    assert_eq!(attrs["mcp.method.name"], "tools/call", "{request:#}");
    assert_eq!(attrs["gen_ai.tool.name"], "traced__echo", "{request:#}");
    assert_eq!(attrs["mcp.backend"], "traced", "{request:#}");
    assert_eq!(attrs["mcp.outcome"], "ok", "{request:#}");
    assert_eq!(attrs["http.response.status_code"], 200, "{request:#}");
}

/// The backend was told the backend call span's context, in the header and in _meta.
fn check_backend_was_told(base: &str, call_span: &Value) {
    let sent = format!(
        "00-{TRACE}-{}-01",
        call_span["span_id"].as_str().unwrap_or_default()
    );
    let seen = get_json(&format!("{base}/seen"));
    let at_backend = seen
        .as_array()
        .and_then(|a| a.iter().find(|s| s["method"] == "tools/call"))
        .unwrap_or_else(|| panic!("the backend saw no call: {seen:#}"));
    assert_eq!(at_backend["header"], sent.as_str(), "{seen:#}");
    assert_eq!(at_backend["meta"], sent.as_str(), "{seen:#}");
}

/// The access log line (the shape shared with the sidecar) names the trace.
fn check_access_log(log: &std::path::Path, request: &Value) {
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    let line: Value = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request" && l["rpc_method"] == "tools/call")
        .unwrap_or_else(|| panic!("no access log line: {logged}"));
    for key in ["timestamp", "level", "target", "request_id"] {
        assert!(line.get(key).is_some(), "{key} missing: {line}");
    }
    assert_eq!(line["trace_id"], TRACE, "{line}");
    assert_eq!(line["span_id"], request["span_id"], "{line}");
}

/// A list fans out: one backend call span per backend, children of the request's.
fn check_a_list_fans_out(cl: &Client, spans_url: &str) {
    const LIST_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
    let list = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {}});
    let tp = format!("00-{LIST_TRACE}-{CLIENT_SPAN}-01");
    let a = cl.post_raw(
        serde_json::to_vec(&list).unwrap(),
        &[("traceparent", tp.as_str())],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    wait_until(Duration::from_secs(20), || {
        spans_of(spans_url, LIST_TRACE).len() >= 3
    });
    let spans = spans_of(spans_url, LIST_TRACE);
    let request = spans
        .iter()
        .find(|s| s["parent_span_id"] == CLIENT_SPAN)
        .unwrap_or_else(|| panic!("no list request span: {spans:#?}"));
    let mut children: Vec<&str> = spans
        .iter()
        .filter(|s| s["parent_span_id"] == request["span_id"])
        .filter_map(|s| s["name"].as_str())
        .collect();
    children.sort();
    assert_eq!(
        children,
        ["tools/list traced", "tools/list traced2"],
        "{spans:#?}"
    );
}

/// The default (`pretty`) log written to a file is plain text: colours are for a
/// terminal only (escape codes in a log file or a collector are noise, and cost more
/// to write than the rest of the line).
#[test]
fn pretty_lines_off_a_terminal_are_plain_text() {
    let mock = spawn_mock("plain", &[]);
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[backend]]\nname = \"plain\"\nurl = \"{}\"\n",
        mock.url
    );
    let log = tempdir().join("gateway.log");
    let gw = spawn_gateway_with(&cfg, &[], &[], Some(&log));
    Client::new(&gw.url).initialize();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(10), || {
        read()
            .lines()
            .any(|l| l.contains("request") && l.contains("initialize"))
    });
    let logged = read();
    assert!(
        !logged.contains('\u{1b}'),
        "escape codes in the log: {logged:?}"
    );
}

/// Without `[tracing]` nor `OTEL_*`, no span is made: the client's `traceparent` goes
/// to the backend as it came, and nothing reaches a receiver.
#[test]
fn off_by_default_the_client_context_is_relayed_unchanged() {
    let rx = spawn_receiver();
    let base = rx.url.trim_end_matches("/mcp").to_string();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[backend]]\nname = \"traced\"\nurl = \"{}\"\n",
        rx.url
    );
    let gw = spawn_gateway(&cfg);
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "traced__echo", "arguments": {"text": "x"}}});
    let a = cl.post_raw(
        serde_json::to_vec(&call).unwrap(),
        &[("traceparent", traceparent.as_str())],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let seen = get_json(&format!("{base}/seen"));
    let at_backend = seen
        .as_array()
        .and_then(|a| a.iter().find(|s| s["method"] == "tools/call"))
        .unwrap_or_else(|| panic!("the backend saw no call: {seen:#}"));
    assert_eq!(at_backend["header"], traceparent.as_str());
    assert_eq!(get_json(&format!("{base}/spans")), json!([]));
}

/// Head sampling: a request the sampler leaves out gets no span at all, and the client's
/// context goes to the backend as it came (as with tracing off); a client's sampled
/// context is still recorded under a parent-based sampler whose own ratio is 0.
#[test]
fn a_request_sampled_out_makes_no_span_and_relays_the_clients_context() {
    let rx = spawn_receiver();
    let base = rx.url.trim_end_matches("/mcp").to_string();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[tracing]\nendpoint = \"{base}\"\nsample_ratio = 0.0\n\n[[backend]]\nname = \"traced\"\nurl = \"{}\"\n",
        rx.url
    );
    let gw = spawn_gateway_with(&cfg, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "50")], None);
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    // What the backend saw of the last call (`what` names it in a failure).
    let seen_by_backend = |what: &str| -> Value {
        let seen = get_json(&format!("{base}/seen"));
        seen.as_array()
            .and_then(|a| a.iter().rfind(|s| s["method"] == "tools/call").cloned())
            .unwrap_or_else(|| panic!("the backend saw no call {what:?}: {seen:#}"))
    };
    let call = |text: &str, traceparent: Option<&str>| {
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "traced__echo", "arguments": {"text": text}}});
        let headers: Vec<(&str, &str)> = traceparent
            .map(|t| ("traceparent", t))
            .into_iter()
            .collect();
        let a = cl.post_raw(serde_json::to_vec(&body).unwrap(), &headers);
        assert_eq!(a.status, 200, "{}", a.body);
    };

    let unsampled = format!("00-{TRACE}-{CLIENT_SPAN}-00");
    call("out", Some(&unsampled));
    assert_eq!(seen_by_backend("out")["header"], unsampled.as_str());
    call("none", None);
    assert_eq!(seen_by_backend("none")["header"], Value::Null);

    let sampled = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    call("in", Some(&sampled));
    let header = seen_by_backend("in")["header"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        header.starts_with(&format!("00-{TRACE}-")) && !header.contains(CLIENT_SPAN),
        "{header}"
    );
    let spans_url = format!("{base}/spans");
    wait_until(Duration::from_secs(20), || {
        get_json(&spans_url)
            .as_array()
            .is_some_and(|a| a.len() >= 2)
    });
    // Only the sampled call's spans: its request and its backend call.
    let spans = get_json(&spans_url);
    let spans = spans.as_array().cloned().unwrap_or_default();
    assert!(spans.iter().all(|s| s["trace_id"] == TRACE), "{spans:#?}");
    assert!(
        spans.iter().any(|s| s["parent_span_id"] == CLIENT_SPAN),
        "{spans:#?}"
    );
}

/// Spans still queued when the gateway is stopped are exported before it exits: the
/// batch timer (60 s here) never fires, so only the exit's flush can send them.
#[test]
fn spans_queued_at_sigterm_are_exported_before_the_process_exits() {
    let rx = spawn_receiver();
    let base = rx.url.trim_end_matches("/mcp").to_string();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstop_delay_s = 0\ndrain_s = 1\n\n[tracing]\nendpoint = \"{base}\"\nsample_ratio = 1.0\n\n[[backend]]\nname = \"traced\"\nurl = \"{}\"\n",
        rx.url
    );
    let mut gw = spawn_gateway_with(&cfg, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "60000")], None);
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let trace = "5cf92f3577b34da6a3ce929d0e0e4737";
    let traceparent = format!("00-{trace}-{CLIENT_SPAN}-01");
    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "traced__echo", "arguments": {"text": "last"}}});
    let a = cl.post_raw(
        serde_json::to_vec(&call).unwrap(),
        &[("traceparent", traceparent.as_str())],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let spans_url = format!("{base}/spans");
    let in_trace = || {
        get_json(&spans_url)
            .as_array()
            .map(|a| a.iter().filter(|s| s["trace_id"] == trace).count())
            .unwrap_or(0)
    };
    assert_eq!(
        in_trace(),
        0,
        "exported before the stop: the test proves nothing"
    );
    let rc = unsafe { libc::kill(gw.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "SIGTERM");
    let mut exited = None;
    wait_until(Duration::from_secs(30), || {
        exited = gw.child.try_wait().ok().flatten();
        exited.is_some()
    });
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert!(
        in_trace() >= 2,
        "the request and backend-call spans were lost at exit: {:#}",
        get_json(&spans_url)
    );
}
