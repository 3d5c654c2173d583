//! A restart loses no registered client, refresh token or signing key.

use crate::common::*;
use serde_json::Value;

#[tokio::test]
async fn restart_keeps_clients_refresh_tokens_and_keys() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("restart");
    let mut sidecar = Sidecar::start(&google, &opts).await;
    let client = register_public(&sidecar).await;
    let b = browser();
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let (s, v) = exchange(&sidecar, &client, &code, &p).await;
    assert_eq!(s, 200);
    let access = v["access_token"].as_str().unwrap().to_string();
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let jwks_before: Value = http()
        .get(format!("{}/jwks", sidecar.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let old_url = sidecar.url.clone();
    sidecar.restart(&opts).await;
    assert_eq!(sidecar.url, old_url, "same issuer after restart");

    let jwks_after: Value = http()
        .get(format!("{}/jwks", sidecar.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_before, jwks_after, "the signing key survived");
    let claims = verify(&sidecar, &access).await;
    assert_eq!(
        claims["email"], "alice@example.com",
        "tokens from before still verify"
    );
    let (s, v) = refresh(&sidecar, &client, &rt).await;
    assert_eq!(s, 200, "the refresh token survived: {v}");
    let (kid_before, kid_after) = (
        jsonwebtoken::decode_header(&access).unwrap().kid,
        jsonwebtoken::decode_header(v["access_token"].as_str().unwrap())
            .unwrap()
            .kid,
    );
    assert_eq!(kid_before, kid_after);
    // The registered client still signs in (consent remembered across the restart too).
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let (s, _) = exchange(&sidecar, &client, &code, &p).await;
    assert_eq!(s, 200);
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn rotate_key_keeps_the_previous_key_published() {
    let google = FakeGoogle::start().await;
    let opts = SidecarOptions::new("rotate");
    let mut sidecar = Sidecar::start(&google, &opts).await;
    let before: Value = http()
        .get(format!("{}/jwks", sidecar.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old_kid = before["keys"][0]["kid"].as_str().unwrap().to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-sidecar"))
        .arg("--config")
        .arg(&sidecar.config_path)
        .arg("--rotate-key")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let new_kid = printed
        .trim()
        .strip_prefix("new signing key ")
        .unwrap()
        .to_string();
    assert_ne!(new_kid, old_kid);
    sidecar.restart(&opts).await;
    let after: Value = http()
        .get(format!("{}/jwks", sidecar.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        vec![new_kid.as_str(), old_kid.as_str()],
        "new key first, previous still published"
    );
    let client = register_public(&sidecar).await;
    let b = browser();
    let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
    let (_, v) = exchange(&sidecar, &client, &code, &p).await;
    let kid = jsonwebtoken::decode_header(v["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_eq!(kid, new_kid, "new tokens use the new key");
    sidecar.drop_schema().await;
}
