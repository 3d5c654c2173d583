//! JSON-RPC 2.0 messages: classifying what arrives, building what leaves.

use serde_json::{json, Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP: resource not found (resources spec, "Error Handling").
pub const RESOURCE_NOT_FOUND: i64 = -32002;
/// Transport-level rejections (bad headers, missing session), as the SDKs use it.
pub const TRANSPORT_ERROR: i64 = -32000;
/// Unknown or terminated session.
pub const SESSION_NOT_FOUND: i64 = -32001;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn parse_error(message: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
            .with_data(json!({ "method": method }))
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }

    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("code".into(), json!(self.code));
        obj.insert("message".into(), json!(self.message));
        if let Some(data) = &self.data {
            obj.insert("data".into(), data.clone());
        }
        Value::Object(obj)
    }
}

/// One JSON-RPC message, classified.
#[derive(Debug)]
pub enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// A client's answer to a server-to-client request: `Ok(result)` or `Err(error object)`.
    Response {
        id: Value,
        outcome: Result<Value, Value>,
    },
    /// Not a valid message; `id` is the request id when one could be read, else null.
    Invalid {
        id: Value,
        error: RpcError,
    },
}

fn valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

/// Classifies one decoded JSON value as a JSON-RPC message.
pub fn classify(value: Value) -> Incoming {
    let Value::Object(mut obj) = value else {
        return Incoming::Invalid {
            id: Value::Null,
            error: RpcError::invalid_request("a JSON-RPC message must be a JSON object"),
        };
    };
    let id = obj.remove("id");
    let reply_id = id.clone().filter(valid_id).unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Incoming::Invalid {
            id: reply_id,
            error: RpcError::invalid_request("\"jsonrpc\" must be exactly \"2.0\""),
        };
    }
    if let Some(method) = obj.remove("method") {
        let Value::String(method) = method else {
            return Incoming::Invalid {
                id: reply_id,
                error: RpcError::invalid_request("\"method\" must be a string"),
            };
        };
        let params = obj.remove("params").unwrap_or(Value::Null);
        if !matches!(params, Value::Null | Value::Object(_) | Value::Array(_)) {
            return Incoming::Invalid {
                id: reply_id,
                error: RpcError::invalid_request("\"params\" must be an object"),
            };
        }
        return match id {
            None => Incoming::Notification { method, params },
            Some(id) if valid_id(&id) => Incoming::Request { id, method, params },
            Some(_) => Incoming::Invalid {
                id: Value::Null,
                error: RpcError::invalid_request("\"id\" must be a string or an integer"),
            },
        };
    }
    let result = obj.remove("result");
    let error = obj.remove("error");
    match (id, result, error) {
        (Some(id), Some(result), None) if valid_id(&id) => Incoming::Response {
            id,
            outcome: Ok(result),
        },
        (Some(id), None, Some(error)) if valid_id(&id) => Incoming::Response {
            id,
            outcome: Err(error),
        },
        _ => Incoming::Invalid {
            id: reply_id,
            error: RpcError::invalid_request(
                "not a JSON-RPC request, notification or response (needs \"method\", or \"id\" with exactly one of \"result\"/\"error\")",
            ),
        },
    }
}

/// A key that identifies a request id regardless of its JSON type (`1` and `"1"` differ).
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

pub fn response(id: &Value, result: Value) -> Value {
    // Built by hand: `json!` would serialize the result into a copy of itself.
    let mut m = serde_json::Map::new();
    m.insert("jsonrpc".into(), Value::from("2.0"));
    m.insert("id".into(), id.clone());
    m.insert("result".into(), result);
    Value::Object(m)
}

pub fn error_response(id: &Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() })
}

/// A notification; `Value::Null` params are left out.
pub fn notification(method: &str, params: Value) -> Value {
    if params.is_null() {
        json!({ "jsonrpc": "2.0", "method": method })
    } else {
        json!({ "jsonrpc": "2.0", "method": method, "params": params })
    }
}

pub fn request(id: &Value, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// True for messages that end a request: responses and errors.
pub fn is_response(message: &Value) -> bool {
    message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            Incoming::Request { .. }
        ));
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Incoming::Notification { .. }
        ));
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","id":"srv-1","result":{}})),
            Incoming::Response { outcome: Ok(_), .. }
        ));
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","id":"srv-1","error":{"code":1,"message":"x"}})),
            Incoming::Response {
                outcome: Err(_),
                ..
            }
        ));
        match classify(json!({"jsonrpc":"1.0","id":7,"method":"ping"})) {
            Incoming::Invalid { id, error } => {
                assert_eq!(id, json!(7));
                assert_eq!(error.code, INVALID_REQUEST);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","id":null,"method":"ping"})),
            Incoming::Invalid { .. }
        ));
        assert!(matches!(classify(json!([1])), Incoming::Invalid { .. }));
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","id":1,"method":"x","params":3})),
            Incoming::Invalid { .. }
        ));
    }

    #[test]
    fn id_keys_keep_types_apart() {
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
    }
}
