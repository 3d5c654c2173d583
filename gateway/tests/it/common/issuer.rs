//! A small OAuth issuer (metadata + JWKS over real HTTP) in the test process, and
//! ES256 tokens minted with throw-away keys.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const KEY1: &str = include_str!("../../keys/test-es256-1.pem");
pub const KEY2: &str = include_str!("../../keys/test-es256-2.pem");
pub const JWK1: (&str, &str) = (
    "1_gr1BpAsONwS1tEhGsza9OyYZ6qzOHKG4lMdpmqKgg",
    "0eHMA0YFiO4s2grW_O8GEWfEyiahaYjqKvcK7s5qnx8",
);

pub struct Issuer {
    pub url: String,
    pub down: Arc<AtomicBool>,
    pub jwks_fetches: Arc<AtomicUsize>,
}

pub fn start_issuer() -> Issuer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let down = Arc::new(AtomicBool::new(false));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (u, d, f) = (url.clone(), down.clone(), fetches.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if d.load(Ordering::SeqCst) {
                continue; // dropped: connection reset
            }
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let body = match path.as_str() {
                "/.well-known/oauth-authorization-server" => {
                    json!({"issuer": u, "jwks_uri": format!("{u}/jwks")}).to_string()
                }
                "/jwks" => {
                    f.fetch_add(1, Ordering::SeqCst);
                    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256", "x": JWK1.0, "y": JWK1.1}]}).to_string()
                }
                _ => String::new(),
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let mut s = stream;
            let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        }
    });
    Issuer {
        url,
        down,
        jwks_fetches: fetches,
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An RFC 9068 access token (`typ: at+jwt`), as the sidecar mints them.
pub fn mint_with(claims: Value, key_pem: &str, kid: &str) -> String {
    mint_typed(claims, key_pem, kid, Some("at+jwt"))
}

/// A JWT without the access-token type: an ID token or any other signed document.
pub fn mint_untyped(claims: Value, key_pem: &str, kid: &str) -> String {
    mint_typed(claims, key_pem, kid, None)
}

fn mint_typed(claims: Value, key_pem: &str, kid: &str, typ: Option<&str>) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.to_string());
    h.typ = typ.map(str::to_string);
    encode(
        &h,
        &claims,
        &EncodingKey::from_ec_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}
