//! STDIO backends: shared and per-session child processes, supervision, clean-up.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

fn stdio_backend(name: &str, marker: &str, extra: &str) -> String {
    let timeout = if extra.contains("timeout_ms") {
        ""
    } else {
        "timeout_ms = 5000\n"
    };
    format!(
        "\n[[backend]]\nname = \"{name}\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--stdio\", \"--name\", \"{marker}\", \"--no-dynamic\"]\n{timeout}{extra}\n",
        mock_bin().display()
    )
}

fn config(backends: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 1\n{backends}")
}

fn readyz(gw: &Proc) -> Value {
    readyz_detail(gw)
}

#[test]
fn a_shared_stdio_backend_serves_every_session_beside_an_http_one() {
    let marker = unique("shared");
    let http = spawn_mock("web", &["--no-dynamic"]);
    let gw = spawn_gateway(
        &(gateway_config(&[("web", &http.url, "")], "") + &stdio_backend("local", &marker, "")),
    );
    let mut a = Client::new(&gw.url);
    a.initialize();
    let mut b = Client::new(&gw.url);
    b.initialize();
    for cl in [&mut a, &mut b] {
        let names = cl.tool_names();
        assert!(names.contains(&"local__echo".to_string()), "{names:?}");
        assert!(names.contains(&"web__echo".to_string()), "{names:?}");
        let who: Value =
            serde_json::from_str(&text_of(&cl.call_tool("local__whoami", json!({})))).unwrap();
        assert_eq!(who["server"], marker.as_str());
        assert_eq!(
            text_of(&cl.call_tool("web__echo", json!({"text": "w"}))),
            "w"
        );
    }
    // One process serves both sessions.
    assert_eq!(servers(&format!("--name {marker}")).len(), 1);
    // Server-to-client requests from a STDIO server reach the client that asked.
    let (req, done) = call_answering(
        &a,
        "local__test_sampling",
        json!({"prompt": "hi"}),
        json!({"role": "assistant", "content": {"type": "text", "text": "from client a"}, "model": "m", "stopReason": "endTurn"}),
    );
    assert_eq!(req["method"], "sampling/createMessage", "{req}");
    assert!(done.to_string().contains("from client a"), "{done}");
}

#[test]
fn a_slow_call_does_not_stall_other_sessions() {
    let marker = unique("slowcall");
    let gw = spawn_gateway(&config(&stdio_backend("s", &marker, "timeout_ms = 20000")));
    let mut a = Client::new(&gw.url);
    a.initialize();
    let (url, sid) = (a.url.clone(), a.session.clone().unwrap());
    let slow = std::thread::spawn(move || {
        let mut c = Client::new(&url);
        c.session = Some(sid);
        c.call_tool("s__slow", json!({"ms": 3000}))
    });
    let mut b = Client::new(&gw.url);
    b.initialize();
    let t = Instant::now();
    assert_eq!(
        text_of(&b.call_tool("s__echo", json!({"text": "fast"}))),
        "fast"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "echo waited for the slow call"
    );
    assert_eq!(text_of(&slow.join().unwrap()), "slept 3000");
}

#[test]
fn kill_9_of_a_child_fails_its_call_and_the_backend_restarts() {
    let marker = unique("killed");
    let gw = spawn_gateway(&config(&stdio_backend("k", &marker, "timeout_ms = 20000")));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let child = format!("mcp-mock --stdio --name {marker}");
    wait_until(Duration::from_secs(10), || servers(&child).len() == 1);
    let (url, sid) = (cl.url.clone(), cl.session.clone().unwrap());
    let started = Instant::now();
    let call = std::thread::spawn(move || {
        let mut c = Client::new(&url);
        c.session = Some(sid);
        c.call_tool("k__slow", json!({"ms": 15000}))
    });
    let pid = servers(&child)[0];
    // SAFETY: kill(2) on a pid found above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let r = call.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the call was not failed at once"
    );
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("\"k\""),
        "{r}"
    );
    // A little later the restarted process answers.
    let mut ok = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let r = cl.call_tool("k__echo", json!({"text": "back"}));
        if r["result"]["content"][0]["text"] == "back" {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the backend did not come back");
    let ready = readyz(&gw);
    let k = &ready["backends"][0]["transport"];
    assert!(k["restarts"].as_u64().unwrap() >= 1, "{ready}");
    assert_eq!(servers(&child).len(), 1);
}

#[test]
fn per_session_processes_end_with_their_sessions_or_idle_out() {
    let marker = unique("persession");
    let gw = spawn_gateway(&config(&stdio_backend(
        "p",
        &marker,
        "sharing = \"per_session\"\nidle_timeout_s = 2\nmax_processes = 500",
    )));
    let child = format!("mcp-mock --stdio --name {marker}");
    let mut sessions = Vec::new();
    for i in 0..200 {
        let mut cl = Client::new(&gw.url);
        cl.initialize();
        if i % 50 == 0 {
            let who: Value =
                serde_json::from_str(&text_of(&cl.call_tool("p__whoami", json!({})))).unwrap();
            assert_eq!(who["server"], marker.as_str());
        }
        sessions.push(cl);
    }
    // Every session got its own process.
    let ready = readyz(&gw);
    assert_eq!(
        ready["backends"][0]["transport"]["started_total"], 200,
        "{ready}"
    );
    assert!(!servers(&child).is_empty());
    // Half end with DELETE, half idle out.
    for cl in sessions.iter().step_by(2) {
        let r = blocking()
            .delete(&gw.url)
            .header("mcp-session-id", cl.session.clone().unwrap())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    wait_until(Duration::from_secs(30), || {
        live_processes(&child).is_empty()
    });
    let gw_pid = gw.child.id();
    wait_until(Duration::from_secs(10), || zombies_of(gw_pid) == 0);
    // A session whose process idled out gets a new one on its next call.
    let who: Value =
        serde_json::from_str(&text_of(&sessions[1].call_tool("p__whoami", json!({})))).unwrap();
    assert_eq!(who["server"], marker.as_str());
}

#[test]
fn max_processes_refuses_the_next_session_clearly() {
    let marker = unique("capped");
    let gw = spawn_gateway(&config(&stdio_backend(
        "c",
        &marker,
        "sharing = \"per_session\"\nmax_processes = 2",
    )));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut cl = Client::new(&gw.url);
        cl.initialize();
        assert_eq!(
            text_of(&cl.call_tool("c__echo", json!({"text": "in"}))),
            "in"
        );
        held.push(cl);
    }
    let mut third = Client::new(&gw.url);
    third.initialize();
    let r = third.call_tool("c__echo", json!({"text": "x"}));
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("max_processes") && msg.contains("\"c\""),
        "{r}"
    );
}

#[test]
fn garbage_on_stdout_is_skipped_and_the_gateway_stays_up() {
    let marker = unique("garbage");
    let script = format!(
        "echo 'this is not json'; echo '[1,2]'; head -c 10485760 /dev/zero | tr '\\\\0' x; echo; exec {} --stdio --name {marker} --no-dynamic",
        mock_bin().display()
    );
    let backend = format!(
        "\n[[backend]]\nname = \"g\"\ntransport = \"stdio\"\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\ntimeout_ms = 10000\n"
    );
    let gw = spawn_gateway(&config(&backend));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    assert_eq!(
        text_of(&cl.call_tool("g__echo", json!({"text": "clean"}))),
        "clean"
    );
    assert_eq!(
        http_get(&gw.url.replace("/mcp", "/healthz")).unwrap().0,
        200
    );
}

#[test]
fn stopping_or_killing_the_gateway_leaves_no_child() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let marker = unique("shutdown");
        let mut gw = spawn_gateway(&config(
            &(stdio_backend("a", &marker, "processes = 2")
                + &stdio_backend("b", &marker, "sharing = \"per_session\"")),
        ));
        let mut cl = Client::new(&gw.url);
        cl.initialize();
        assert_eq!(text_of(&cl.call_tool("b__echo", json!({"text": "x"}))), "x");
        let mark = format!("--name {marker}");
        wait_until(Duration::from_secs(10), || live_processes(&mark).len() >= 3);
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(gw.child.id() as i32, signal) };
        let _ = gw.child.wait();
        wait_until(Duration::from_secs(15), || live_processes(&mark).is_empty());
        gw.kill();
    }
}
