//! 150 different people sign in and refresh at the same time, and all keep working:
//! the sidecar issues its own refresh tokens, so Google's 100-refresh-tokens-per-client
//! limit does not apply.

use crate::common::*;
use serde_json::json;

const USERS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_users_sign_in_and_refresh_concurrently() {
    let google = FakeGoogle::start().await;
    for i in 0..USERS {
        google
            .add_user(json!({"email": format!("user{i:03}@example.com"), "groups": [format!("team{}@example.com", i % 7)]}))
            .await;
    }
    let mut opts = SidecarOptions::new("load");
    opts.extra = "[tokens]\naccess_token_ttl_s = 600\n".into();
    let sidecar = std::sync::Arc::new(Sidecar::start(&google, &opts).await);
    let client = std::sync::Arc::new(register_public(&sidecar).await);

    let tasks = (0..USERS).map(|i| {
        let sidecar = sidecar.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let email = format!("user{i:03}@example.com");
            let b = browser();
            let p = pkce();
            let code = sign_in_code(&b, &sidecar, &AuthRequest::new(&client, &p), &email).await;
            let (s, v) = exchange(&sidecar, &client, &code, &p).await;
            assert_eq!(s, 200, "{email}: {v}");
            let mut rt = v["refresh_token"].as_str().unwrap().to_string();
            for _ in 0..3 {
                let (s, v) = refresh(&sidecar, &client, &rt).await;
                assert_eq!(s, 200, "{email} refresh: {v}");
                rt = v["refresh_token"].as_str().unwrap().to_string();
                let claims = verify(&sidecar, v["access_token"].as_str().unwrap()).await;
                assert_eq!(claims["email"], email.as_str());
                assert_eq!(
                    claims["groups"],
                    json!([format!("team{}@example.com", i % 7)])
                );
            }
            rt
        })
    });
    let results = within_long(futures::future::join_all(tasks)).await;
    let mut tokens = Vec::new();
    for r in results {
        tokens.push(r.expect("user task"));
    }
    // Every one of the 150 latest refresh tokens still works, the first one included.
    for (i, rt) in tokens.iter().enumerate() {
        let (s, v) = refresh(&sidecar, &client, rt).await;
        assert_eq!(s, 200, "user{i:03}: {v}");
    }
    sidecar.drop_schema().await;
}

async fn within_long<T>(fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(std::time::Duration::from_secs(300), fut).await {
        Ok(v) => v,
        Err(_) => panic!("150 users did not finish within 300 s"),
    }
}
