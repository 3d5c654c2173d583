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
    let root = repo_root();
    let work = TempDir::new("o1");

    // Google, AWS, the database.
    let google_client_secret = format!("GOCSPX-{}", random(12));
    let google = FakeGoogle::start_with(&format!(
        "{FAKE_GOOGLE}\n[[user]]\nemail = \"{ADMIN_SUBJECT}\"\n\n[[client]]\nclient_id = \"{GOOGLE_CLIENT_ID}\"\n\
         client_secret = \"{google_client_secret}\"\n\n\
         [[service_account]]\nemail = \"{SERVICE_ACCOUNT}\"\n\n[wif]\naudience = \"{WIF_AUDIENCE}\"\n"
    ))
    .await;
    let moto = start_moto().await;
    let db = Database::create().await;

    // The secrets of the README's "Deploying to AWS", step 3 (and Terraform's database).
    let session_key = random(32);
    let signing_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let signing_pem = signing_key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 PEM")
        .to_string();
    create_secret(&moto, "mcp-gateway/session-key", &session_key).await;
    create_secret(&moto, "mcp-gateway/signing-key", &signing_pem).await;
    create_secret(
        &moto,
        "mcp-gateway/google-oauth",
        &json!({"client_id": GOOGLE_CLIENT_ID, "client_secret": google_client_secret}).to_string(),
    )
    .await;
    create_secret(
        &moto,
        "mcp-gateway/google-workload-identity",
        &json!({"service_account": SERVICE_ACCOUNT, "audience": WIF_AUDIENCE}).to_string(),
    )
    .await;
    create_secret(
        &moto,
        "mcp-gateway/database",
        &json!({ "url": db.url }).to_string(),
    )
    .await;

    // The load balancer first: its URL is the public origin both processes are given.
    let alb = Alb::start().await;
    let public = alb.url.clone();
    let resource = format!("{public}/mcp");
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/mcp",
        "/register",
        "/authorize",
        "/consent",
        "/callback",
        "/token",
        "/jwks",
        "/revoke",
    ] {
        assert!(
            alb.routes_to_sidecar(path),
            "the load balancer does not send {path} to the sidecar: add \"{path}\" to \
             local.sidecar_paths in ops/terraform/main.tf (the sign-in needs it)"
        );
    }
    for path in [
        "/mcp",
        "/.well-known/oauth-protected-resource/mcp",
        "/healthz",
    ] {
        assert!(
            !alb.routes_to_sidecar(path),
            "{path} must go to the gateway"
        );
    }

    // The sidecar: CONFIG_ENV=production, ops/config/sidecar.production.toml as it is.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-oauth-sidecar"));
    aws_env(&mut cmd, &moto);
    cmd.env("MCP_PUBLIC_URL", &public)
        .env("MCP_SIDECAR_LISTEN", "127.0.0.1:0")
        .env("MCP_GOOGLE_ORIGIN", &google.url)
        .env("MCP_SIDECAR_AUDIT_DIR", work.path.join("sidecar"));
    let sidecar_log = work.path.join("sidecar.log");
    let (sidecar_child, sidecar_url) = spawn_logged(cmd, "mcp-oauth-sidecar", &sidecar_log).await;
    alb.targets.lock().unwrap().sidecar = Some(addr_of(&sidecar_url));

    // A mock MCP server as the one backend.
    let mut cmd = Command::new(workspace_bin("mcp-mock"));
    cmd.args(["--http", "127.0.0.1:0", "--name", "demo"]);
    let (_mock, mock_url) = spawn_logged(cmd, "mcp-mock", &work.path.join("mock.log")).await;

    // The gateway: CONFIG_ENV=production, the real production.toml plus that backend.
    let real = std::fs::read_to_string(root.join("ops/config/production.toml"))
        .expect("ops/config/production.toml");
    assert!(
        real.contains("/var/lib/mcp-gateway/"),
        "the data directory moved: update this test"
    );
    let data_dir = work.path.join("var-lib-mcp-gateway");
    let config = format!(
        "{}\n\n# Added by the acceptance test.\n[[backend]]\nname = \"demo\"\nurl = \"{mock_url}\"\n\
         timeout_ms = 10000\nallow_groups = [\"eng@example.com\"]\n\
         forward_identity = {{ email = \"X-Forwarded-Email\" }}\n",
        real.replace("/var/lib/mcp-gateway", &data_dir.display().to_string())
    );
    let config_path = work.path.join("production.toml");
    std::fs::write(&config_path, config).expect("write the gateway config");
    let metrics_port = free_port();
    let mut cmd = Command::new(workspace_bin("mcp-gateway"));
    aws_env(&mut cmd, &moto);
    cmd.env("MCP_GATEWAY_CONFIG", &config_path)
        .env("MCP_PUBLIC_URL", &public)
        .env("MCP_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("MCP_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("MCP_SIDECAR_URL", &sidecar_url);
    let gateway_log = work.path.join("gateway.log");
    let (_gateway, gateway_url) = spawn_logged(cmd, "mcp-gateway", &gateway_log).await;
    alb.targets.lock().unwrap().gateway = Some(addr_of(&gateway_url));
    // The gateway announces its address before Pingora has bound it: wait for /healthz.
    let healthz = gateway_url.replace("/mcp", "/healthz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !matches!(http().get(&healthz).send().await, Ok(r) if r.status() == 200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not become healthy; its log:\n{}",
            std::fs::read_to_string(&gateway_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Discovery, as an MCP client does it: 401 → resource metadata → AS metadata.
    let r = http()
        .post(&resource)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{public}/.well-known/oauth-protected-resource/mcp\""
        )),
        "{challenge}"
    );
    let prm: Value = http()
        .get(format!("{public}/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], resource.as_str());
    assert_eq!(prm["authorization_servers"], json!([public]));
    let asm: Value = http()
        .get(format!("{public}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asm["issuer"], public.as_str());
    assert_eq!(asm["jwks_uri"], format!("{public}/jwks"));

    // The signing key is the one from the secret.
    let jwks: Value = http()
        .get(format!("{public}/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
        &signing_key.public_key(),
        false,
    );
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(point.x().expect("x")),
        URL_SAFE_NO_PAD.encode(point.y().expect("y")),
    );
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(
        keys.iter()
            .any(|k| k["x"] == x.as_str() && k["y"] == y.as_str()),
        "the published key is the mcp-gateway/signing-key secret: {jwks}"
    );

    // alice signs in through the load balancer: registration, consent, Google,
    // groups by Workload Identity Federation, callback, token.
    let sidecar = Sidecar::attach(sidecar_child, public.clone(), "mcp_oauth".into());
    let client = register_public(&sidecar).await;
    let b = browser();
    let p = pkce();
    let mut req = AuthRequest::new(&client, &p);
    req.resource = Some(resource.clone());
    let code = sign_in_code(&b, &sidecar, &req, "alice@example.com").await;
    let (status, tokens, _) = token(
        &sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &client.redirect_uri),
            ("client_id", &client.client_id),
            ("code_verifier", &p.verifier),
            ("resource", &resource),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let access_token = tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let key = jsonwebtoken::DecodingKey::from_ec_components(&x, &y).expect("key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[resource.as_str()]);
    v.set_issuer(&[public.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(&access_token, &key, &v)
        .expect("the access token is signed with the secret's key")
        .claims;
    assert_eq!(claims["email"], "alice@example.com");
    assert!(
        claims["groups"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("eng@example.com"))),
        "groups read through Workload Identity Federation: {claims}"
    );

    // The tool call through the gateway.
    let mut mcp = Mcp {
        url: resource.clone(),
        token: access_token.clone(),
        session: None,
        http: reqwest::Client::new(),
    };
    let (status, headers, init) = mcp
        .post(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "o1-acceptance", "version": "1"}}}),
        )
        .await;
    assert_eq!(status, 200, "initialize: {init:?}");
    mcp.session = Some(
        headers["mcp-session-id"]
            .to_str()
            .expect("session id")
            .to_string(),
    );
    let (status, _, _) = mcp
        .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(status, 202);
    let list = mcp.request(1, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list: {list}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"demo__echo"), "{names:?}");
    let call = mcp
        .request(
            2,
            "tools/call",
            json!({"name": "demo__echo", "arguments": {"text": "hello from production"}}),
        )
        .await;
    assert_eq!(
        call["result"]["content"][0]["text"], "hello from production",
        "{call}"
    );
    let who = mcp
        .request(
            3,
            "tools/call",
            json!({"name": "demo__whoami", "arguments": {}}),
        )
        .await;
    let who: Value =
        serde_json::from_str(who["result"]["content"][0]["text"].as_str().expect("text"))
            .expect("whoami json");
    assert_eq!(who["headers"]["x-forwarded-email"], "alice@example.com");
    assert!(
        who["headers"].get("authorization").is_none(),
        "the client's token never goes upstream"
    );

    // eve, of another company, is refused.
    let b = browser();
    let p = pkce();
    let mut req = AuthRequest::new(&client, &p);
    req.resource = Some(resource.clone());
    match sign_in(&b, &sidecar, &req, "eve@other.com").await {
        Outcome::Page(403, _) => {}
        Outcome::Page(s, page) => panic!("eve: HTTP {s}: {page}"),
        Outcome::Redirect(q) => panic!("eve was not refused: {q:?}"),
    }

    // The audit log: the gateway's request rows and the sidecar's auth events, in the
    // database of the `mcp-gateway/database` secret.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = audit_rows(&db).await;
        let call_row = rows.iter().any(|r| {
            r.kind == "request"
                && r.rpc_method.as_deref() == Some("tools/call")
                && r.backend.as_deref() == Some("demo")
                && r.target.as_deref() == Some("demo__echo")
        });
        let auth_rows = ["login_ok", "token_issued", "login_refused"]
            .iter()
            .all(|k| rows.iter().any(|r| r.kind == *k));
        if call_row && auth_rows {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit rows missing; have {rows:#?}\ngateway log:\n{}",
            std::fs::read_to_string(&gateway_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let call_row = rows
        .iter()
        .find(|r| r.kind == "request" && r.target.as_deref() == Some("demo__echo"))
        .unwrap();
    assert_eq!(call_row.email.as_deref(), Some("alice@example.com"));
    assert_eq!(call_row.http_status, 200);
    assert!(call_row.groups.contains(&"eng@example.com".to_string()));
    let refused = rows.iter().find(|r| r.kind == "login_refused").unwrap();
    assert_eq!(refused.email.as_deref(), Some("eve@other.com"));
    assert_eq!(refused.detail.as_deref(), Some("domain_not_allowed"));
    assert!(rows
        .iter()
        .any(|r| r.kind == "login_ok" && r.email.as_deref() == Some("alice@example.com")));
    // The sidecar's own tables live in the same database, schema mcp_oauth.
    let has_store: bool = db
        .client()
        .await
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = 'mcp_oauth')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        has_store,
        "the sidecar's store is in the database of the secret"
    );

    // The metrics listener moved by MCP_METRICS_LISTEN.
    let metrics = http()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mcpgw_requests_total"), "{metrics}");

    // The sidecar stops cleanly on SIGTERM (the ECS stop signal).
    let mut sidecar = sidecar;
    let status = sidecar.terminate().await;
    assert!(status.success(), "sidecar exit on SIGTERM: {status}");

    // No secret value reached either log.
    let logs = format!(
        "{}\n{}",
        std::fs::read_to_string(&gateway_log).unwrap_or_default(),
        std::fs::read_to_string(&sidecar_log).unwrap_or_default()
    );
    assert!(
        logs.contains("authorization server ready"),
        "logs were captured"
    );
    let pem_body: String = signing_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for (what, secret) in [
        ("session key", session_key.as_str()),
        ("Google client secret", google_client_secret.as_str()),
        ("signing key", pem_body.as_str()),
        ("access token", access_token.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} reached a log");
    }
    for line in signing_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !logs.contains(line),
            "a line of the signing key reached a log"
        );
    }
}
