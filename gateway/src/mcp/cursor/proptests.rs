//! Property tests of gateway cursors: any set of backend cursors comes back from its
//! encoding, and a string from a client is accepted exactly when it is a well-formed
//! cursor (unpadded URL-safe base64 of a JSON object of strings, at most 64 KiB), without
//! ever panicking.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::Value;

use super::{decode, encode, Cursors};
use crate::proptest_support::{arb_json, config};

fn arb_cursors() -> impl Strategy<Value = Cursors> {
    prop::collection::btree_map(any::<String>(), any::<String>(), 0..6)
}

/// The definition of a well-formed cursor, written independently of `decode`.
fn well_formed(s: &str) -> bool {
    if s.len() > 64 * 1024 {
        return false;
    }
    let Ok(raw) = URL_SAFE_NO_PAD.decode(s) else {
        return false;
    };
    match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(o)) => o.values().all(Value::is_string),
        _ => false,
    }
}

/// Strings a client might send: anything, base64 of anything or of any JSON, and real
/// cursors with one character changed, cut short or lengthened.
fn arb_cursor_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        arb_json().prop_map(|v| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap_or_default())),
        (
            arb_cursors(),
            any::<prop::sample::Index>(),
            prop::sample::select(vec!["", "A", "-", "_", "=", "+", "/", " ", "é"]),
            any::<bool>(),
        )
            .prop_map(|(c, at, with, replace)| {
                let mut s = encode(&c);
                let i = at.index(s.len() + 1);
                if replace && i < s.len() {
                    s.replace_range(i..=i, with);
                } else {
                    s.insert_str(i, with);
                }
                s
            }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn cursors_round_trip(c in arb_cursors()) {
        let s = encode(&c);
        prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{}", s);
        prop_assert_eq!(decode(&s), Some(c));
    }

    #[test]
    fn only_well_formed_cursors_are_accepted(s in arb_cursor_string()) {
        let decoded = decode(&s);
        prop_assert_eq!(decoded.is_some(), well_formed(&s), "{:?} gave {:?}", s, decoded);
        if let Some(c) = decoded {
            prop_assert_eq!(decode(&encode(&c)), Some(c));
        }
    }
}

#[test]
fn an_over_long_cursor_is_refused() {
    let mut c = Cursors::new();
    c.insert("a".into(), "x".repeat(64 * 1024));
    assert_eq!(decode(&encode(&c)), None);
}
