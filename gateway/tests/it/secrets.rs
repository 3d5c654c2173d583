//! `${secret:..}` references resolved from AWS Secrets Manager — a real local moto
//! server (PyPI `moto[server]`, installed by ops/scripts/install-tools.sh --test).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join(".tools/venv/bin/moto_server");
    assert!(
        p.exists(),
        "{} is missing: run ops/scripts/install-tools.sh --test",
        p.display()
    );
    p
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(moto_bin())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let url = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Moto { child, url }
}

fn aws(moto: &Moto, action: &str, body: Value) -> Value {
    let r = blocking()
        .post(&moto.url)
        .header("x-amz-target", format!("secretsmanager.{action}"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status();
    let text = r.text().unwrap_or_default();
    assert!(status.is_success(), "{action}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn env(moto: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto.url.clone()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

#[test]
fn secrets_fill_the_config_rotate_and_never_reach_the_logs() {
    let moto = start_moto();
    let key = "cd".repeat(32);
    aws(
        &moto,
        "CreateSecret",
        json!({"Name": "gateway", "SecretString": json!({"session_key": key}).to_string()}),
    );
    aws(
        &moto,
        "CreateSecret",
        json!({"Name": "backend-key", "SecretString": "first-secret-value"}),
    );
    let backend = spawn_mock("vault", &["--no-dynamic"]);
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nsession_key = \"${{secret:gateway#session_key}}\"\nsecrets_refresh_s = 1\n\n[[backend]]\nname = \"vault\"\nurl = \"{}\"\nheaders = {{ X-Api-Key = \"${{secret:backend-key}}\" }}\n",
        backend.url
    );
    let log = tempdir().join("gateway.log");
    let envs = env(&moto);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = spawn_gateway_with(&cfg, &[], &envs, Some(&log));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let who = |cl: &mut Client| -> Value {
        serde_json::from_str(&text_of(&cl.call_tool("vault__whoami", json!({})))).unwrap()
    };
    assert_eq!(who(&mut cl)["headers"]["x-api-key"], "first-secret-value");
    // The session key came from the secret: a second gateway with the same secret
    // serves the same session.
    let gw2 = spawn_gateway_with(&cfg, &[], &envs, None);
    let mut cl2 = Client::new(&gw2.url);
    cl2.session = cl.session.clone();
    assert_eq!(
        text_of(&cl2.call_tool("vault__echo", json!({"text": "same key"}))),
        "same key"
    );
    // Rotation reaches the backend credentials without a restart.
    aws(
        &moto,
        "PutSecretValue",
        json!({"SecretId": "backend-key", "SecretString": "second-secret-value"}),
    );
    wait_until(Duration::from_secs(30), || {
        who(&mut cl)["headers"]["x-api-key"] == "second-secret-value"
    });
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logs.contains("secrets rotated"), "{logs}");
    for secret in ["first-secret-value", "second-secret-value", key.as_str()] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}

#[test]
fn a_missing_secret_stops_start_up_naming_it() {
    let moto = start_moto();
    let dir = tempdir();
    let path = dir.join("g.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n\n[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { X-Key = \"${secret:nope#key}\" }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .arg("--config")
        .arg(&path)
        .arg("-t")
        .envs(env(&moto))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nope"), "{err}");
}
