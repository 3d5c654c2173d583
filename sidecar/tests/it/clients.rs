//! Client registration: rate limit per address, Client ID Metadata Documents (fetched
//! SSRF-safely), and Workload Identity Federation credentials for the Directory API.

use std::net::SocketAddr;

use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("ratelimit");
    opts.extra = String::new();
    // The harness config allows 1000/min; use a dedicated sidecar with 3/min.
    let sidecar = Sidecar::start_with(&google, &opts, |c| {
        *c = c.replace(
            "registration_per_minute = 1000",
            "registration_per_minute = 3",
        )
    })
    .await;
    let body = json!({"redirect_uris": ["http://127.0.0.1:1/cb"], "client_name": "x"});
    for _ in 0..3 {
        let (s, v) = register(&sidecar, body.clone()).await;
        assert_eq!(s, 201, "{v}");
    }
    let r = http()
        .post(format!("{}/register", sidecar.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "too_many_requests");
    sidecar.drop_schema().await;
}

/// Serves `doc` at `/client.json` for every connection; returns the URL.
async fn serve_document(doc_for: impl Fn(&str) -> String + Send + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/client.json");
    let u = url.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = doc_for(&u);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn client_id_metadata_documents_are_fetched_and_validated() {
    let google = FakeGoogle::start().await;
    let sidecar = Sidecar::start(&google, &SidecarOptions::new("cimd")).await;
    let good = serve_document(|url| {
        json!({"client_id": url, "client_name": "Metadata Client",
               "redirect_uris": ["http://127.0.0.1:7777/callback"], "token_endpoint_auth_method": "none"})
        .to_string()
    })
    .await;
    let client = Registered {
        client_id: good.clone(),
        redirect_uri: "http://127.0.0.1:7777/callback".into(),
        body: Value::Null,
    };
    let b = browser();
    let p = pkce();
    let req = AuthRequest::new(&client, &p);
    let r = b.get(req.url(&sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Metadata Client"), "{page}");
    let code = sign_in_code(&b, &sidecar, &req, "alice@example.com").await;
    let (s, v) = exchange(&sidecar, &client, &code, &p).await;
    assert_eq!(s, 200, "{v}");
    let claims = verify(&sidecar, v["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["client_id"], good.as_str());

    // A document whose client_id is not its URL is refused.
    let liar = serve_document(|_| {
        json!({"client_id": "https://other.example/client.json", "client_name": "Liar",
               "redirect_uris": ["http://127.0.0.1:7777/callback"]})
        .to_string()
    })
    .await;
    let mut req = AuthRequest::new(&client, &p);
    req.client_id = liar;
    let r = http().get(req.url(&sidecar)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("client_id does not equal its URL"), "{page}");
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn private_addresses_are_not_fetched_by_default() {
    let google = FakeGoogle::start().await;
    let mut opts = SidecarOptions::new("ssrf");
    opts.extra = String::new();
    let sidecar = Sidecar::start_with(&google, &opts, |c| {
        *c = c.replace("allow_private_cimd = true", "allow_private_cimd = false")
    })
    .await;
    let doc = serve_document(|url| {
        json!({"client_id": url, "client_name": "Internal", "redirect_uris": ["http://127.0.0.1:7777/callback"]}).to_string()
    })
    .await;
    let p = pkce();
    let client = Registered {
        client_id: doc.clone(),
        redirect_uri: "http://127.0.0.1:7777/callback".into(),
        body: Value::Null,
    };
    let r = http()
        .get(AuthRequest::new(&client, &p).url(&sidecar))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    // Every fetch failure reads the same (security_limits); the cause is audited.
    assert!(
        page.contains("client metadata document could not be fetched"),
        "{page}"
    );
    // A name that resolves to loopback is refused at resolution time.
    let by_name = doc.replace("127.0.0.1", "localhost");
    let client = Registered {
        client_id: by_name,
        redirect_uri: "http://127.0.0.1:7777/callback".into(),
        body: Value::Null,
    };
    let r = http()
        .get(AuthRequest::new(&client, &p).url(&sidecar))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("client metadata document could not be fetched"),
        "{page}"
    );
    sidecar.drop_schema().await;
}

#[tokio::test]
async fn workload_identity_federation_reads_groups() {
    let google = FakeGoogle::start().await;
    for (tag, subject) in [("wifdwd", true), ("wifimp", false)] {
        let mut opts = SidecarOptions::new(tag);
        opts.credentials = format!(
            "[google.credentials]\nsource = \"workload_identity\"\nservice_account = \"{SA_EMAIL}\"\n\
             audience = \"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/aws/providers/aws\"\n\
             sts_endpoint = \"{g}/v1/token\"\niam_endpoint = \"{g}\"\naws_region = \"eu-west-1\"\n",
            g = google.url
        );
        opts.env = vec![
            ("AWS_ACCESS_KEY_ID".into(), "AKIDEXAMPLE".into()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            ),
            ("AWS_SESSION_TOKEN".into(), "session".into()),
        ];
        let sidecar = Sidecar::start_with(&google, &opts, |c| {
            if !subject {
                // Without admin_subject the service account is impersonated directly.
                *c = c.replace("admin_subject = \"alice@example.com\"\n", "");
            }
        })
        .await;
        let client = register_public(&sidecar).await;
        let b = browser();
        let (p, code) = sign_in_new(&b, &sidecar, &client, "alice@example.com").await;
        let (s, v) = exchange(&sidecar, &client, &code, &p).await;
        assert_eq!(s, 200, "{v}");
        let claims = verify(&sidecar, v["access_token"].as_str().unwrap()).await;
        assert!(
            claims["groups"]
                .as_array()
                .unwrap()
                .contains(&json!("eng@example.com")),
            "{tag}: {claims}"
        );
        sidecar.drop_schema().await;
    }
    let stats = google.stats().await;
    assert!(stats["sts.token"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["iam.signJwt"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        stats["iam.generateAccessToken"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}
