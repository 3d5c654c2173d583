//! Harness for the sidecar's integration tests: starts the real `fake-google` and
//! `mcp-oauth-sidecar` binaries on ephemeral ports, each test in its own Postgres
//! schema, and drives the sign-in over HTTP the way a browser would (cookies kept,
//! redirects followed by hand so that every hop can be checked).

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

/// A client without cookies and without following redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// A "browser": cookies kept, redirects followed by hand.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .build()
        .expect("client")
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = format!("v{}", random(32));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

pub struct Registered {
    pub client_id: String,
    pub redirect_uri: String,
    pub body: Value,
}

pub async fn register(sidecar: &Sidecar, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}/register", sidecar.url))
        .header("user-agent", "claude-code/1.0.0")
        .json(&body)
        .send()
        .await
        .expect("register");
    let status = r.status().as_u16();
    (status, r.json().await.expect("register json"))
}

pub async fn register_public(sidecar: &Sidecar) -> Registered {
    let redirect_uri = "http://127.0.0.1:33418/callback".to_string();
    let (status, body) = register(
        sidecar,
        json!({"client_name": "Test CLI", "redirect_uris": [redirect_uri],
               "application_type": "native", "token_endpoint_auth_method": "none",
               "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    Registered {
        client_id: body["client_id"].as_str().expect("client_id").to_string(),
        redirect_uri,
        body,
    }
}

/// Parameters of an authorization request; `None` leaves a parameter out.
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub challenge: Option<String>,
    pub method: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

impl AuthRequest {
    pub fn new(client: &Registered, pkce: &Pkce) -> AuthRequest {
        AuthRequest {
            client_id: client.client_id.clone(),
            redirect_uri: client.redirect_uri.clone(),
            state: Some(format!("st-{}", random(8))),
            challenge: Some(pkce.challenge.clone()),
            method: Some("S256".into()),
            resource: Some(RESOURCE.into()),
            scope: Some("mcp".into()),
        }
    }

    pub fn url(&self, sidecar: &Sidecar) -> String {
        let mut u = url::Url::parse(&format!("{}/authorize", sidecar.url)).expect("url");
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", &self.client_id);
            q.append_pair("redirect_uri", &self.redirect_uri);
            for (k, v) in [
                ("state", &self.state),
                ("code_challenge", &self.challenge),
                ("code_challenge_method", &self.method),
                ("resource", &self.resource),
                ("scope", &self.scope),
            ] {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
        }
        u.into()
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on HTTP {}", r.status()))
        .to_str()
        .expect("location")
        .to_string()
}

pub fn query_of(u: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(u)
        .expect("url")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The value of the first `<input name="{name}" value="…">` in `html`.
pub fn hidden(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in page"))
        + needle.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].replace("&amp;", "&")
}

/// How a sign-in ended.
pub enum Outcome {
    /// Redirected to the client's redirect URI (query parameters).
    Redirect(std::collections::HashMap<String, String>),
    /// A page (status, body) instead.
    Page(u16, String),
}

/// Approves the consent page in `page` and follows the redirect to Google.
async fn approve(b: &reqwest::Client, sidecar: &Sidecar, page: &str) -> reqwest::Response {
    let r = b
        .post(format!("{}/consent", sidecar.url))
        .form(&[
            ("request", hidden(page, "request")),
            ("csrf", hidden(page, "csrf")),
            ("action", "approve".into()),
        ])
        .send()
        .await
        .expect("consent");
    assert_eq!(r.status(), 302, "consent answer");
    r
}

/// Signs `email` in through `b` (a browser), approving consent when asked.
pub async fn sign_in(
    b: &reqwest::Client,
    sidecar: &Sidecar,
    req: &AuthRequest,
    email: &str,
) -> Outcome {
    let r = b.get(req.url(sidecar)).send().await.expect("authorize");
    let to_google = match r.status().as_u16() {
        200 => {
            let page = r.text().await.expect("consent page");
            assert!(
                page.contains("Approve"),
                "expected the consent page: {page}"
            );
            location(&approve(b, sidecar, &page).await)
        }
        302 => {
            let loc = location(&r);
            if loc.starts_with(&req.redirect_uri) {
                return Outcome::Redirect(query_of(&loc));
            }
            loc
        }
        s => return Outcome::Page(s, r.text().await.unwrap_or_default()),
    };
    // Google's account chooser, then pick `email`.
    let r = b.get(&to_google).send().await.expect("google authorize");
    assert_eq!(r.status(), 200, "google chooser");
    let chooser = r.text().await.expect("chooser");
    let mut form: Vec<(String, String)> = Vec::new();
    for k in [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "hd",
        "prompt",
        "access_type",
    ] {
        if chooser.contains(&format!("name=\"{k}\" value=\"")) {
            form.push((k.into(), hidden(&chooser, k)));
        }
    }
    form.push(("email".into(), email.into()));
    let google_url = to_google
        .split('?')
        .next()
        .expect("google base")
        .to_string();
    let r = b
        .post(&google_url)
        .form(&form)
        .send()
        .await
        .expect("google login");
    assert_eq!(r.status(), 302, "google login answer");
    let callback = location(&r);
    let r = b.get(&callback).send().await.expect("callback");
    match r.status().as_u16() {
        302 => Outcome::Redirect(query_of(&location(&r))),
        200 => {
            // Consent asked after sign-in (another person than the remembered one).
            let page = r.text().await.expect("page");
            let r = approve(b, sidecar, &page).await;
            Outcome::Redirect(query_of(&location(&r)))
        }
        s => Outcome::Page(s, r.text().await.unwrap_or_default()),
    }
}

/// Signs in and expects a code; returns it.
/// A sign-in with a fresh PKCE pair and the default request; returns the pair and the
/// authorization code.
pub async fn sign_in_new(
    b: &reqwest::Client,
    sidecar: &Sidecar,
    client: &Registered,
    email: &str,
) -> (Pkce, String) {
    let p = pkce();
    let code = sign_in_code(b, sidecar, &AuthRequest::new(client, &p), email).await;
    (p, code)
}

pub async fn sign_in_code(
    b: &reqwest::Client,
    sidecar: &Sidecar,
    req: &AuthRequest,
    email: &str,
) -> String {
    match sign_in(b, sidecar, req, email).await {
        Outcome::Redirect(q) => {
            assert_eq!(q.get("state"), req.state.as_ref(), "state echoed");
            assert_eq!(q.get("iss"), Some(&sidecar.url), "iss (RFC 9207)");
            q.get("code")
                .unwrap_or_else(|| panic!("no code: {q:?}"))
                .clone()
        }
        Outcome::Page(s, body) => panic!("sign-in ended on a page ({s}): {body}"),
    }
}

pub async fn token(
    sidecar: &Sidecar,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = http()
        .post(format!("{}/token", sidecar.url))
        .form(form)
        .send()
        .await
        .expect("token");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.expect("token json"), headers)
}

pub async fn exchange(
    sidecar: &Sidecar,
    client: &Registered,
    code: &str,
    pkce: &Pkce,
) -> (u16, Value) {
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &client.redirect_uri),
            ("client_id", &client.client_id),
            ("code_verifier", &pkce.verifier),
            ("resource", RESOURCE),
        ],
    )
    .await;
    (s, v)
}

pub async fn refresh(sidecar: &Sidecar, client: &Registered, rt: &str) -> (u16, Value) {
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", &client.client_id),
            ("resource", RESOURCE),
        ],
    )
    .await;
    (s, v)
}

/// Verifies an access token against the sidecar's JWKS; returns its claims.
pub async fn verify(sidecar: &Sidecar, access_token: &str) -> Value {
    let jwks: Value = http()
        .get(format!("{}/jwks", sidecar.url))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(access_token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.expect("kid");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().expect("x"),
        jwk["y"].as_str().expect("y"),
    )
    .expect("key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[RESOURCE]);
    v.set_issuer(&[sidecar.url.as_str()]);
    jsonwebtoken::decode::<Value>(access_token, &key, &v)
        .expect("access token verifies")
        .claims
}
