//! JSON-RPC 2.0 framing for MCP: classifying messages and building errors.

use serde_json::{json, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Gateway-defined: the backend could not be reached or answered badly.
pub const BACKEND_UNAVAILABLE: i64 = -32001;
/// Gateway-defined: the backend did not answer within its timeout.
pub const BACKEND_TIMEOUT: i64 = -32002;
/// Gateway-defined: the caller may not use this backend or tool (policy).
pub const FORBIDDEN: i64 = -32003;
/// 2026-07-28: the mirrored HTTP headers do not match the body, or are missing.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the request needs a client capability the client did not declare.
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
/// 2026-07-28: the request's protocol version is not one the server speaks.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// An MCP method, parsed once from the wire. Every method the gateway handles has its
/// own variant, so a new one does not compile until each `match` handles it; anything
/// else a client sends is kept as [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Initialize,
    Ping,
    ToolsList,
    ToolsCall,
    PromptsList,
    PromptsGet,
    ResourcesList,
    ResourcesTemplatesList,
    ResourcesRead,
    ResourcesSubscribe,
    ResourcesUnsubscribe,
    CompletionComplete,
    LoggingSetLevel,
    ServerDiscover,
    NotificationsInitialized,
    NotificationsCancelled,
    NotificationsRootsListChanged,
    SubscriptionsListen,
    Other(String),
}

impl Method {
    /// The known methods and their wire names, in one place.
    const NAMES: [(Method, &'static str); 18] = [
        (Method::Initialize, "initialize"),
        (Method::Ping, "ping"),
        (Method::ToolsList, "tools/list"),
        (Method::ToolsCall, "tools/call"),
        (Method::PromptsList, "prompts/list"),
        (Method::PromptsGet, "prompts/get"),
        (Method::ResourcesList, "resources/list"),
        (Method::ResourcesTemplatesList, "resources/templates/list"),
        (Method::ResourcesRead, "resources/read"),
        (Method::ResourcesSubscribe, "resources/subscribe"),
        (Method::ResourcesUnsubscribe, "resources/unsubscribe"),
        (Method::CompletionComplete, "completion/complete"),
        (Method::LoggingSetLevel, "logging/setLevel"),
        (Method::ServerDiscover, "server/discover"),
        (Method::SubscriptionsListen, "subscriptions/listen"),
        (
            Method::NotificationsInitialized,
            "notifications/initialized",
        ),
        (Method::NotificationsCancelled, "notifications/cancelled"),
        (
            Method::NotificationsRootsListChanged,
            "notifications/roots/list_changed",
        ),
    ];

    pub fn parse(name: &str) -> Method {
        Method::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| Method::Other(name.to_string()))
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(name) => name,
            known => Method::NAMES
                .iter()
                .find(|(m, _)| m == known)
                .map_or("", |(_, n)| n),
        }
    }

    /// Whether a 2026-07-28 server may answer this request with an input-required
    /// result (multi round-trip requests: `tools/call`, `prompts/get`, `resources/read`).
    pub fn may_need_input(&self) -> bool {
        matches!(
            self,
            Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead
        )
    }

    /// A label of bounded cardinality (metrics): a client-chosen name is `"other"`.
    pub fn label(&self) -> &'static str {
        match self {
            Method::Other(_) => "other",
            known => Method::NAMES
                .iter()
                .find(|(m, _)| m == known)
                .map_or("other", |(_, n)| n),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One JSON-RPC message as received from a client or a backend.
#[derive(Debug, Clone)]
pub enum Message {
    Request {
        id: Value,
        method: Method,
        params: Option<Value>,
    },
    Notification {
        method: Method,
        params: Option<Value>,
    },
    /// A result or an error answering an earlier request.
    Response { id: Value, body: Value },
}

/// Why a JSON value is not a JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The id, when one could be read, so the error can answer it.
    pub id: Value,
    pub message: String,
}

impl Message {
    /// Classifies a parsed JSON value, taking ownership to avoid copies.
    pub fn from_value(value: Value) -> Result<Message, Invalid> {
        let Value::Object(mut obj) = value else {
            return Err(Invalid {
                id: Value::Null,
                message: "a JSON-RPC message must be a JSON object".into(),
            });
        };
        let id = obj.remove("id");
        if let Some(id) = &id {
            if !matches!(id, Value::String(_) | Value::Number(_)) {
                return Err(Invalid {
                    id: Value::Null,
                    message: "\"id\" must be a string or a number".into(),
                });
            }
        }
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(Invalid {
                id: id.unwrap_or(Value::Null),
                message: "\"jsonrpc\" must be \"2.0\"".into(),
            });
        }
        match obj.remove("method") {
            Some(Value::String(name)) => {
                let method = Method::parse(&name);
                let params = obj.remove("params");
                if let Some(p) = &params {
                    if !p.is_object() && !p.is_array() {
                        return Err(Invalid {
                            id: id.unwrap_or(Value::Null),
                            message: "\"params\" must be an object".into(),
                        });
                    }
                }
                Ok(match id {
                    Some(id) => Message::Request { id, method, params },
                    None => Message::Notification { method, params },
                })
            }
            Some(_) => Err(Invalid {
                id: id.unwrap_or(Value::Null),
                message: "\"method\" must be a string".into(),
            }),
            None => {
                let Some(id) = id else {
                    return Err(Invalid {
                        id: Value::Null,
                        message: "a message needs a \"method\" or an \"id\"".into(),
                    });
                };
                if !obj.contains_key("result") && !obj.contains_key("error") {
                    return Err(Invalid {
                        id,
                        message: "a response needs a \"result\" or an \"error\"".into(),
                    });
                }
                obj.insert("id".into(), id.clone());
                Ok(Message::Response {
                    id,
                    body: Value::Object(obj),
                })
            }
        }
    }

    /// Serializes back to a JSON value.
    pub fn into_value(self) -> Value {
        match self {
            Message::Request { id, method, params } => {
                let mut v = json!({"jsonrpc": "2.0", "id": id, "method": method.as_str()});
                if let Some(p) = params {
                    v["params"] = p;
                }
                v
            }
            Message::Notification { method, params } => {
                let mut v = json!({"jsonrpc": "2.0", "method": method.as_str()});
                if let Some(p) = params {
                    v["params"] = p;
                }
                v
            }
            Message::Response { body, .. } => body,
        }
    }
}

/// Builds a JSON-RPC error response.
pub fn error(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// Builds a JSON-RPC error response with `data`.
pub fn error_with_data(id: &Value, code: i64, message: impl Into<String>, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id,
           "error": {"code": code, "message": message.into(), "data": data}})
}

/// Builds a JSON-RPC success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        let m = Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap();
        assert!(matches!(m, Message::Request { ref method, .. } if method.as_str() == "ping"));
        let m = Message::from_value(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .unwrap();
        assert!(matches!(m, Message::Notification { .. }));
        let m = Message::from_value(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap();
        assert!(matches!(m, Message::Response { .. }));
    }

    #[test]
    fn rejects_bad_shapes_with_reasons() {
        assert!(Message::from_value(json!([1])).is_err());
        assert!(Message::from_value(json!({"jsonrpc":"1.0","id":1,"method":"x"})).is_err());
        let e = Message::from_value(json!({"jsonrpc":"2.0","id":7})).unwrap_err();
        assert_eq!(e.id, json!(7));
        assert!(Message::from_value(json!({"jsonrpc":"2.0","id":{},"method":"x"})).is_err());
        assert!(Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":3})).is_err());
    }

    #[test]
    fn round_trips() {
        let v = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}});
        assert_eq!(Message::from_value(v.clone()).unwrap().into_value(), v);
    }
}

#[cfg(test)]
mod proptests;
