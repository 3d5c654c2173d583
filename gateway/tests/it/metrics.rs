//! The Prometheus admin listener.

use crate::common::*;
use serde_json::json;

fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn counters_move_under_load() {
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let port = free_port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 1\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[backend]]\nname = \"alpha\"\nurl = \"{}\"\n",
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
    let (_, first) = http_get(&url).unwrap();
    let calls = "mcpgw_requests_total{backend=\"alpha\",method=\"tools/call\",outcome=\"ok\",route=\"mcp\"}";
    assert!(sample(&first, calls) >= 5.0, "{first}");
    assert!(
        first.contains("mcpgw_request_duration_seconds_bucket"),
        "{first}"
    );
    assert!(
        first.contains("mcpgw_backend_up{backend=\"alpha\"} 1"),
        "{first}"
    );
    for _ in 0..3 {
        cl.call_tool("alpha__echo", json!({"text": "m"}));
    }
    let (_, second) = http_get(&url).unwrap();
    assert_eq!(sample(&second, calls), sample(&first, calls) + 3.0);
    assert!(
        sample(
            &second,
            "mcpgw_backend_counter{backend=\"alpha\",counter=\"requests\"}"
        ) > sample(
            &first,
            "mcpgw_backend_counter{backend=\"alpha\",counter=\"requests\"}"
        )
    );
}
