//! Property tests of JSON-RPC classification ([`Message::from_value`] and
//! [`Message::into_value`]), reached the way the handler reaches them: bytes parsed by
//! serde_json, an array taken as a batch, each item classified.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::Message;
use crate::proptest_support::{arb_json, arb_number, config};

/// What the handler does with a POST body, minus the answering: `Err` for bytes that are
/// not JSON, otherwise one classification per message.
fn classify_body(body: &[u8]) -> Result<Vec<Result<Message, super::Invalid>>, serde_json::Error> {
    Ok(match serde_json::from_slice::<Value>(body)? {
        Value::Array(items) => items.into_iter().map(Message::from_value).collect(),
        other => vec![Message::from_value(other)],
    })
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Request { .. } => "request",
        Message::Notification { .. } => "notification",
        Message::Response { .. } => "response",
    }
}

fn arb_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        arb_number().prop_map(Value::Number),
    ]
}

fn arb_params() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![
        prop::collection::vec(arb_json(), 0..4).prop_map(Value::Array),
        prop::collection::btree_map(any::<String>(), arb_json(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ])
}

fn with_params(mut v: Value, params: Option<Value>) -> Value {
    if let Some(p) = params {
        v["params"] = p;
    }
    v
}

/// One well-formed message and the kind it must be classified as.
fn arb_message() -> impl Strategy<Value = (Value, &'static str)> {
    prop_oneof![
        (arb_id(), any::<String>(), arb_params()).prop_map(|(id, method, params)| (
            with_params(
                json!({"jsonrpc": "2.0", "id": id, "method": method}),
                params
            ),
            "request"
        )),
        (any::<String>(), arb_params()).prop_map(|(method, params)| (
            with_params(json!({"jsonrpc": "2.0", "method": method}), params),
            "notification"
        )),
        (arb_id(), arb_json()).prop_map(|(id, result)| (
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
            "response"
        )),
        (
            arb_id(),
            any::<i64>(),
            any::<String>(),
            prop::option::of(arb_json())
        )
            .prop_map(|(id, code, message, data)| {
                let mut error = json!({"code": code, "message": message});
                if let Some(d) = data {
                    error["data"] = d;
                }
                (
                    json!({"jsonrpc": "2.0", "id": id, "error": error}),
                    "response",
                )
            }),
    ]
}

/// Objects that look like messages, each field present or not, right or wrong, so that
/// every branch of the classifier is reached.
fn arb_message_like() -> impl Strategy<Value = Value> {
    let field = |good: BoxedStrategy<Value>| prop::option::of(prop_oneof![good, arb_json()]);
    (
        field(Just(json!("2.0")).boxed()),
        field(arb_id().boxed()),
        field(any::<String>().prop_map(Value::String).boxed()),
        field(arb_params().prop_map(|p| p.unwrap_or(Value::Null)).boxed()),
        field(arb_json().boxed()),
        field(arb_json().boxed()),
    )
        .prop_map(|(jsonrpc, id, method, params, result, error)| {
            let mut obj = serde_json::Map::new();
            for (k, v) in [
                ("jsonrpc", jsonrpc),
                ("id", id),
                ("method", method),
                ("params", params),
                ("result", result),
                ("error", error),
            ] {
                if let Some(v) = v {
                    obj.insert(k.into(), v);
                }
            }
            Value::Object(obj)
        })
}

/// Bytes near JSON: serialized values with one byte changed or cut short, or raw bytes.
fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            arb_json(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(v, at, byte, cut)| {
                let mut b = serde_json::to_vec(&v).unwrap_or_default();
                if !b.is_empty() {
                    let i = at.index(b.len());
                    if cut {
                        b.truncate(i);
                    } else {
                        b[i] = byte;
                    }
                }
                b
            }),
    ]
}

/// Facts that hold for every classification: the error always carries an id that can
/// be answered, and a classified message re-classifies to itself.
fn check_classification(
    input: &Value,
    out: Result<Message, super::Invalid>,
) -> Result<(), TestCaseError> {
    match out {
        Err(e) => prop_assert!(
            matches!(e.id, Value::Null | Value::String(_) | Value::Number(_)),
            "error id {:?} cannot be echoed",
            e.id
        ),
        Ok(m) => {
            prop_assert_eq!(input.get("jsonrpc"), Some(&json!("2.0")));
            let k = kind(&m);
            let once = m.into_value();
            let again = Message::from_value(once.clone());
            prop_assert!(again.is_ok(), "{:?} re-classified as {:?}", once, again);
            let again = again.map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(kind(&again), k);
            prop_assert_eq!(again.into_value(), once);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in arb_body()) {
        let _ = classify_body(&body);
    }

    #[test]
    fn arbitrary_values_classify_consistently(v in prop_oneof![arb_json(), arb_message_like()]) {
        let out = Message::from_value(v.clone());
        check_classification(&v, out)?;
    }

    #[test]
    fn well_formed_messages_round_trip((v, expected) in arb_message()) {
        let m = Message::from_value(v.clone());
        prop_assert!(m.is_ok(), "{:?} refused: {:?}", v, m);
        let m = m.map_err(|e| TestCaseError::fail(e.message))?;
        prop_assert_eq!(kind(&m), expected);
        prop_assert_eq!(m.into_value(), v);
    }

    #[test]
    fn well_formed_batches_round_trip_through_bytes(
        batch in prop::collection::vec(arb_message(), 1..8)
    ) {
        let values: Vec<Value> = batch.iter().map(|(v, _)| v.clone()).collect();
        let body = serde_json::to_vec(&Value::Array(values.clone()))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed = classify_body(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.len(), batch.len());
        for ((m, (v, expected)), original) in parsed.into_iter().zip(&batch).zip(&values) {
            prop_assert_eq!(v, original);
            let m = m.map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(kind(&m), *expected);
            prop_assert_eq!(&m.into_value(), original);
        }
    }
}
