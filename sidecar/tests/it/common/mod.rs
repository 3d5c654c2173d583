//! Harness for the sidecar's integration tests: starts the real `fake-google` and
//! `mcp-oauth-sidecar` binaries on ephemeral ports, each test in its own Postgres
//! schema, and drives the sign-in over HTTP the way a browser would (cookies kept,
//! redirects followed by hand so that every hop can be checked).
//!
//! Here: the processes (fake Google, the sidecar), schemas and temporary directories;
//! in `oauth`: the client side of the sign-in (registration, PKCE, the browser's hops,
//! the token endpoint).

mod oauth;
pub use oauth::*;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const DEADLINE: Duration = Duration::from_secs(20);
pub const DB_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const SA_EMAIL: &str = "directory-reader@test-project.iam.gserviceaccount.com";
pub const GOOGLE_CLIENT: &str = "sidecar-test";
pub const GOOGLE_SECRET: &str = "google-secret";

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fake-google binary, next to this test's profile directory.
fn fake_google_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = profile.join("fake-google");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p fake-google` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// Reads `child`'s piped stdout until its `listening on URL` line (other lines may come
/// first: the gateway announces its metrics listener), within `limit`, then keeps
/// draining stdout in the background. `None` when stdout closed first or time ran out.
/// The one place the tests read a process's address; every spawn goes through it.
pub async fn listening_url(child: &mut Child, limit: Duration) -> Option<String> {
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let url = tokio::time::timeout(limit, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.trim().strip_prefix("listening on ") {
                return Some(url.to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    url
}

/// Spawns `cmd`, reads its `listening on http://ADDR` line, returns (child, base URL).
pub async fn spawn_listening(mut cmd: Command, what: &str) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let url = listening_url(&mut child, DEADLINE)
        .await
        .unwrap_or_else(|| panic!("{what} did not print its listening line within {DEADLINE:?}"));
    (child, url)
}

pub const FAKE_GOOGLE_CONFIG: &str = r#"
directory_page_size = 2

[[user]]
email = "alice@example.com"
name = "Alice"
groups = ["eng@example.com", "all@example.com", "mcp-users@example.com"]

[[user]]
email = "bob@example.com"
name = "Bob"

[[user]]
email = "eve@other.com"
name = "Eve (other company)"

[[user]]
email = "unverified@example.com"
email_verified = false

[[user]]
email = "someone@gmail.com"
hd = ""

[[client]]
client_id = "sidecar-test"
client_secret = "google-secret"

[[service_account]]
email = "directory-reader@test-project.iam.gserviceaccount.com"

[wif]
audience = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/aws/providers/aws"
"#;

pub struct FakeGoogle {
    /// Held for `kill_on_drop`: the process lives as long as this value.
    _child: Child,
    pub url: String,
    _dir: TempDir,
}

impl FakeGoogle {
    pub async fn start() -> FakeGoogle {
        Self::start_with(FAKE_GOOGLE_CONFIG).await
    }

    pub async fn start_with(config: &str) -> FakeGoogle {
        let dir = TempDir::new("fake-google");
        let path = dir.path.join("fake-google.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(fake_google_bin());
        cmd.arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"]);
        let (child, url) = spawn_listening(cmd, "fake-google").await;
        FakeGoogle {
            _child: child,
            url,
            _dir: dir,
        }
    }

    pub async fn set_groups(&self, email: &str, groups: &[&str]) {
        let r = http()
            .post(format!("{}/admin/users/{email}/groups", self.url))
            .json(&json!({ "groups": groups }))
            .send()
            .await
            .expect("set groups");
        assert_eq!(r.status(), 200);
    }

    pub async fn add_user(&self, user: Value) {
        let r = http()
            .post(format!("{}/admin/users", self.url))
            .json(&user)
            .send()
            .await
            .expect("add user");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }

    pub async fn stats(&self) -> Value {
        http()
            .get(format!("{}/admin/stats", self.url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sidecar-test-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            random(4)
        ));
        std::fs::create_dir_all(&path).expect("mkdir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn random(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh schema name for one test.
pub fn schema(tag: &str) -> String {
    format!("t_{tag}_{}", random(6))
}

pub struct SidecarOptions {
    pub schema: String,
    /// Lines added to `[server]`.
    pub server: String,
    pub extra: String,
    pub credentials: String,
    pub env: Vec<(String, String)>,
    /// `[clients] allowed_redirect_uris`.
    pub allowed_redirect_uris: Vec<String>,
}

impl SidecarOptions {
    pub fn new(tag: &str) -> SidecarOptions {
        SidecarOptions {
            schema: schema(tag),
            server: String::new(),
            extra: String::new(),
            credentials: format!(
                "[google.credentials]\nsource = \"service_account_key\"\nkey_file = \"{}\"\n",
                fixtures().join("service-account.json").display()
            ),
            env: Vec::new(),
            allowed_redirect_uris: vec!["https://claude.ai/api/mcp/auth_callback".into()],
        }
    }
}

/// The harness's sidecar configuration for `google` and `opts`.
fn harness_config(google: &FakeGoogle, opts: &SidecarOptions) -> String {
    let g = &google.url;
    // `credentials` holds [google.credentials]; it must follow [google]'s keys.
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[store]
url = "{DB_URL}"
schema = "{schema}"
pool_size = 8

[[resource]]
url = "{RESOURCE}"
name = "Test Gateway"

[clients]
allowed_redirect_uris = {allowed}
registration_per_minute = 1000
allow_private_cimd = true
allow_http_cimd = true

{extra}

[google]
issuer = "{g}"
client_id = "{GOOGLE_CLIENT}"
client_secret = "{GOOGLE_SECRET}"
allowed_domains = ["example.com"]
directory_api_base = "{g}"
admin_subject = "alice@example.com"

{credentials}
token_uri = "{g}/token"

# Many sign-ins from 127.0.0.1 (security_limits tests the default).
[rate_limit]
lookups_burst = 100000
"#,
        schema = opts.schema,
        server = opts.server,
        extra = opts.extra,
        credentials = opts.credentials,
        allowed = serde_json::to_string(&opts.allowed_redirect_uris).expect("allowlist"),
    )
}

pub struct Sidecar {
    pub child: Child,
    pub url: String,
    pub schema: String,
    pub config_path: PathBuf,
    _dir: TempDir,
}

pub const RESOURCE: &str = "http://127.0.0.1:8080/mcp";

impl Sidecar {
    pub async fn start(google: &FakeGoogle, opts: &SidecarOptions) -> Sidecar {
        Self::start_with(google, opts, |_| {}).await
    }

    /// As [`Sidecar::start`], the harness's configuration text first changed by `edit`
    /// (a test's own limits or switches).
    pub async fn start_with(
        google: &FakeGoogle,
        opts: &SidecarOptions,
        edit: impl FnOnce(&mut String),
    ) -> Sidecar {
        let dir = TempDir::new("sidecar");
        let mut config = harness_config(google, opts);
        edit(&mut config);
        let path = dir.path.join("sidecar.toml");
        std::fs::write(&path, config).expect("write config");
        Self::start_config(path, opts, dir).await
    }

    async fn start_config(path: PathBuf, opts: &SidecarOptions, dir: TempDir) -> Sidecar {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-oauth-sidecar"));
        cmd.arg("--config").arg(&path);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let (child, url) = spawn_listening(cmd, "mcp-oauth-sidecar").await;
        Sidecar {
            child,
            url,
            schema: opts.schema.clone(),
            config_path: path,
            _dir: dir,
        }
    }

    /// Stops this process and starts another on the same configuration (and schema),
    /// on a new port: returns the new base URL.
    pub async fn restart(&mut self, opts: &SidecarOptions) {
        self.child.kill().await.expect("kill");
        let _ = self.child.wait().await;
        let text = std::fs::read_to_string(&self.config_path).expect("config");
        // Keep the issuer: the port changes, so pin it to the old URL's port.
        let port = self.url.rsplit(':').next().expect("port").to_string();
        let text = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        std::fs::write(&self.config_path, text).expect("rewrite config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-oauth-sidecar"));
        cmd.arg("--config").arg(&self.config_path);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let (child, url) = spawn_listening(cmd, "mcp-oauth-sidecar (restarted)").await;
        self.child = child;
        self.url = url;
    }

    /// A sidecar started elsewhere (another config, behind a front proxy): `url` is the
    /// base URL clients use, which is also its issuer.
    pub fn attach(child: Child, url: String, schema: String) -> Sidecar {
        Sidecar {
            child,
            url,
            schema,
            config_path: PathBuf::new(),
            _dir: TempDir::new("attached"),
        }
    }

    /// Sends SIGTERM and waits for the exit (graceful stop); returns its status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child).await
    }

    /// Drops this test's schema.
    pub async fn drop_schema(&self) {
        drop_schema(&self.schema).await;
    }
}

/// Sends SIGTERM to a child this test started and waits for it to exit: at most
/// `stop_delay_s` + `drain_s` (up to 25 s in the production configuration, whose idle
/// keep-alive connections stay open to the end of the window) and a margin.
pub async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    send_term(child);
    match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => panic!("the process did not stop within 60 s of SIGTERM"),
    }
}

/// Sends SIGTERM to a child this test started, without waiting.
pub fn send_term(child: &Child) {
    let pid = child.id().expect("the process is still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success(), "kill -TERM {pid}");
}

pub async fn drop_schema(schema: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(DB_URL, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}
