//! Building HTTP responses: JSON bodies, JSON-RPC errors, SSE replies.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use serde_json::{Map, Value};

use crate::mock::jsonrpc::{self, RpcError, TRANSPORT_ERROR};
use crate::mock::sse::HttpBody;

pub fn full(bytes: impl Into<Bytes>) -> HttpBody {
    Full::new(bytes.into()).boxed_unsync()
}

pub fn empty() -> HttpBody {
    Empty::<Bytes>::new().boxed_unsync()
}

pub fn with_status(status: StatusCode, body: HttpBody) -> Response<HttpBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

pub fn json_response(status: StatusCode, value: &Value) -> Response<HttpBody> {
    let mut resp = with_status(status, full(value.to_string()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn rpc_error(status: StatusCode, id: &Value, error: RpcError) -> Response<HttpBody> {
    json_response(status, &jsonrpc::error_response(id, &error))
}

pub fn transport_error(
    status: StatusCode,
    id: &Value,
    message: impl Into<String>,
) -> Response<HttpBody> {
    rpc_error(status, id, RpcError::new(TRANSPORT_ERROR, message))
}

/// An early answer that ends request handling (boxed: responses are large).
pub type Rejection = Box<Response<HttpBody>>;

pub fn sse_response(body: HttpBody) -> Response<HttpBody> {
    let mut resp = with_status(StatusCode::OK, body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Request headers as a JSON object (lowercase names; repeated headers joined by ", ").
pub fn headers_json(headers: &HeaderMap) -> Map<String, Value> {
    let mut map = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        map.insert(name.as_str().to_string(), Value::String(values.join(", ")));
    }
    map
}

pub fn method_not_allowed(allow: &'static str) -> Response<HttpBody> {
    let mut resp = transport_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &Value::Null,
        "Method Not Allowed",
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}
