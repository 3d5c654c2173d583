//! The whole sign-in against the real binaries: metadata, registration, consent,
//! Google, callback, tokens, refresh, consent remembered, groups re-read, revocation.

use crate::common::*;
use serde_json::Value;

#[tokio::test]
async fn metadata_documents_describe_the_server() {
    let google = FakeGoogle::start().await;
    let sidecar = Sidecar::start(&google, &SidecarOptions::new("meta")).await;
    let i = &sidecar.url;
    for (path, oidc) in [
        ("/.well-known/oauth-authorization-server", false),
        ("/.well-known/openid-configuration", true),
    ] {
        let r = http().get(format!("{i}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["issuer"], i.as_str());
        assert_eq!(m["authorization_endpoint"], format!("{i}/authorize"));
        assert_eq!(m["token_endpoint"], format!("{i}/token"));
        assert_eq!(m["registration_endpoint"], format!("{i}/register"));
        assert_eq!(m["revocation_endpoint"], format!("{i}/revoke"));
        assert_eq!(m["jwks_uri"], format!("{i}/jwks"));
        assert_eq!(
            m["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(
            m["grant_types_supported"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        assert!(m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&"none".into()));
        assert_eq!(m["client_id_metadata_document_supported"], true);
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        assert!(m["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&"mcp".into()));
        assert_eq!(m.get("subject_types_supported").is_some(), oidc, "{path}");
    }
    let jwks: Value = http()
        .get(format!("{i}/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0].get("d").is_none(), "no private part published");
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn sign_in_issues_verifiable_tokens_and_refresh_rotates() {
    let google = FakeGoogle::start().await;
    let sidecar = Sidecar::start(&google, &SidecarOptions::new("flow")).await;
    let client = register_public(&sidecar).await;
    assert_eq!(client.body["application_type"], "native");
    assert!(
        client.body.get("client_secret").is_none(),
        "public client gets no secret"
    );

    let b = browser();
    let p = pkce();
    let req = AuthRequest::new(&client, &p);
    let code = sign_in_code(&b, &sidecar, &req, "alice@example.com").await;
    let (status, v, headers) = token(
        &sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &client.redirect_uri),
            ("client_id", &client.client_id),
            ("code_verifier", &p.verifier),
            ("resource", RESOURCE),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 600);
    assert_eq!(v["scope"], "mcp");
    let claims = verify(&sidecar, v["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["client_id"], client.client_id.as_str());
    assert_eq!(claims["scope"], "mcp");
    assert_eq!(claims["hd"], "example.com");
    assert_eq!(
        claims["groups"],
        serde_json::json!([
            "all@example.com",
            "eng@example.com",
            "mcp-users@example.com"
        ]),
        "all pages of the Directory API read"
    );
    assert_eq!(
        claims["sub"].as_str().unwrap().len(),
        21,
        "Google's subject"
    );
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 600);

    // Refresh rotates, and sees group changes made in the directory since.
    google
        .set_groups("alice@example.com", &["eng@example.com"])
        .await;
    let rt1 = v["refresh_token"].as_str().unwrap().to_string();
    let (s, v2) = refresh(&sidecar, &client, &rt1).await;
    assert_eq!(s, 200, "{v2}");
    let rt2 = v2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2, "refresh token rotates");
    let claims2 = verify(&sidecar, v2["access_token"].as_str().unwrap()).await;
    assert_eq!(
        claims2["groups"],
        serde_json::json!(["eng@example.com"]),
        "removed groups are dropped at refresh"
    );

    // Consent is remembered: the same browser goes straight to Google this time.
    let p2 = pkce();
    let req2 = AuthRequest::new(&client, &p2);
    let r = b.get(req2.url(&sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 302, "no consent page the second time");
    assert!(location(&r).starts_with(&google.url), "{}", location(&r));
    let code2 = sign_in_code(&b, &sidecar, &req2, "alice@example.com").await;
    let (s, _) = exchange(&sidecar, &client, &code2, &p2).await;
    assert_eq!(s, 200);

    // Revocation ends the family.
    let r = http()
        .post(format!("{}/revoke", sidecar.url))
        .form(&[("token", rt2.as_str()), ("client_id", &client.client_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v3) = refresh(&sidecar, &client, &rt2).await;
    assert_eq!(s, 400);
    assert_eq!(v3["error"], "invalid_grant");
    assert_eq!(
        v3["error_description"],
        "refresh token was revoked; sign in again"
    );
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn a_different_person_in_a_remembered_browser_is_asked_for_consent() {
    let google = FakeGoogle::start().await;
    let sidecar = Sidecar::start(&google, &SidecarOptions::new("consent2")).await;
    let client = register_public(&sidecar).await;
    let b = browser();
    let p = pkce();
    sign_in_code(
        &b,
        &sidecar,
        &AuthRequest::new(&client, &p),
        "alice@example.com",
    )
    .await;
    // Bob uses the same browser: the first hop skips consent (Alice approved), so the
    // page comes after Google, naming Bob.
    let p2 = pkce();
    let req = AuthRequest::new(&client, &p2);
    let r = b.get(req.url(&sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let chooser = b
        .get(location(&r))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = chooser_form(&chooser, "bob@example.com");
    let r = b
        .post(format!("{}/authorize", google.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    let r = b.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), 200, "consent asked of Bob");
    let page = r.text().await.unwrap();
    assert!(page.contains("bob@example.com"), "{page}");
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn confidential_clients_authenticate_with_their_secret() {
    let google = FakeGoogle::start().await;
    let sidecar = Sidecar::start(&google, &SidecarOptions::new("conf")).await;
    let (s, body) = register(
        &sidecar,
        serde_json::json!({"client_name": "Web app", "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "application_type": "web", "token_endpoint_auth_method": "client_secret_basic"}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let secret = body["client_secret"]
        .as_str()
        .expect("confidential client gets a secret")
        .to_string();
    assert_eq!(body["client_secret_expires_at"], 0);
    let client = Registered {
        client_id: body["client_id"].as_str().unwrap().into(),
        redirect_uri: "https://claude.ai/api/mcp/auth_callback".into(),
        body,
    };
    let b = browser();
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_verifier", p.verifier.as_str()),
    ];
    // Wrong secret first: 401 invalid_client, and the code stays unused.
    let r = http()
        .post(format!("{}/token", sidecar.url))
        .basic_auth(&client.client_id, Some("wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    let r = http()
        .post(format!("{}/token", sidecar.url))
        .basic_auth(&client.client_id, Some(&secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sidecar.drop_schema().await;
}
