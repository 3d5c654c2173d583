//! Security review follow-ups of the sign-in, black-box over HTTP against the real
//! binaries: google-direct registration never discloses Google's client secret (the
//! sidecar's `/token` adds it), offboarding is seen at refresh (Directory `users.get`),
//! consent is bound to resource and scopes, redirect URIs are re-checked against the
//! current allowlist, `__Host-` cookies on https, and Google's discovery issuer must be
//! the configured one.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use crate::common::*;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// 1. google-direct: the Google client secret is never disclosed.
mod google_direct;

/// What a sidecar wrote to stderr so far.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<String>>);

impl Logs {
    fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until the logs contain `needle`; returns them.
    async fn wait_for(&self, needle: &str) -> String {
        within(&format!("{needle:?} in the sidecar's logs"), async {
            loop {
                let t = self.text();
                if t.contains(needle) {
                    return t;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// Spawns the sidecar binary on `config` with stderr collected and debug logs on.
fn spawn_raw(config: &std::path::Path) -> (Child, Logs) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-oauth-sidecar"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "debug,tokio_postgres=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sidecar");
    let logs = Logs::default();
    let mut err = child.stderr.take().expect("stderr");
    let sink = logs.0.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    (child, logs)
}

/// Stops `sidecar`, edits its configuration with `edit`, and starts the binary again
/// on it (new port, issuer `http://ADDR` unless the edit sets one), logs collected.
async fn respawn(
    mut sidecar: Sidecar,
    edit: impl Fn(String) -> String,
) -> (Sidecar, Logs, TempDir) {
    sidecar.child.kill().await.expect("kill");
    let _ = sidecar.child.wait().await;
    let text = std::fs::read_to_string(&sidecar.config_path).expect("config");
    let dir = TempDir::new("security-config");
    let path = dir.path.join("sidecar.toml");
    std::fs::write(&path, edit(text)).expect("write config");
    let (mut child, logs) = spawn_raw(&path);
    let url = listening_url(&mut child, DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no listening line; logs: {}", logs.text()));
    (
        Sidecar::attach(child, url, sidecar.schema.clone()),
        logs,
        dir,
    )
}

/// Adds `keys` to the `[server]` table of a harness configuration.
fn server_keys(text: String, keys: &str) -> String {
    text.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{keys}"),
        1,
    )
}

fn set_cookie_headers(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// A web client's callback (Claude's), as allowlisted in the tests here.
const CLAUDE_CALLBACK: &str = "https://claude.ai/api/mcp/auth_callback";

// ---------------------------------------------------------------------------------
// 2. Offboarding: a refresh re-checks the user with Directory `users.get`.
// ---------------------------------------------------------------------------------

async fn set_status(google: &FakeGoogle, email: &str, status: Value) {
    let r = http()
        .post(format!("{}/admin/users/{email}/status", google.url))
        .json(&status)
        .send()
        .await
        .expect("set status");
    assert_eq!(r.status(), 200);
}

async fn delete_user(google: &FakeGoogle, email: &str) {
    let r = http()
        .delete(format!("{}/admin/users/{email}", google.url))
        .send()
        .await
        .expect("delete user");
    assert_eq!(r.status(), 200);
}

/// Signs `email` in and returns the first refresh token.
async fn signed_in(sidecar: &Sidecar, client: &Registered, email: &str) -> String {
    let b = browser();
    let (p, code) = sign_in_new(&b, sidecar, client, email).await;
    let (s, v) = exchange(sidecar, client, &code, &p).await;
    assert_eq!(s, 200, "{v}");
    v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string()
}

#[tokio::test]
async fn refresh_sees_suspended_archived_and_deleted_users() {
    let google = FakeGoogle::start().await;
    for email in ["carol@example.com", "dave@example.com", "erin@example.com"] {
        google
            .add_user(json!({"email": email, "groups": ["eng@example.com"]}))
            .await;
    }
    let sidecar = Sidecar::start(&google, &SidecarOptions::new("offboard")).await;
    let client = register_public(&sidecar).await;

    // Suspended: refused, and the family is revoked (refused again once reinstated).
    let rt = signed_in(&sidecar, &client, "carol@example.com").await;
    let (s, v) = refresh(&sidecar, &client, &rt).await;
    assert_eq!(s, 200, "an active user refreshes: {v}");
    let newest = v["refresh_token"].as_str().expect("rt").to_string();
    set_status(&google, "carol@example.com", json!({"suspended": true})).await;
    let (s, v) = refresh(&sidecar, &client, &newest).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "a suspended user's refresh: {v}"
    );
    assert!(
        v["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("suspended"),
        "{v}"
    );
    let gets = google.stats().await["directory.users.get"]
        .as_u64()
        .unwrap_or(0);
    assert!(gets >= 2, "users.get asked at each refresh");
    set_status(&google, "carol@example.com", json!({"suspended": false})).await;
    let (s, v) = refresh(&sidecar, &client, &newest).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family stays revoked: {v}"
    );

    // Archived: refused.
    let rt = signed_in(&sidecar, &client, "dave@example.com").await;
    set_status(&google, "dave@example.com", json!({"archived": true})).await;
    let (s, v) = refresh(&sidecar, &client, &rt).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );

    // Deleted (users.get answers 404): refused, family revoked.
    let rt = signed_in(&sidecar, &client, "erin@example.com").await;
    delete_user(&google, "erin@example.com").await;
    let (s, v) = refresh(&sidecar, &client, &rt).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    google
        .add_user(json!({"email": "erin@example.com", "groups": ["eng@example.com"]}))
        .await;
    let (s, v) = refresh(&sidecar, &client, &rt).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );

    // Someone active still refreshes.
    let rt = signed_in(&sidecar, &client, "alice@example.com").await;
    let (s, v) = refresh(&sidecar, &client, &rt).await;
    assert_eq!(s, 200, "{v}");
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn without_directory_credentials_a_start_up_warning_names_the_gap() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("nocreds");
    opts.credentials = "[google.credentials]\nsource = \"none\"\n".into();
    let first = Sidecar::start(&google, &opts).await;
    let (sidecar, logs, _dir) = respawn(first, |t| t).await;
    let log = logs.wait_for("authorization server ready").await;
    let warning = log
        .lines()
        .find(|l| l.contains("offboarding"))
        .unwrap_or_else(|| panic!("no offboarding warning at start-up:\n{log}"));
    assert!(
        warning.contains("WARN")
            && warning.contains("google.credentials")
            && warning.contains("tokens.access_token_ttl_s"),
        "{warning}"
    );
    sidecar.drop_schema().await;
}

// ---------------------------------------------------------------------------------
// 3. Consent bound to the resource and the scopes.
// ---------------------------------------------------------------------------------

const OTHER_RESOURCE: &str = "http://127.0.0.1:8081/mcp";

/// Where `/authorize` sends this browser: the consent page (200) or Google (302).
async fn authorize_answer(b: &reqwest::Client, sidecar: &Sidecar, req: &AuthRequest) -> u16 {
    let r = b.get(req.url(sidecar)).send().await.expect("authorize");
    let s = r.status().as_u16();
    if s == 302 {
        assert!(
            !location(&r).starts_with(&req.redirect_uri),
            "no error to the client"
        );
    }
    s
}

#[tokio::test]
async fn consent_is_asked_again_for_another_resource_or_a_wider_scope() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("consentscope");
    opts.extra = format!("[[resource]]\nurl = \"{OTHER_RESOURCE}\"\nname = \"Other\"\n");
    let sidecar = Sidecar::start(&google, &opts).await;
    let client = register_public(&sidecar).await;
    let b = browser();
    let p = pkce();
    let mut req = AuthRequest::new(&client, &p);
    req.scope = Some("mcp".into());
    sign_in_code(&b, &sidecar, &req, "alice@example.com").await;

    req.state = Some(format!("st-{}", random(8)));
    assert_eq!(
        authorize_answer(&b, &sidecar, &req).await,
        302,
        "same resource and scope: no consent page"
    );
    req.scope = Some("mcp offline_access".into());
    assert_eq!(
        authorize_answer(&b, &sidecar, &req).await,
        200,
        "a wider scope shows the consent page"
    );
    // Approving the wider scope; then the narrower one is covered.
    sign_in_code(&b, &sidecar, &req, "alice@example.com").await;
    req.scope = Some("mcp".into());
    assert_eq!(
        authorize_answer(&b, &sidecar, &req).await,
        302,
        "a narrower scope: no consent page"
    );
    req.resource = Some(OTHER_RESOURCE.into());
    assert_eq!(
        authorize_answer(&b, &sidecar, &req).await,
        200,
        "another resource shows the consent page"
    );
    sidecar.drop_schema().await;
}

// ---------------------------------------------------------------------------------
// 4a. Redirect URIs are checked against the current allowlist at /authorize.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_redirect_uri_removed_from_the_allowlist_is_refused_at_authorize() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("allowlist");
    let mut sidecar = Sidecar::start(&google, &opts).await;
    let (s, body) = register(
        &sidecar,
        json!({"client_name": "Web", "redirect_uris": [CLAUDE_CALLBACK],
               "application_type": "web", "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let client = Registered {
        client_id: body["client_id"].as_str().expect("client_id").to_string(),
        redirect_uri: CLAUDE_CALLBACK.into(),
        body,
    };
    let text = std::fs::read_to_string(&sidecar.config_path).expect("config");
    let removed = text.replace(
        &format!("allowed_redirect_uris = [\"{CLAUDE_CALLBACK}\"]"),
        "allowed_redirect_uris = []",
    );
    assert_ne!(text, removed, "the allowlist was edited");
    std::fs::write(&sidecar.config_path, removed).expect("write config");
    sidecar.restart(&opts).await;

    let (_, expected) = register(
        &sidecar,
        json!({"redirect_uris": [CLAUDE_CALLBACK], "application_type": "web"}),
    )
    .await;
    assert_eq!(expected["error"], "invalid_redirect_uri", "{expected}");
    let p = pkce();
    let r = browser()
        .get(AuthRequest::new(&client, &p).url(&sidecar))
        .send()
        .await
        .expect("authorize");
    assert_eq!(r.status(), 400, "refused at /authorize");
    assert!(r.headers().get("location").is_none(), "never redirected");
    let page = r.text().await.expect("page");
    assert!(page.contains("invalid_redirect_uri"), "{page}");
    let description = expected["error_description"].as_str().expect("description");
    let escaped = description.replace('"', "&quot;");
    assert!(
        page.contains(description) || page.contains(&escaped),
        "same error as the registration ({description}): {page}"
    );
    sidecar.drop_schema().await;
}

// ---------------------------------------------------------------------------------
// 4b. `__Host-` cookies when the issuer is https.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn cookies_are_host_prefixed_behind_an_https_issuer() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("hostcookie");
    let first = Sidecar::start(&google, &opts).await;
    let (sidecar, _logs, _dir) = respawn(first, |t| {
        server_keys(t, "issuer = \"https://auth.example.test\"")
    })
    .await;
    let client = register_public(&sidecar).await;
    let p = pkce();
    let r = http()
        .get(AuthRequest::new(&client, &p).url(&sidecar))
        .send()
        .await
        .expect("authorize");
    assert_eq!(r.status(), 200, "consent page");
    let cookies = set_cookie_headers(&r);
    let browser_cookie = cookies
        .iter()
        .find(|c| c.contains("mcp_oauth_browser="))
        .unwrap_or_else(|| panic!("no browser cookie: {cookies:?}"));
    assert!(
        browser_cookie.starts_with("__Host-mcp_oauth_browser="),
        "{browser_cookie}"
    );
    let attrs: Vec<&str> = browser_cookie.split(';').map(str::trim).collect();
    assert!(
        attrs.contains(&"Secure") && attrs.contains(&"Path=/"),
        "{browser_cookie}"
    );
    assert!(
        !attrs
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "{browser_cookie}"
    );
    // The prefixed cookie is the one read back: the approval goes on to Google.
    let pair = attrs[0].to_string();
    let page = r.text().await.expect("page");
    let r = http()
        .post(format!("{}/consent", sidecar.url))
        .header("cookie", &pair)
        .form(&[
            ("request", hidden(&page, "request")),
            ("csrf", hidden(&page, "csrf")),
            ("action", "approve".into()),
        ])
        .send()
        .await
        .expect("consent");
    assert_eq!(r.status(), 302, "approved with the __Host- cookie");
    assert!(location(&r).starts_with(&google.url));
    // The unprefixed name is not accepted on https.
    let plain = pair.replacen("__Host-", "", 1);
    let r = http()
        .get(AuthRequest::new(&client, &p).url(&sidecar))
        .header("cookie", &plain)
        .send()
        .await
        .expect("authorize");
    let again = set_cookie_headers(&r);
    assert!(
        again
            .iter()
            .any(|c| c.starts_with("__Host-mcp_oauth_browser=")),
        "a plain-named cookie is not taken for the browser cookie: {again:?}"
    );
    sidecar.drop_schema().await;

    // On http (local runs) the names stay plain.
    let local = Sidecar::start(&google, &SidecarOptions::new("plaincookie")).await;
    let client = register_public(&local).await;
    let r = http()
        .get(AuthRequest::new(&client, &p).url(&local))
        .send()
        .await
        .expect("authorize");
    let cookies = set_cookie_headers(&r);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("mcp_oauth_browser=") && !c.contains("Secure")),
        "{cookies:?}"
    );
    local.drop_schema().await;
}

// ---------------------------------------------------------------------------------
// 4c. Google's discovery issuer must be the configured one.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused_at_start_up() {
    let google = FakeGoogle::start().await;
    let impostor_issuer = "https://accounts.impostor.example";
    let impostor = FakeGoogle::start_with(&format!(
        "issuer = \"{impostor_issuer}\"\n{FAKE_GOOGLE_CONFIG}"
    ))
    .await;
    let opts = SidecarOptions::new("discoiss");
    let mut first = Sidecar::start(&google, &opts).await;
    first.child.kill().await.expect("kill");
    let _ = first.child.wait().await;
    let text = std::fs::read_to_string(&first.config_path).expect("config");
    let dir = TempDir::new("discovery");
    let path = dir.path.join("sidecar.toml");
    std::fs::write(&path, text.replace(&google.url, &impostor.url)).expect("write");
    let (mut child, logs) = spawn_raw(&path);
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the sidecar kept running with a discovery issuer that is not google.issuer; logs:\n{}",
                logs.text()
            )
        })
        .expect("wait");
    assert!(!status.success(), "{status}");
    let log = logs.wait_for("google.issuer").await;
    assert!(
        log.contains(impostor_issuer) && log.contains(&impostor.url),
        "both issuers named:\n{log}"
    );
    drop_schema(&opts.schema).await;
}
