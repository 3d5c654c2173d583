//! SIGTERM drains like the gateway's (docs/sidecar.md, "Stopping"): `/readyz` fails
//! first, then accepting stops, and a request arriving on a parked keep-alive
//! connection, or one in flight, is still answered, with `Connection: close`; the
//! process exits 0 once its connections have closed or the drain window ends.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// One HTTP/1.1 response read off a kept-alive connection.
struct Response {
    status: u16,
    connection_close: bool,
    body: String,
}

/// A plain keep-alive client: one connection, requests written by hand, so that the
/// test controls exactly when each byte is sent.
struct Conn(TcpStream);

impl Conn {
    async fn open(addr: &str) -> Conn {
        Conn(TcpStream::connect(addr).await.expect("connect"))
    }

    async fn send(&mut self, bytes: &str) {
        self.0.write_all(bytes.as_bytes()).await.expect("write");
    }

    async fn get(&mut self, path: &str) -> Response {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: sidecar\r\n\r\n"))
            .await;
        self.read().await
    }

    async fn read(&mut self) -> Response {
        within("a response", self.read_response()).await
    }

    async fn read_response(&mut self) -> Response {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = self.0.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a response");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status = head[9..12].parse().expect("status");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::trim))
                .map(str::to_string)
        };
        let len: usize = header("content-length")
            .expect("content-length")
            .parse()
            .expect("length");
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let mut chunk = [0u8; 4096];
            let n = self.0.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "connection closed in a body");
            body.extend_from_slice(&chunk[..n]);
        }
        Response {
            status,
            connection_close: header("connection").as_deref() == Some("close"),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The server closed the connection (after its last response).
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            within("the connection to close", self.0.read(&mut byte)).await,
            Ok(0) | Err(_)
        )
    }
}

/// Waits until a new connection to `addr` is refused: the listener is closed.
async fn until_refused(addr: &str) {
    within("the listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_answers_parked_and_in_flight_requests_then_exits_0() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("drain");
    // A window far above the harness deadline: the exit below comes from every
    // connection having closed, not from the window ending.
    opts.server = "stop_delay_s = 2\ndrain_s = 600\n".into();
    let mut sc = Sidecar::start(&google, &opts).await;
    let addr = sc.url.trim_start_matches("http://").to_string();

    let mut probe = Conn::open(&addr).await;
    let ready = probe.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let mut parked = Conn::open(&addr).await;
    let first = parked.get("/healthz").await;
    assert_eq!(first.status, 200);
    assert!(!first.connection_close, "kept alive before the stop");
    // A request whose body is still arriving when the signal comes.
    let body = "grant_type=authorization_code&code=not-a-code&client_id=nobody";
    let mut in_flight = Conn::open(&addr).await;
    in_flight
        .send(&format!(
            "POST /token HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..10]
        ))
        .await;

    send_term(&sc.child);
    // The signal is handled asynchronously: ask until readiness fails (or the deadline).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let draining = loop {
        let r = probe.get("/readyz").await;
        if r.status == 503 || std::time::Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(draining.status, 503, "{}", draining.body);
    assert!(draining.body.contains("draining"), "{}", draining.body);
    drop(probe);

    until_refused(&addr).await;
    let second = parked.get("/healthz").await;
    assert_eq!(
        second.status, 200,
        "the parked connection's request is answered"
    );
    assert!(second.connection_close, "answered with Connection: close");
    assert!(parked.closed().await, "closed right after that response");

    in_flight.send(&body[10..]).await;
    let answer = in_flight.read().await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(answer.connection_close);
    drop(in_flight);

    let status = within("the sidecar to exit", sc.child.wait())
        .await
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    sc.drop_schema().await;
}

#[tokio::test]
async fn drain_window_ends_with_an_idle_connection_open() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("drainidle");
    // The idle connection would outlive the harness deadline: the exit comes from the
    // window ending.
    opts.server = "drain_s = 1\nheader_timeout_s = 300\n".into();
    let mut sc = Sidecar::start(&google, &opts).await;
    let addr = sc.url.trim_start_matches("http://").to_string();
    let mut idle = Conn::open(&addr).await;
    assert_eq!(idle.get("/healthz").await.status, 200);

    let status = terminate(&mut sc.child).await;
    assert!(status.success(), "exit status {status}");
    assert!(idle.closed().await, "closed when the process exits");
    sc.drop_schema().await;
}

/// Behind a load balancer whose idle timeout is longer than the head deadline, an idle
/// kept-alive connection must outlive the head deadline (the balancer reuses it); it
/// closes after `keepalive_timeout_s`, and a head that starts but stalls is still cut
/// after `header_timeout_s`.
#[tokio::test]
async fn idle_keepalive_outlives_the_head_deadline_and_a_stalled_head_does_not() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("keepalive");
    opts.server = "header_timeout_s = 1\nkeepalive_timeout_s = 8\n".into();
    let sc = Sidecar::start(&google, &opts).await;
    let addr = sc.url.trim_start_matches("http://").to_string();
    let mut conn = Conn::open(&addr).await;
    assert_eq!(conn.get("/healthz").await.status, 200);
    // Idle for twice the head deadline (what is under test is that time passing).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        conn.get("/healthz").await.status,
        200,
        "the idle connection was closed at the head deadline"
    );
    // Idle past keepalive_timeout_s: closed.
    assert!(conn.closed().await, "an idle connection is never closed");

    // A head that starts and stalls is cut at the head deadline (1 s), well before the
    // idle timeout (8 s).
    let mut stalled = Conn::open(&addr).await;
    assert_eq!(stalled.get("/healthz").await.status, 200);
    stalled.send("GET /healthz HTTP/1.1\r\nHost: sid").await;
    let t = std::time::Instant::now();
    assert!(stalled.closed().await);
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "a stalled head lived {:?}: cut by the idle timeout, not the head deadline",
        t.elapsed()
    );
    sc.drop_schema().await;
}
