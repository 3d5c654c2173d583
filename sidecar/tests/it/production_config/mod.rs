//! Acceptance test of issue O1: the production configurations work.
//!
//! The real `ops/config/production.toml` (gateway) and `ops/config/sidecar.production.toml`
//! run with `CONFIG_ENV=production` from the repository root, every `${secret:…}` served
//! by a local moto server (AWS Secrets Manager), in front of them a small stand-in for
//! the load balancer that routes exactly the paths `ops/terraform/main.tf` sends to the
//! sidecar (`local.sidecar_paths`) and everything else to the gateway, and the fake
//! Google in place of Google (`MCP_GOOGLE_ORIGIN`). A person signs in through the
//! sidecar (Workload Identity Federation reads her groups), calls a tool through the
//! gateway with the token, and the audit rows of both land in the PostgreSQL database
//! named by the `mcp-gateway/database` secret.
//!
//! The only differences from a deployment: the env overrides of ports and of the
//! Google origin, and the gateway's file is a copy of the real one with one mock
//! `[[backend]]` appended and its data directory (`/var/lib/mcp-gateway`, a volume in
//! the ECS task) moved to a temporary directory.
//!
//! Here: the harness (AWS, the database, the load balancer, the MCP client); the
//! deployment and its checks are in `steps`.

mod steps;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const SERVICE_ACCOUNT: &str = "mcp-directory-reader@o1-project.iam.gserviceaccount.com";
const WIF_AUDIENCE: &str = "//iam.googleapis.com/projects/424242/locations/global/workloadIdentityPools/mcp-gateway/providers/aws-prod";
/// `google.admin_subject` of sidecar.production.toml: the fake Google must know it.
const ADMIN_SUBJECT: &str = "mcp-directory-reader@example.com";
const GOOGLE_CLIENT_ID: &str = "o1-test.apps.googleusercontent.com";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// A binary of the workspace, next to this test's profile directory.
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join(name);
    assert!(
        bin.exists(),
        "{} not built: cargo build -p mcp-gateway -p mcp-backends -p fake-google",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

// ---------------------------------------------------------------------------------
// AWS Secrets Manager: moto
// ---------------------------------------------------------------------------------

struct Moto {
    child: std::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let bin = repo_root().join(".tools/venv/bin/moto_server");
    assert!(
        bin.exists(),
        "{} is missing: run ops/scripts/install-tools.sh --test",
        bin.display()
    );
    let port = free_port();
    let child = std::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    moto
}

async fn create_secret(moto: &Moto, name: &str, value: &str) {
    let r = http()
        .post(&moto.url)
        .header("x-amz-target", "secretsmanager.CreateSecret")
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(json!({"Name": name, "SecretString": value}).to_string())
        .send()
        .await
        .expect("CreateSecret");
    let status = r.status();
    assert!(
        status.is_success(),
        "CreateSecret {name}: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

fn aws_env(cmd: &mut Command, moto: &Moto) {
    for k in [
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "MCP_OAUTH_SIDECAR_CONFIG",
        "MCP_GATEWAY_CONFIG",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CONFIG_ENV", "production")
        .env("RUST_LOG", "info")
        .current_dir(repo_root());
}

// ---------------------------------------------------------------------------------
// A fresh database: the one the `mcp-gateway/database` secret names
// ---------------------------------------------------------------------------------

struct Database {
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Database {
        let name = format!("o1_{}", random(6));
        let (client, conn) = tokio_postgres::connect(DB_URL, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        Database {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the fresh database");
        tokio::spawn(conn);
        client
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(DB_URL, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------
// The load balancer: path rules from ops/terraform/main.tf
// ---------------------------------------------------------------------------------

/// `local.sidecar_paths` of ops/terraform/main.tf: the paths the ALB sends to the sidecar.
fn terraform_sidecar_paths() -> Vec<String> {
    let path = repo_root().join("ops/terraform/main.tf");
    let text = std::fs::read_to_string(&path).expect("ops/terraform/main.tf");
    let start = text
        .find("sidecar_paths = [")
        .expect("local.sidecar_paths in ops/terraform/main.tf");
    let rest = &text[start..];
    let list = &rest[..rest.find(']').expect("end of sidecar_paths")];
    let paths: Vec<String> = list
        .lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix('"')?;
            Some(l[..l.find('"')?].to_string())
        })
        .collect();
    assert!(!paths.is_empty(), "no paths in local.sidecar_paths");
    paths
}

/// An ALB path pattern: case-sensitive, `*` any characters, `?` one.
fn path_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[derive(Default)]
struct Targets {
    sidecar: Option<SocketAddr>,
    gateway: Option<SocketAddr>,
}

struct Alb {
    url: String,
    targets: Arc<Mutex<Targets>>,
    sidecar_paths: Arc<Vec<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Alb {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn plain(status: u16, text: &str) -> hyper::Response<ProxyBody> {
    let mut r = hyper::Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r
}

impl Alb {
    async fn start() -> Alb {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let targets = Arc::new(Mutex::new(Targets::default()));
        let sidecar_paths = Arc::new(terraform_sidecar_paths());
        let (t, p) = (targets.clone(), sidecar_paths.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (t, p) = (t.clone(), p.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (t, p) = (t.clone(), p.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(forward(req, peer, &t, &p).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Alb {
            url,
            targets,
            sidecar_paths,
            task,
        }
    }

    fn routes_to_sidecar(&self, path: &str) -> bool {
        self.sidecar_paths.iter().any(|p| path_matches(p, path))
    }
}

/// Forwards one request the way the ALB does: by path, `Host` kept, the client's
/// address appended to `X-Forwarded-For`.
async fn forward(
    mut req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    targets: &Mutex<Targets>,
    sidecar_paths: &[String],
) -> hyper::Response<ProxyBody> {
    let to_sidecar = sidecar_paths
        .iter()
        .any(|p| path_matches(p, req.uri().path()));
    let target = {
        let t = targets.lock().expect("targets");
        if to_sidecar {
            t.sidecar
        } else {
            t.gateway
        }
    };
    let Some(target) = target else {
        return plain(503, "target not registered yet");
    };
    let xff = match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => format!("{v}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let h = req.headers_mut();
    h.insert("x-forwarded-for", xff.parse().expect("xff"));
    h.insert("x-forwarded-proto", http::HeaderValue::from_static("http"));
    let stream = match tokio::net::TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => return plain(502, &format!("connect {target}: {e}")),
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => return plain(502, &format!("handshake {target}: {e}")),
        };
    tokio::spawn(conn);
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => plain(502, &format!("{target}: {e}")),
    }
}

// ---------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------

/// Spawns `cmd` (stderr to `log`), returns it with the URL of its `listening on` line;
/// stdout keeps being drained.
async fn spawn_logged(mut cmd: Command, what: &str, log: &Path) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).expect("log file")))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    // Other lines may come first (the gateway announces its metrics listener).
    let announced = listening_url(&mut child, Duration::from_secs(60)).await;
    let Some(url) = announced else {
        let status = child.try_wait().ok().flatten();
        panic!(
            "{what} did not announce its address (exit: {status:?}); its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    };
    (child, url)
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap_or_else(|_| panic!("no address in {url}"))
}

// ---------------------------------------------------------------------------------
// MCP over HTTP
// ---------------------------------------------------------------------------------

struct Mcp {
    url: String,
    token: String,
    session: Option<String>,
    http: reqwest::Client,
}

impl Mcp {
    async fn post(&mut self, body: Value) -> (u16, reqwest::header::HeaderMap, Option<Value>) {
        let mut r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("user-agent", "o1-acceptance/1.0");
        if let Some(s) = &self.session {
            r = r
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        let resp = r.json(&body).send().await.expect("POST /mcp");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let sse = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let text = resp.text().await.expect("body");
        let value = if sse {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .find(|v| v.get("id").is_some() && v.get("method").is_none())
        } else if text.trim().is_empty() {
            None
        } else {
            Some(serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})))
        };
        (status, headers, value)
    }

    async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        let (status, _, v) = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let v = v.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method}: HTTP {status} {v}");
        v
    }
}

// ---------------------------------------------------------------------------------
// The audit log
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct AuditRow {
    kind: String,
    email: Option<String>,
    groups: Vec<String>,
    rpc_method: Option<String>,
    backend: Option<String>,
    target: Option<String>,
    http_status: i32,
    detail: Option<String>,
}

async fn audit_rows(db: &Database) -> Vec<AuditRow> {
    let client = db.client().await;
    let exists: bool = client
        .query_one("SELECT to_regclass('public.audit_events') IS NOT NULL", &[])
        .await
        .expect("to_regclass")
        .get(0);
    if !exists {
        return Vec::new();
    }
    client
        .query(
            "SELECT kind, email, groups, rpc_method, backend, target, http_status, detail \
             FROM public.audit_events ORDER BY id",
            &[],
        )
        .await
        .expect("audit rows")
        .iter()
        .map(|r| AuditRow {
            kind: r.get(0),
            email: r.get(1),
            groups: r.get(2),
            rpc_method: r.get(3),
            backend: r.get(4),
            target: r.get(5),
            http_status: r.get(6),
            detail: r.get(7),
        })
        .collect()
}

// ---------------------------------------------------------------------------------

const FAKE_GOOGLE: &str = r#"
[[user]]
email = "alice@example.com"
name = "Alice"
groups = ["eng@example.com", "all@example.com"]


[[user]]
email = "eve@other.com"
name = "Eve (other company)"
"#;

#[tokio::test]
async fn production_configs_sign_in_call_a_tool_and_audit() {
    let deployment = steps::Deployment::start().await;
    deployment.check_discovery().await;
    let access_token = deployment.sign_in().await;
    deployment.call_tools(&access_token).await;
    deployment.check_audit().await;
    deployment.check_metrics().await;
    deployment.stop_and_check_logs(&access_token).await;
}
