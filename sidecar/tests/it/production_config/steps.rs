//! The acceptance test's steps: the deployment started as production starts it, then one
//! function per thing it must do.

use super::*;

/// The secrets of the README's "Deploying to AWS", step 3, as stored in Secrets Manager
/// (the database's is Terraform's): kept to check that none reaches a log.
struct Secrets {
    session_key: String,
    google_client_secret: String,
    signing_key: p256::SecretKey,
    signing_pem: String,
}

impl Secrets {
    fn new() -> Secrets {
        let signing_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let signing_pem = signing_key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string();
        Secrets {
            session_key: random(32),
            google_client_secret: format!("GOCSPX-{}", random(12)),
            signing_key,
            signing_pem,
        }
    }

    /// The published JWK's coordinates of the signing key.
    fn public_xy(&self) -> (String, String) {
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &self.signing_key.public_key(),
            false,
        );
        (
            URL_SAFE_NO_PAD.encode(point.x().expect("x")),
            URL_SAFE_NO_PAD.encode(point.y().expect("y")),
        )
    }

    async fn store(&self, moto: &Moto, db: &Database) {
        create_secret(moto, "mcp-gateway/session-key", &self.session_key).await;
        create_secret(moto, "mcp-gateway/signing-key", &self.signing_pem).await;
        let google =
            json!({"client_id": GOOGLE_CLIENT_ID, "client_secret": self.google_client_secret});
        create_secret(moto, "mcp-gateway/google-oauth", &google.to_string()).await;
        let wif = json!({"service_account": SERVICE_ACCOUNT, "audience": WIF_AUDIENCE});
        create_secret(
            moto,
            "mcp-gateway/google-workload-identity",
            &wif.to_string(),
        )
        .await;
        let database = json!({ "url": db.url });
        create_secret(moto, "mcp-gateway/database", &database.to_string()).await;
    }
}

/// One deployment: every process and what the checks need of it. Fields drop in order:
/// the processes before the database they write to.
pub(super) struct Deployment {
    sidecar: Sidecar,
    _gateway: Child,
    _mock: Child,
    _google: FakeGoogle,
    _moto: Moto,
    _alb: Alb,
    db: Database,
    secrets: Secrets,
    /// The load balancer's URL: the public origin, and the issuer.
    public: String,
    /// `{public}/mcp`: the resource tokens are bound to.
    resource: String,
    metrics_port: u16,
    sidecar_log: PathBuf,
    gateway_log: PathBuf,
    _work: TempDir,
}

impl Deployment {
    /// Google, AWS and the database; the secrets stored; the load balancer, then the
    /// sidecar, a mock backend and the gateway behind it, the gateway healthy.
    pub(super) async fn start() -> Deployment {
        let work = TempDir::new("o1");
        let secrets = Secrets::new();
        let google = FakeGoogle::start_with(&format!(
            "{FAKE_GOOGLE}\n[[user]]\nemail = \"{ADMIN_SUBJECT}\"\n\n[[client]]\nclient_id = \"{GOOGLE_CLIENT_ID}\"\n\
             client_secret = \"{}\"\n\n\
             [[service_account]]\nemail = \"{SERVICE_ACCOUNT}\"\n\n[wif]\naudience = \"{WIF_AUDIENCE}\"\n",
            secrets.google_client_secret
        ))
        .await;
        let moto = start_moto().await;
        let db = Database::create().await;
        secrets.store(&moto, &db).await;

        // The load balancer first: its URL is the public origin both processes are given.
        let alb = Alb::start().await;
        check_routes(&alb);
        let public = alb.url.clone();
        let sidecar_log = work.path.join("sidecar.log");
        let (sidecar_child, sidecar_url) =
            start_sidecar(&moto, &google, &public, &work, &sidecar_log).await;
        alb.targets.lock().unwrap().sidecar = Some(addr_of(&sidecar_url));

        // A mock MCP server as the one backend.
        let mut cmd = Command::new(workspace_bin("mcp-mock"));
        cmd.args(["--http", "127.0.0.1:0", "--name", "demo"]);
        let (mock, mock_url) = spawn_logged(cmd, "mcp-mock", &work.path.join("mock.log")).await;

        let metrics_port = free_port();
        let gateway_log = work.path.join("gateway.log");
        let gateway = Gateway {
            moto: &moto,
            work: &work,
            public: &public,
            sidecar_url: &sidecar_url,
            mock_url: &mock_url,
            metrics_port,
            log: &gateway_log,
        };
        let (gateway, gateway_url) = gateway.start().await;
        alb.targets.lock().unwrap().gateway = Some(addr_of(&gateway_url));
        wait_healthy(&gateway_url, &gateway_log).await;

        Deployment {
            sidecar: Sidecar::attach(sidecar_child, public.clone(), "mcp_oauth".into()),
            _gateway: gateway,
            _mock: mock,
            _google: google,
            _moto: moto,
            _alb: alb,
            db,
            secrets,
            resource: format!("{public}/mcp"),
            public,
            metrics_port,
            sidecar_log,
            gateway_log,
            _work: work,
        }
    }
}

/// The sign-in's paths go to the sidecar, the MCP ones to the gateway.
fn check_routes(alb: &Alb) {
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
}

/// The sidecar: CONFIG_ENV=production, ops/config/sidecar.production.toml as it is.
async fn start_sidecar(
    moto: &Moto,
    google: &FakeGoogle,
    public: &str,
    work: &TempDir,
    log: &Path,
) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-oauth-sidecar"));
    aws_env(&mut cmd, moto);
    cmd.env("MCP_PUBLIC_URL", public)
        .env("MCP_SIDECAR_LISTEN", "127.0.0.1:0")
        .env("MCP_GOOGLE_ORIGIN", &google.url)
        .env("MCP_SIDECAR_AUDIT_DIR", work.path.join("sidecar"));
    spawn_logged(cmd, "mcp-oauth-sidecar", log).await
}

/// The gateway: CONFIG_ENV=production, the real production.toml plus the mock backend.
struct Gateway<'a> {
    moto: &'a Moto,
    work: &'a TempDir,
    public: &'a str,
    sidecar_url: &'a str,
    mock_url: &'a str,
    metrics_port: u16,
    log: &'a Path,
}

impl Gateway<'_> {
    async fn start(self) -> (Child, String) {
        let real = std::fs::read_to_string(repo_root().join("ops/config/production.toml"))
            .expect("ops/config/production.toml");
        assert!(
            real.contains("/var/lib/mcp-gateway/"),
            "the data directory moved: update this test"
        );
        let data_dir = self.work.path.join("var-lib-mcp-gateway");
        let config = format!(
            "{}\n\n# Added by the acceptance test.\n[[backend]]\nname = \"demo\"\nurl = \"{}\"\n\
             timeout_ms = 10000\nallow_groups = [\"eng@example.com\"]\n\
             forward_identity = {{ email = \"X-Forwarded-Email\" }}\n",
            real.replace("/var/lib/mcp-gateway", &data_dir.display().to_string()),
            self.mock_url
        );
        let config_path = self.work.path.join("production.toml");
        std::fs::write(&config_path, config).expect("write the gateway config");
        let mut cmd = Command::new(workspace_bin("mcp-gateway"));
        aws_env(&mut cmd, self.moto);
        cmd.env("MCP_GATEWAY_CONFIG", &config_path)
            .env("MCP_PUBLIC_URL", self.public)
            .env("MCP_GATEWAY_LISTEN", "127.0.0.1:0")
            .env(
                "MCP_METRICS_LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .env("MCP_SIDECAR_URL", self.sidecar_url);
        spawn_logged(cmd, "mcp-gateway", self.log).await
    }
}

/// The gateway announces its address before Pingora has bound it: waits for /healthz.
async fn wait_healthy(gateway_url: &str, log: &Path) {
    let healthz = gateway_url.replace("/mcp", "/healthz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !matches!(http().get(&healthz).send().await, Ok(r) if r.status() == 200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not become healthy; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_json(url: String) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

impl Deployment {
    /// Discovery, as an MCP client does it: 401 → resource metadata → AS metadata; and
    /// the published signing key is the one from the secret.
    pub(super) async fn check_discovery(&self) {
        let (public, resource) = (&self.public, &self.resource);
        let r = http()
            .post(resource)
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
        let prm = get_json(format!("{public}/.well-known/oauth-protected-resource/mcp")).await;
        assert_eq!(prm["resource"], resource.as_str());
        assert_eq!(prm["authorization_servers"], json!([public]));
        let asm = get_json(format!("{public}/.well-known/oauth-authorization-server")).await;
        assert_eq!(asm["issuer"], public.as_str());
        assert_eq!(asm["jwks_uri"], format!("{public}/jwks"));

        let jwks = get_json(format!("{public}/jwks")).await;
        let (x, y) = self.secrets.public_xy();
        let keys = jwks["keys"].as_array().expect("keys");
        assert!(
            keys.iter()
                .any(|k| k["x"] == x.as_str() && k["y"] == y.as_str()),
            "the published key is the mcp-gateway/signing-key secret: {jwks}"
        );
    }

    /// alice signs in through the load balancer: registration, consent, Google, groups
    /// by Workload Identity Federation, callback, token. Returns her access token,
    /// checked against the secret's key; then eve, of another company, is refused.
    pub(super) async fn sign_in(&self) -> String {
        let client = register_public(&self.sidecar).await;
        let p = pkce();
        let mut req = AuthRequest::new(&client, &p);
        req.resource = Some(self.resource.clone());
        let code = sign_in_code(&browser(), &self.sidecar, &req, "alice@example.com").await;
        let (status, tokens, _) = token(
            &self.sidecar,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("client_id", &client.client_id),
                ("code_verifier", &p.verifier),
                ("resource", &self.resource),
            ],
        )
        .await;
        assert_eq!(status, 200, "{tokens}");
        let access_token = tokens["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        let (x, y) = self.secrets.public_xy();
        let key = jsonwebtoken::DecodingKey::from_ec_components(&x, &y).expect("key");
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&[self.resource.as_str()]);
        v.set_issuer(&[self.public.as_str()]);
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

        let p = pkce();
        let mut req = AuthRequest::new(&client, &p);
        req.resource = Some(self.resource.clone());
        match sign_in(&browser(), &self.sidecar, &req, "eve@other.com").await {
            Outcome::Page(403, _) => {}
            Outcome::Page(s, page) => panic!("eve: HTTP {s}: {page}"),
            Outcome::Redirect(q) => panic!("eve was not refused: {q:?}"),
        }
        access_token
    }

    /// The tool calls through the gateway with alice's token: her identity forwarded,
    /// her token not.
    pub(super) async fn call_tools(&self, access_token: &str) {
        let mut mcp = Mcp {
            url: self.resource.clone(),
            token: access_token.to_string(),
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
        let args = json!({"name": "demo__echo", "arguments": {"text": "hello from production"}});
        let call = mcp.request(2, "tools/call", args).await;
        assert_eq!(
            call["result"]["content"][0]["text"], "hello from production",
            "{call}"
        );
        let args = json!({"name": "demo__whoami", "arguments": {}});
        let who = mcp.request(3, "tools/call", args).await;
        let who: Value =
            serde_json::from_str(who["result"]["content"][0]["text"].as_str().expect("text"))
                .expect("whoami json");
        assert_eq!(who["headers"]["x-forwarded-email"], "alice@example.com");
        assert!(
            who["headers"].get("authorization").is_none(),
            "the client's token never goes upstream"
        );
    }

    /// The audit log: the gateway's request rows and the sidecar's auth events, in the
    /// database of the `mcp-gateway/database` secret, beside the sidecar's own store.
    pub(super) async fn check_audit(&self) {
        let rows = self.audit_rows_of_the_test().await;
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
        let has_store: bool = self
            .db
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
    }

    /// The rows once the tool call's and the three sign-in events' are all there.
    async fn audit_rows_of_the_test(&self) -> Vec<AuditRow> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = audit_rows(&self.db).await;
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
                return rows;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "audit rows missing; have {rows:#?}\ngateway log:\n{}",
                std::fs::read_to_string(&self.gateway_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The metrics listener moved by MCP_METRICS_LISTEN.
    pub(super) async fn check_metrics(&self) {
        let metrics = http()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("mcpgw_requests_total"), "{metrics}");
    }

    /// The sidecar stops cleanly on SIGTERM (the ECS stop signal); then no secret value,
    /// nor alice's token, is in either log.
    pub(super) async fn stop_and_check_logs(mut self, access_token: &str) {
        let status = self.sidecar.terminate().await;
        assert!(status.success(), "sidecar exit on SIGTERM: {status}");

        let logs = format!(
            "{}\n{}",
            std::fs::read_to_string(&self.gateway_log).unwrap_or_default(),
            std::fs::read_to_string(&self.sidecar_log).unwrap_or_default()
        );
        assert!(
            logs.contains("authorization server ready"),
            "logs were captured"
        );
        let s = &self.secrets;
        let pem_body: String = s
            .signing_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for (what, secret) in [
            ("session key", s.session_key.as_str()),
            ("Google client secret", s.google_client_secret.as_str()),
            ("signing key", pem_body.as_str()),
            ("access token", access_token),
        ] {
            assert!(!logs.contains(secret), "the {what} reached a log");
        }
        for line in s.signing_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !logs.contains(line),
                "a line of the signing key reached a log"
            );
        }
    }
}
