//! Every refusal of the acceptance list, each with the exact error it must produce.

use crate::common::*;
use serde_json::{json, Value};

async fn setup(tag: &str) -> (FakeGoogle, Sidecar, Registered) {
    let google = FakeGoogle::start().await;
    let sidecar = Sidecar::start(&google, &SidecarOptions::new(tag)).await;
    let client = register_public(&sidecar).await;
    (google, sidecar, client)
}

/// Signs `email` in and expects the refusal page with a way back to the client that
/// carries `error=access_denied`.
async fn expect_refused(sidecar: &Sidecar, client: &Registered, email: &str, sentence: &str) {
    let b = browser();
    let p = pkce();
    let req = AuthRequest::new(client, &p);
    match sign_in(&b, sidecar, &req, email).await {
        Outcome::Page(status, page) => {
            assert_eq!(status, 403, "{page}");
            assert!(page.contains("Access refused"), "{page}");
            assert!(page.contains(sentence), "expected {sentence:?} in {page}");
            let link_start = page.find("href=\"").expect("return link") + 6;
            let link = &page[link_start..link_start + page[link_start..].find('"').unwrap()];
            let link = link.replace("&amp;", "&");
            assert!(link.starts_with(&client.redirect_uri), "{link}");
            let q = query_of(&link);
            assert_eq!(q["error"], "access_denied");
            assert_eq!(q.get("state"), req.state.as_ref());
            assert_eq!(q["iss"], sidecar.url);
            assert!(
                page.contains("http-equiv=\"refresh\""),
                "returns without a click"
            );
        }
        Outcome::Redirect(q) => panic!("{email} was not refused: {q:?}"),
    }
}

#[tokio::test]
async fn user_outside_allowed_domains_is_refused() {
    let (_g, sidecar, client) = setup("domain").await;
    expect_refused(
        &sidecar,
        &client,
        "eve@other.com",
        "eve@other.com belongs to other.com, which may not use this service",
    )
    .await;
    expect_refused(
        &sidecar,
        &client,
        "someone@gmail.com",
        "is not a Google Workspace account",
    )
    .await;
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn unverified_email_is_refused() {
    let (_g, sidecar, client) = setup("unverified").await;
    expect_refused(
        &sidecar,
        &client,
        "unverified@example.com",
        "Google has not verified the email address unverified@example.com.",
    )
    .await;
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn redirect_uris_not_allowed_are_refused() {
    let (_g, sidecar, client) = setup("redirect").await;
    // At registration.
    let (s, v) = register(
        &sidecar,
        json!({"redirect_uris": ["https://evil.example/cb"], "client_name": "x"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_redirect_uri");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("redirect_uri \"https://evil.example/cb\" is not allowed"),
        "{v}"
    );
    let (s, v) = register(
        &sidecar,
        json!({"redirect_uris": ["http://127.0.0.1:5000/cb"], "application_type": "web"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_redirect_uri");
    // At authorization: a URI the client did not register is shown, never redirected to.
    let p = pkce();
    let mut req = AuthRequest::new(&client, &p);
    req.redirect_uri = "https://evil.example/cb".into();
    let r = http().get(req.url(&sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("redirect_uri &quot;https://evil.example/cb&quot; is not registered for this application"), "{page}");
    // Loopback: any port is the same registered URI, another path is not.
    req.redirect_uri = "http://127.0.0.1:49999/callback".into();
    let r = http().get(req.url(&sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 200, "another loopback port is fine");
    req.redirect_uri = "http://127.0.0.1:33418/other".into();
    let r = http().get(req.url(&sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    sidecar.drop_schema().await;
}

async fn expect_redirect_error(
    sidecar: &Sidecar,
    req: &AuthRequest,
    error: &str,
    description: &str,
) {
    let r = http().get(req.url(sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 302, "error goes back to the client");
    let loc = location(&r);
    assert!(loc.starts_with(&req.redirect_uri), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["error"], error, "{q:?}");
    assert_eq!(q["error_description"], description);
    assert_eq!(q["iss"], sidecar.url);
    assert_eq!(q.get("state"), req.state.as_ref());
}

#[tokio::test]
async fn missing_or_plain_pkce_is_refused() {
    let (_g, sidecar, client) = setup("pkce").await;
    let p = pkce();
    let mut req = AuthRequest::new(&client, &p);
    req.challenge = None;
    req.method = None;
    expect_redirect_error(
        &sidecar,
        &req,
        "invalid_request",
        "code_challenge is required (PKCE with code_challenge_method S256)",
    )
    .await;
    let mut req = AuthRequest::new(&client, &p);
    req.method = Some("plain".into());
    req.challenge = Some(p.verifier.clone());
    expect_redirect_error(
        &sidecar,
        &req,
        "invalid_request",
        "code_challenge_method must be S256",
    )
    .await;
    let mut req = AuthRequest::new(&client, &p);
    req.method = None;
    expect_redirect_error(
        &sidecar,
        &req,
        "invalid_request",
        "code_challenge_method must be S256",
    )
    .await;
    let mut req = AuthRequest::new(&client, &p);
    req.state = None;
    expect_redirect_error(&sidecar, &req, "invalid_request", "state is required").await;
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn resource_not_configured_is_refused() {
    let (_g, sidecar, client) = setup("resource").await;
    let p = pkce();
    let mut req = AuthRequest::new(&client, &p);
    req.resource = Some("https://elsewhere.example/mcp".into());
    expect_redirect_error(
        &sidecar,
        &req,
        "invalid_target",
        "resource \"https://elsewhere.example/mcp\" is not a protected resource of this server",
    )
    .await;
    req.resource = None;
    expect_redirect_error(
        &sidecar,
        &req,
        "invalid_target",
        "resource is required (RFC 8707): the URL of the MCP server",
    )
    .await;
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn wrong_verifier_reused_code_and_foreign_code_are_refused() {
    let (_g, sidecar, client) = setup("codes").await;
    let other = register_public(&sidecar).await;
    let b = browser();

    // Wrong code_verifier.
    let (_right, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let wrong = pkce();
    let (s, v) = exchange(&sidecar, &client, &code, &wrong).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(
        v["error_description"],
        "code_verifier does not match the code_challenge"
    );

    // Reused code: the first exchange works, the second is refused and revokes what the
    // first produced.
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let (s, first) = exchange(&sidecar, &client, &code, &p).await;
    assert_eq!(s, 200);
    let (s, v) = exchange(&sidecar, &client, &code, &p).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(
        v["error_description"],
        "authorization code was already used; the tokens issued for it have been revoked"
    );
    let (s, v) = refresh(&sidecar, &client, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));

    // Another client's code.
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let stolen = Registered {
        client_id: other.client_id.clone(),
        redirect_uri: client.redirect_uri.clone(),
        body: Value::Null,
    };
    let (s, v) = exchange(&sidecar, &stolen, &code, &p).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(
        v["error_description"],
        "authorization code was issued to another client"
    );
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn reused_refresh_token_revokes_its_family() {
    let (_g, sidecar, client) = setup("reuse").await;
    let b = browser();
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let (_, v) = exchange(&sidecar, &client, &code, &p).await;
    let rt1 = v["refresh_token"].as_str().unwrap().to_string();
    let (s, v) = refresh(&sidecar, &client, &rt1).await;
    assert_eq!(s, 200);
    let rt2 = v["refresh_token"].as_str().unwrap().to_string();
    // rt1 comes back (stolen copy): refused, and the live rt2 dies with it.
    let (s, v) = refresh(&sidecar, &client, &rt1).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(
        v["error_description"],
        "refresh token was already used; every token of this sign-in has been revoked"
    );
    let (s, v) = refresh(&sidecar, &client, &rt2).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(
        v["error_description"],
        "refresh token was revoked; sign in again"
    );
    // Another client cannot use someone's refresh token either.
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let (_, v) = exchange(&sidecar, &client, &code, &p).await;
    let other = register_public(&sidecar).await;
    let (s, v) = refresh(&sidecar, &other, v["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error_description"],
        "refresh token was issued to another client"
    );
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn deleted_user_or_lost_group_stops_refresh() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("policy");
    opts.extra = String::new();
    let sidecar = Sidecar::start(&google, &opts).await;
    let client = register_public(&sidecar).await;
    let b = browser();
    let (p, code) = sign_in_new(&b, &sidecar, &client, "bob@example.com").await;
    let (_, v) = exchange(&sidecar, &client, &code, &p).await;
    let r = http()
        .delete(format!("{}/admin/users/bob@example.com", google.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = refresh(&sidecar, &client, v["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(
        v["error_description"],
        "bob@example.com is no longer in the company directory"
    );
    sidecar.drop_schema().await;
}
