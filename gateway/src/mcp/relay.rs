//! Server-to-client requests carry ids chosen by a backend. Several backends may pick
//! the same id in one downstream session, so the gateway rewrites them into
//! `mcpgw:{backend}:{original id as JSON}` and restores them when the client answers.
//! The mapping is stateless: any replica can route the answer.

use serde_json::Value;

const PREFIX: &str = "mcpgw:";

pub fn wrap_id(backend: &str, id: &Value) -> Value {
    Value::String(format!(
        "{PREFIX}{backend}:{}",
        serde_json::to_string(id).unwrap_or_default()
    ))
}

/// Returns the backend name and the original id of a rewritten id.
pub fn unwrap_id(id: &Value) -> Option<(&str, Value)> {
    let s = id.as_str()?.strip_prefix(PREFIX)?;
    let (backend, rest) = s.split_once(':')?;
    let original: Value = serde_json::from_str(rest).ok()?;
    matches!(original, Value::String(_) | Value::Number(_)).then_some((backend, original))
}

/// If `msg` is a request from the backend to the client, rewrites its id in place.
pub fn rewrite_server_request(backend: &str, msg: &mut Value) -> bool {
    if msg.get("method").is_none() {
        return false;
    }
    match msg.get_mut("id") {
        Some(id) if !id.is_null() => {
            *id = wrap_id(backend, id);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_round_trip() {
        for id in [json!(5), json!("abc"), json!("with:colons")] {
            let w = wrap_id("grafana", &id);
            assert_eq!(unwrap_id(&w), Some(("grafana", id)));
        }
        assert_eq!(unwrap_id(&json!("other")), None);
        assert_eq!(unwrap_id(&json!(3)), None);
        assert_eq!(unwrap_id(&json!("mcpgw:b:{}")), None);
    }

    #[test]
    fn only_requests_are_rewritten() {
        let mut req = json!({"jsonrpc":"2.0","id":1,"method":"sampling/createMessage"});
        assert!(rewrite_server_request("a", &mut req));
        assert_eq!(req["id"], json!("mcpgw:a:1"));
        let mut note = json!({"jsonrpc":"2.0","method":"notifications/progress"});
        assert!(!rewrite_server_request("a", &mut note));
        let mut resp = json!({"jsonrpc":"2.0","id":1,"result":{}});
        assert!(!rewrite_server_request("a", &mut resp));
    }
}
