//! The plain reading says what the parsing path says, or nothing: tables of the answers
//! it takes and leaves, and properties over any result in every order servers write.

use proptest::prelude::{Just, Strategy};
use serde_json::{json, Value};

use super::super::{Method, Shape};
use super::{EraKeys, Plain};
use crate::proptest_support::arb_json;

/// The splice by bytes says exactly what the splice says, and takes the answers
/// most servers write; anything that could hide a second id, error or method, or an
/// era's key, is left to the splice.
#[test]
fn the_plain_splice_is_the_splice_or_nothing() {
    let id = json!("client-7");
    let taken = [
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"content":[{"type":"text","text":"hi"}]}}"#,
        r#"{"jsonrpc":"2.0","id":12,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":-3,"result":{ }}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"contents":[],"text":"idle"}}"#,
        // Names sorted; TypeScript's order.
        r#"{"id":"gw-1","jsonrpc":"2.0","result":{"content":[]}}"#,
        r#"{"id":4,"jsonrpc":"2.0","result":{}}"#,
        r#"{"result":{"content":[{"type":"text","text":"}"}]},"jsonrpc":"2.0","id":"gw-1"}"#,
        r#"{"result":{},"jsonrpc":"2.0","id":9}"#,
        // Strings and gaps longer than the ones looked at byte by byte.
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"text":"0123456789012345678901234567890123456789","type":"text"}],                                        "isError":false}}"#,
    ];
    let left = [
        // Other orders, an error, a result that is no object, an id that is no
        // plain string or integer.
        r#"{"jsonrpc":"2.0","result":{},"id":"gw-1"}"#,
        r#"{"result":{},"id":"gw-1","jsonrpc":"2.0"}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","error":{"code":1,"message":"m"}}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":[1]}"#,
        r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1.5,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":-,"result":{}}"#,
        // A second id, error or method after the result; an era's key in it.
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{},"id":"gw-2"}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{},"error":{}}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{},"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"resultType":"input_required"}}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"a":{"ttlMs":1}}}"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"text":"0123456789012345678901234567890123456789","cacheScope":1}}"#,
        r#"{"id":"gw-1","jsonrpc":"2.0","result":{},"id":"gw-2"}"#,
        r#"{"result":{"id":1},"jsonrpc":"2.0","id":"gw-1"}"#,
        r#"{"result":{},"error":{},"jsonrpc":"2.0","id":"gw-1"}"#,
        // Not one id at the end.
        r#"{"result":{},"jsonrpc":"2.0","id":"gw-1","x":1}"#,
        r#"{"result":{},"jsonrpc":"2.0","id":"gw-1"}}"#,
        r#"{"result":{},"jsonrpc":"2.0","id":1.5}"#,
        // Anything escaped (a key could be spelt with escapes), in the id too.
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"result\u0054ype":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":"x\","result":{","result":{"a":1}}"#,
        // Not one whole answer.
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"a":1"#,
        r#"{"jsonrpc":"2.0","id":"gw-1","result":{"a":"1}"#,
    ];
    for method in [Method::ToolsCall, Method::ResourcesRead] {
        for private in [false, true] {
            let shape = Shape {
                log: false,
                private,
            };
            for body in taken {
                let plain = shape.splice_plain(body.as_bytes(), &id, &method);
                assert_eq!(plain, shape.splice(body.as_bytes(), &id, &method), "{body}");
                assert!(plain.is_some(), "{body}");
            }
            for body in left {
                let plain = shape.splice_plain(body.as_bytes(), &id, &method);
                assert_eq!(plain, None, "{body}");
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(crate::proptest_support::config(256))]
    /// For any result and any members beside it, in the orders servers write an
    /// answer's members, the splice by bytes says what the parsing path says (the
    /// splice's very bytes when nothing follows the result), or leaves the answer to them.
    #[test]
    fn the_plain_splice_never_differs_from_the_splice(
        upstream in proptest::prop_oneof![
            (0u32..100).prop_map(|n| json!(format!("gw-{n}"))),
            (-5i64..100).prop_map(|n| json!(n)),
        ],
        result in arb_result(),
        after in proptest::collection::vec((arb_name(), arb_json()), 0..2),
        read in proptest::bool::ANY,
        order in 0..3u8,
    ) {
        let only_result = after.is_empty();
        let body = answer(order, &upstream, &result, after);
        let method = if read { Method::ResourcesRead } else { Method::ToolsCall };
        let shape = Shape { log: false, private: true };
        let id = json!(1);
        if let Some(plain) = shape.splice_plain(body.as_bytes(), &id, &method) {
            let parsed = shape.reparse(body.clone().into_bytes().into(), &id, &method);
            let a: Value = serde_json::from_slice(&plain).unwrap_or_default();
            let b: Value = serde_json::from_slice(&parsed).unwrap_or_default();
            proptest::prop_assert_eq!(a, b);
            if only_result {
                proptest::prop_assert_eq!(Some(plain), shape.splice(body.as_bytes(), &id, &method));
            }
        }
    }
}

/// Member names, the ones the splice reads among them.
fn arb_name() -> impl Strategy<Value = String> {
    proptest::prop_oneof![
        proptest::sample::select(vec![
            "id",
            "error",
            "method",
            "result",
            "jsonrpc",
            "resultType",
            "ttlMs",
            "cacheScope",
            "content",
            "text",
        ])
        .prop_map(str::to_string),
        proptest::prelude::any::<String>(),
    ]
}

/// A result: an object whose names are often the splice's, or any value.
fn arb_result() -> impl Strategy<Value = Value> {
    proptest::prop_oneof![
        proptest::collection::vec((arb_name(), arb_json()), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        arb_json(),
        Just(json!({})),
    ]
}

/// The answers servers write are read, in each order; the era's keys are found at the
/// result's top level only.
#[test]
fn plain_answers_are_read_in_the_orders_servers_write() {
    let long = format!(
        r#"{{"jsonrpc":"2.0","id":2,"result":{{"content":[{{"text":"{}","type":"text"}}],{}"resultType":"complete"}}}}"#,
        "a{b}".repeat(20),
        " ".repeat(40),
    );
    let cases: [(&str, &str, Option<EraKeys>); 6] = [
        // Strings and gaps longer than the ones looked at byte by byte.
        (
            &long,
            "2",
            Some(EraKeys {
                result_type: Some(br#""complete""#),
                ..EraKeys::default()
            }),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"resultType":"complete"}}"#,
            "7",
            Some(EraKeys {
                result_type: Some(br#""complete""#),
                ..EraKeys::default()
            }),
        ),
        (
            r#"{"id":"a-1","jsonrpc":"2.0","result":{"content":[{"resultType":"x","t":"{"}],"ttlMs": 5 ,"cacheScope":"public"}}"#,
            r#""a-1""#,
            Some(EraKeys {
                ttl_ms: Some(b"5"),
                cache_scope: Some(br#""public""#),
                ..EraKeys::default()
            }),
        ),
        (
            r#"{"result":{"resultType":"input_required","inputRequests":{"a":{}}},"jsonrpc":"2.0","id":-3}"#,
            "-3",
            Some(EraKeys {
                result_type: Some(br#""input_required""#),
                ..EraKeys::default()
            }),
        ),
        // Read, but no era's keys said: an object under one, a key twice.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":{"a":1}}}"#,
            "1",
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"ttlMs":1,"ttlMs":2}}"#,
            "1",
            None,
        ),
    ];
    for (body, id, keys) in cases {
        let plain = Plain::read(body.as_bytes()).unwrap_or_else(|| panic!("not read: {body}"));
        assert_eq!(plain.id, id.as_bytes(), "{body}");
        assert_eq!(plain.era_keys(), keys, "{body}");
    }
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"result":{},"method":"x"}"#,
        r#"{"result":{},"x":{},"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete"}}}"#,
    ] {
        let keys = Plain::read(body.as_bytes()).and_then(|p| p.era_keys());
        assert_eq!(keys, None, "{body}");
    }
}

proptest::proptest! {
    #![proptest_config(crate::proptest_support::config(256))]
    /// For any answer in the orders servers write, with the era's keys anywhere in its
    /// result, the plain reading of whether it is this era's answer as it is says what
    /// the parsing path says, whenever it says anything.
    #[test]
    fn the_plain_reading_never_differs_from_the_parsed_one(
        upstream in proptest::prop_oneof![Just(json!(7)), Just(json!("7")), Just(json!("gw-1"))],
        result in arb_era_result(),
        after in proptest::collection::vec((arb_name(), arb_json()), 0..2),
        read in proptest::bool::ANY,
        order in 0..3u8,
    ) {
        let body = answer(order, &upstream, &result, after);
        let method = if read { Method::ResourcesRead } else { Method::ToolsCall };
        let ours = b"7";
        if let Some(p) = Plain::read(body.as_bytes()) {
            if let Some(keys) = p.era_keys() {
                let plain = p.id == ours && keys.complete_for(&method);
                proptest::prop_assert_eq!(plain, Shape::shaped_parsed(body.as_bytes(), ours, &method));
            }
        }
    }
}

/// An answer with `result` and `after`'s members in one of the orders servers write.
fn answer(order: u8, upstream: &Value, result: &Value, after: Vec<(String, Value)>) -> String {
    let mut body = match order {
        0 => format!(r#"{{"jsonrpc":"2.0","id":{upstream},"result":{result}"#),
        1 => format!(r#"{{"id":{upstream},"jsonrpc":"2.0","result":{result}"#),
        _ => format!(r#"{{"result":{result}"#),
    };
    for (k, v) in after {
        body.push_str(&format!(",{}:{v}", json!(k)));
    }
    if order == 2 {
        body.push_str(&format!(r#","jsonrpc":"2.0","id":{upstream}"#));
    }
    body.push('}');
    body
}

/// A result whose era's keys are often there, at its top level or deeper, with the
/// values they have and others.
fn arb_era_result() -> impl Strategy<Value = Value> {
    let value = proptest::prop_oneof![
        Just(json!("complete")),
        Just(json!("input_required")),
        Just(json!(0)),
        Just(json!("private")),
        arb_json(),
    ];
    let member = (arb_name(), value);
    proptest::collection::vec(member, 0..5).prop_flat_map(|kv| {
        let object = Value::Object(kv.into_iter().collect());
        proptest::prop_oneof![
            Just(object.clone()),
            Just(json!({"content": [object.clone()], "resultType": "complete"})),
            Just(json!({"structuredContent": object})),
        ]
    })
}
