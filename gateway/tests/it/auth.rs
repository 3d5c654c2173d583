//! The gateway as an OAuth resource server: bearer checks, attacks, policy, metadata.
//! A small issuer (metadata + JWKS over real HTTP) runs in the test process.

use std::sync::atomic::Ordering;

use crate::common::issuer::*;
use crate::common::*;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

struct Env {
    issuer: Issuer,
    gw: Proc,
    audience: String,
    _mocks: Vec<Proc>,
}

impl Env {
    fn claims(&self, email: &str, groups: &[&str]) -> Value {
        json!({"iss": self.issuer.url, "sub": format!("sub-{email}"), "aud": self.audience,
               "exp": now() + 600, "iat": now(), "email": email, "groups": groups,
               "client_id": "test-client", "scope": "mcp"})
    }
    fn token(&self, email: &str, groups: &[&str]) -> String {
        mint_with(self.claims(email, groups), KEY1, "k1")
    }
    fn client(&self, token: &str) -> AuthClient {
        AuthClient {
            inner: Client::new(&self.gw.url),
            token: token.to_string(),
        }
    }
    fn upstream_requests(&self) -> u64 {
        let v = readyz_detail(&self.gw);
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["requests"].as_u64().unwrap())
            .sum()
    }
}

/// A client that sends its bearer token on every request.
struct AuthClient {
    inner: Client,
    token: String,
}

impl AuthClient {
    fn post(&self, msg: &Value) -> Answer {
        let auth = format!("Bearer {}", self.token);
        self.inner
            .post_raw(msg.to_string(), &[("authorization", &auth)])
    }
    fn initialize(&mut self) {
        let a = self.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}));
        assert_eq!(a.status, 200, "{}", a.body);
        self.inner.session = a
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    fn request(&self, method: &str, params: Value) -> Value {
        let a = self.post(&json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}));
        assert_eq!(a.status, 200, "{method}: {}", a.body);
        a.response(&json!(1))
    }
    fn tools(&self) -> Vec<String> {
        self.request("tools/list", json!({}))["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }
}

fn env() -> Env {
    let issuer = start_issuer();
    let grafana = spawn_mock("grafana", &["--no-dynamic"]);
    let open = spawn_mock("open", &["--no-dynamic"]);
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 3600\n[auth]\nmode = \"oauth\"\nissuer = \"{}\"\n\n[[backend]]\nname = \"grafana\"\nurl = \"{}\"\nallow_groups = [\"sre\"]\ntools = {{ crash = {{ allow_users = [\"nobody@example.com\"] }} }}\n\n[[backend]]\nname = \"open\"\nurl = \"{}\"\nforward_identity = {{ email = \"X-Forwarded-Email\", groups = \"X-Forwarded-Groups\" }}\n",
        issuer.url, grafana.url, open.url
    );
    let gw = spawn_gateway(&cfg);
    let audience = gw.url.clone();
    Env {
        issuer,
        gw,
        audience,
        _mocks: vec![grafana, open],
    }
}

#[test]
fn without_a_token_the_gateway_explains_how_to_sign_in() {
    let e = env();
    let cl = Client::new(&e.gw.url);
    let a = cl.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}));
    assert_eq!(a.status, 401);
    let wa = a
        .headers
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let base = e.gw.url.trim_end_matches("/mcp");
    assert!(
        wa.starts_with(&format!(
            "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\""
        )),
        "{wa}"
    );
    assert!(wa.contains("scope=\"mcp\""), "{wa}");
    assert!(
        !wa.contains("error="),
        "no error code without credentials: {wa}"
    );
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let (s, body) = http_get(&format!("{base}{path}")).unwrap();
        assert_eq!(s, 200, "{path}");
        let doc: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["resource"], e.gw.url);
        assert_eq!(doc["authorization_servers"][0], e.issuer.url);
    }
}

#[test]
fn group_policy_decides_what_a_person_sees_and_calls() {
    let e = env();
    let mut sre = e.client(&e.token("ana@example.com", &["sre"]));
    sre.initialize();
    let tools = sre.tools();
    assert!(tools.contains(&"grafana__echo".to_string()), "{tools:?}");
    assert!(
        !tools.contains(&"grafana__crash".to_string()),
        "tool policy must hide crash: {tools:?}"
    );
    let r = sre.request(
        "tools/call",
        json!({"name":"grafana__echo","arguments":{"text":"dash"}}),
    );
    assert_eq!(text_of(&r), "dash");
    let r = sre.request(
        "tools/call",
        json!({"name":"grafana__crash","arguments":{}}),
    );
    assert_eq!(r["error"]["code"], -32003, "{r}");
    // Identity goes upstream in configured headers; the token never does.
    let r = sre.request("tools/call", json!({"name":"open__whoami","arguments":{}}));
    let who: Value = serde_json::from_str(&text_of(&r)).unwrap();
    assert_eq!(
        who["headers"]["x-forwarded-email"], "ana@example.com",
        "{who}"
    );
    assert_eq!(who["headers"]["x-forwarded-groups"], "sre", "{who}");
    assert!(who["headers"].get("authorization").is_none(), "{who}");

    let mut dev = e.client(&e.token("bob@example.com", &["dev"]));
    dev.initialize();
    let tools = dev.tools();
    assert!(
        !tools.iter().any(|t| t.starts_with("grafana__")),
        "{tools:?}"
    );
    assert!(tools.contains(&"open__echo".to_string()));
    let r = dev.request(
        "tools/call",
        json!({"name":"grafana__echo","arguments":{"text":"x"}}),
    );
    assert_eq!(r["error"]["code"], -32003, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bob@example.com"),
        "{r}"
    );
    // The pass-through route is protected the same way.
    let pass = e.gw.url.replace("/mcp", "/backends/grafana/mcp");
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let a = Client::new(&pass).post_raw(
        init.to_string(),
        &[("authorization", &format!("Bearer {}", dev.token))],
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let a = Client::new(&pass).post_raw(init.to_string(), &[]);
    assert_eq!(a.status, 401, "{}", a.body);
    let a = Client::new(&pass).post_raw(
        init.to_string(),
        &[("authorization", &format!("Bearer {}", sre.token))],
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn a_session_is_bound_to_its_user() {
    let e = env();
    let mut ana = e.client(&e.token("ana@example.com", &["sre"]));
    ana.initialize();
    let mut bob = e.client(&e.token("bob@example.com", &["sre"]));
    bob.inner.session = ana.inner.session.clone();
    let a = bob.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    assert_eq!(a.status, 404, "{}", a.body);
}

/// A valid token of ana's, and the forged and misused ones made from it, each named by
/// what is wrong with it.
fn forged_tokens(e: &Env) -> (String, Vec<(&'static str, String)>) {
    let good = e.claims("ana@example.com", &["sre"]);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let valid = mint_with(good.clone(), KEY1, "k1");
    let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
    parts[1] = b64(&with("groups", json!(["sre", "admin"])));
    let tampered = parts.join(".");
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        // The classic confusion: the public key used as an HMAC secret.
        encode(
            &h,
            &good,
            &EncodingKey::from_secret(format!("{}{}", JWK1.0, JWK1.1).as_bytes()),
        )
        .unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
        b64(&good)
    );
    let cases: Vec<(&'static str, String)> = vec![
        (
            "expired",
            mint_with(with("exp", json!(now() - 3600)), KEY1, "k1"),
        ),
        (
            "not yet valid",
            mint_with(with("nbf", json!(now() + 3600)), KEY1, "k1"),
        ),
        (
            "wrong audience",
            mint_with(
                with("aud", json!("https://other.example.com/mcp")),
                KEY1,
                "k1",
            ),
        ),
        (
            "another resource",
            mint_with(
                with(
                    "aud",
                    json!(e.gw.url.replace("/mcp", "/backends/grafana/mcp")),
                ),
                KEY1,
                "k1",
            ),
        ),
        (
            "wrong issuer",
            mint_with(with("iss", json!("https://evil.example.com")), KEY1, "k1"),
        ),
        ("alg none", none),
        ("HS256 with the public key", hs256),
        ("unknown kid", mint_with(good.clone(), KEY2, "k2")),
        (
            "key swap under a known kid",
            mint_with(good.clone(), KEY2, "k1"),
        ),
        ("tampered payload", tampered),
        ("a Google access token", "ya29.a0AfH6SMBx-not-a-jwt".into()),
    ];
    (valid, cases)
}

#[test]
fn forged_and_misused_tokens_are_refused_without_upstream_traffic() {
    let e = env();
    let (valid, cases) = forged_tokens(&e);
    // One good session to aim the attacks at.
    let mut ana = e.client(&valid);
    ana.initialize();
    let sid = ana.inner.session.clone().unwrap();
    let before = e.upstream_requests();
    for (what, token) in &cases {
        let mut c = Client::new(&e.gw.url);
        c.session = Some(sid.clone());
        let a = c.post_raw(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"grafana__echo","arguments":{"text":"x"}}}).to_string(),
            &[("authorization", &format!("Bearer {token}"))],
        );
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        let wa = a.headers.get("www-authenticate").unwrap().to_str().unwrap();
        assert!(wa.contains("error=\"invalid_token\""), "{what}: {wa}");
    }
    // A token in the query string is not looked at.
    let r = blocking()
        .post(format!("{}?access_token={valid}", e.gw.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .body(json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        e.upstream_requests(),
        before,
        "a refused request reached a backend"
    );
    // The good token still works.
    let r = ana.request(
        "tools/call",
        json!({"name":"grafana__echo","arguments":{"text":"ok"}}),
    );
    assert_eq!(text_of(&r), "ok");
}

#[test]
fn validation_is_cached_and_survives_a_brief_issuer_outage() {
    let e = env();
    let mut ana = e.client(&e.token("ana@example.com", &["sre"]));
    ana.initialize();
    for _ in 0..5 {
        ana.request("ping", json!({}));
    }
    let v = readyz_detail(&e.gw);
    assert!(v["auth"]["cache_hits"].as_u64().unwrap() >= 5, "{v}");
    let fetches = e.issuer.jwks_fetches.load(Ordering::SeqCst);
    // Issuer down: a new token signed with the known key is still accepted.
    e.issuer.down.store(true, Ordering::SeqCst);
    let mut bob = e.client(&e.token("bob@example.com", &["dev"]));
    bob.initialize();
    assert_eq!(bob.request("ping", json!({}))["result"], json!({}));
    // Unknown kids trigger at most a rate-limited refresh.
    e.issuer.down.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        let c = e.client(&mint_with(e.claims("eve@example.com", &[]), KEY2, "k9"));
        assert_eq!(
            c.post(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}))
                .status,
            401
        );
    }
    assert!(
        e.issuer.jwks_fetches.load(Ordering::SeqCst) <= fetches + 1,
        "JWKS refetched for every unknown kid"
    );
}
