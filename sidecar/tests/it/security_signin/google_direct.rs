//! google-direct: registration never discloses Google's client secret; the sidecar's
//! `/token` adds it, for that client's PKCE code and refresh grants only, and is no
//! open proxy to Google's token endpoint.

use super::{respawn, server_keys, CLAUDE_CALLBACK};
use crate::common::*;
use serde_json::{json, Value};

/// Signs `email` in at the fake Google's authorization endpoint `authorize` for the
/// Google client, as a standard client would; returns Google's code.
async fn google_code(authorize: &str, p: &Pkce, email: &str) -> String {
    let b = browser();
    let params = [
        ("client_id", GOOGLE_CLIENT),
        ("redirect_uri", CLAUDE_CALLBACK),
        ("response_type", "code"),
        ("scope", "openid email profile"),
        ("state", "st-direct"),
        ("code_challenge", p.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let r = b
        .get(authorize)
        .query(&params)
        .send()
        .await
        .expect("google authorize");
    assert_eq!(r.status(), 200, "Google's account chooser");
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.push(("email", email));
    let r = b
        .post(authorize)
        .form(&form)
        .send()
        .await
        .expect("google login");
    assert_eq!(r.status(), 302, "Google's answer");
    let loc = location(&r);
    assert!(loc.starts_with(CLAUDE_CALLBACK), "{loc}");
    query_of(&loc).get("code").expect("code").clone()
}

#[tokio::test]
async fn never_discloses_the_google_client_secret() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("gdirect");
    let first = Sidecar::start(&google, &opts).await;
    let (sidecar, logs, _dir) =
        respawn(first, |t| server_keys(t, "mode = \"google-direct\"")).await;
    gdirect_registration(&sidecar).await;
    let authorize = gdirect_metadata(&sidecar, &google).await;
    let p = pkce();
    let (code, access) = gdirect_exchange(&sidecar, &authorize, &p).await;
    gdirect_is_not_an_open_proxy(&sidecar, &google, &p).await;

    // Neither the secret, nor the code, nor Google's token in the logs (debug level).
    let log = logs.wait_for("request").await;
    for secret in [GOOGLE_SECRET, code.as_str(), access.as_str()] {
        assert!(!log.contains(secret), "{secret:?} logged:\n{log}");
    }
    sidecar.drop_schema().await;
}

/// Google-direct registration: Google's client id, and no secret anywhere in the answer.
async fn gdirect_registration(sidecar: &Sidecar) {
    let i = &sidecar.url;
    let r = http()
        .post(format!("{i}/register"))
        .header("user-agent", "ChatGPT-User/1.0")
        .json(
            &json!({"client_name": "ChatGPT", "redirect_uris": [CLAUDE_CALLBACK],
                      "token_endpoint_auth_method": "client_secret_post"}),
        )
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 201);
    let body = r.text().await.expect("body");
    assert!(
        !body.contains(GOOGLE_SECRET) && !body.contains("client_secret\""),
        "the registration answer discloses a client secret: {body}"
    );
    let reg: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reg["client_id"], GOOGLE_CLIENT);
    assert_eq!(reg["token_endpoint_auth_method"], "none");
}

/// Google-direct metadata: for a standard client, Google's authorization endpoint (returned)
/// and the sidecar's token endpoint; loopback clients (Claude Code) keep the sidecar's flow.
async fn gdirect_metadata(sidecar: &Sidecar, google: &FakeGoogle) -> String {
    let i = &sidecar.url;
    let meta: Value = http()
        .get(format!("{i}/.well-known/oauth-authorization-server"))
        .header("user-agent", "ChatGPT-User/1.0")
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("metadata json");
    assert_eq!(meta["token_endpoint"], format!("{i}/token"), "{meta}");
    let authorize = meta["authorization_endpoint"]
        .as_str()
        .expect("authorization_endpoint")
        .to_string();
    assert!(authorize.starts_with(&google.url), "{meta}");
    // Loopback clients (Claude Code) keep the sidecar's own flow.
    let meta: Value = http()
        .get(format!("{i}/.well-known/oauth-authorization-server"))
        .header("user-agent", "claude-code/1.0.0")
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("metadata json");
    assert_eq!(meta["authorization_endpoint"], format!("{i}/authorize"));
    let loopback = register_public(sidecar).await;
    assert!(loopback.client_id.starts_with("mcp_"), "{}", loopback.body);
    authorize
}

/// A Google code for the Google client, exchanged through the sidecar without the
/// secret: the fake Google requires the secret, so a 200 means the sidecar added it.
/// Returns the code and Google's access token.
async fn gdirect_exchange(sidecar: &Sidecar, authorize: &str, p: &Pkce) -> (String, String) {
    let code = google_code(authorize, p, "alice@example.com").await;
    let (s, v, headers) = token(
        sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CLAUDE_CALLBACK),
            ("client_id", GOOGLE_CLIENT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(s, 200, "Google's token response through the sidecar: {v}");
    assert_eq!(headers["cache-control"], "no-store");
    let access = v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    assert!(access.starts_with("ya29.fake-user-"), "Google's token: {v}");
    assert!(v["id_token"].is_string(), "{v}");
    (code, access)
}

/// Not an open proxy: other grant types, other clients, big bodies and codes meant for
/// the sidecar's own callback stay here (Google sees none of them).
async fn gdirect_is_not_an_open_proxy(sidecar: &Sidecar, google: &FakeGoogle, p: &Pkce) {
    let i = &sidecar.url;
    let before = google.stats().await;
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "x.y.z"),
            ("client_id", GOOGLE_CLIENT),
        ],
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{v}"
    );
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", "4/0fake-whatever"),
            ("redirect_uri", CLAUDE_CALLBACK),
            ("client_id", "another-google-client"),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    let padding = "a".repeat(10_000);
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", "4/0fake-whatever"),
            ("redirect_uri", CLAUDE_CALLBACK),
            ("client_id", GOOGLE_CLIENT),
            ("code_verifier", &p.verifier),
            ("padding", &padding),
        ],
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    // A code meant for the sidecar's own callback is never redeemed for someone else.
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", "4/0fake-whatever"),
            ("redirect_uri", &format!("{i}/callback")),
            ("client_id", GOOGLE_CLIENT),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let after = google.stats().await;
    for k in ["token.jwt_bearer", "token.authorization_code"] {
        assert_eq!(before[k], after[k], "{k} forwarded to Google: {after}");
    }
}
