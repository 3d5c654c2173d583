//! `requestState` of the MRTR fixtures: an opaque string the client echoes back,
//! integrity-protected with HMAC-SHA256 under a key drawn at process start, bound
//! to the request it belongs to (method, name, digest of the arguments) and to an
//! expiry. Format: `hex(JSON body) "." hex(HMAC of the body)`; anything else,
//! including a valid state with a suffix, fails verification.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::mock::jsonrpc::RpcError;

type HmacSha256 = Hmac<Sha256>;

/// How long a state stays valid.
const STATE_TTL_SECS: u64 = 600;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn integrity_failed() -> RpcError {
    RpcError::invalid_params("requestState integrity check failed")
}

fn mac(key: &[u8; 32], body: &[u8]) -> Result<HmacSha256, RpcError> {
    let mut mac = HmacSha256::new_from_slice(key)
        .map_err(|_| RpcError::internal("requestState key rejected"))?;
    mac.update(body);
    Ok(mac)
}

/// What a state is bound to: the method, the tool or prompt, and the arguments.
pub fn binding(method: &str, name: &str, args: &Map<String, Value>) -> String {
    let digest = Sha256::digest(Value::Object(args.clone()).to_string().as_bytes());
    format!("{method}:{name}:{}", hex::encode(digest))
}

/// Seals `payload` for the request `binding`. A nonce makes every state differ.
pub fn seal(key: &[u8; 32], binding: &str, payload: Value) -> Result<String, RpcError> {
    let body = json!({
        "b": binding,
        "exp": now() + STATE_TTL_SECS,
        "n": format!("{:016x}", rand::random::<u64>()),
        "p": payload,
    })
    .to_string();
    let tag = mac(key, body.as_bytes())?.finalize().into_bytes();
    Ok(format!("{}.{}", hex::encode(body), hex::encode(tag)))
}

/// Verifies a state and returns its payload: -32602 when it was altered, belongs
/// to another request, or has expired.
pub fn open(key: &[u8; 32], binding: &str, state: &str) -> Result<Value, RpcError> {
    let (body_hex, tag_hex) = state.split_once('.').ok_or_else(integrity_failed)?;
    let body = hex::decode(body_hex).map_err(|_| integrity_failed())?;
    let tag = hex::decode(tag_hex).map_err(|_| integrity_failed())?;
    mac(key, &body)?
        .verify_slice(&tag)
        .map_err(|_| integrity_failed())?;
    let mut sealed: Value = serde_json::from_slice(&body).map_err(|_| integrity_failed())?;
    if sealed["b"] != binding {
        return Err(RpcError::invalid_params(
            "requestState belongs to another request",
        ));
    }
    if sealed["exp"].as_u64().is_none_or(|exp| exp < now()) {
        return Err(RpcError::invalid_params("requestState has expired"));
    }
    Ok(sealed["p"].take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let key = [7u8; 32];
        let b = binding("tools/call", "t", &Map::new());
        let s = seal(&key, &b, json!({ "round": 1 })).expect("seal");
        assert_ne!(s, seal(&key, &b, json!({ "round": 1 })).expect("seal"));
        assert_eq!(open(&key, &b, &s).expect("valid")["round"], 1);
        let tampered = format!("{s}-TAMPERED");
        assert!(open(&key, &b, &tampered)
            .expect_err("suffix")
            .message
            .contains("integrity"));
        assert!(open(&[8u8; 32], &b, &s).is_err(), "another key");
        let other = binding("tools/call", "u", &Map::new());
        assert!(open(&key, &other, &s).is_err(), "another tool");
        let mut flipped = s.clone().into_bytes();
        flipped[4] = if flipped[4] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(open(&key, &b, &flipped).is_err(), "altered body");
    }
}
