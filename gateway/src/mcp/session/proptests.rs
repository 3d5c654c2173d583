//! Property tests of sealed session ids: any claims come back from a token sealed under
//! the same key; a token with any one bit flipped, or sealed under another key, is
//! refused; and nothing a client sends makes `open` panic or accept it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use std::sync::OnceLock;

use super::{Sealer, SessionClaims, UpstreamSession, PREFIX};
use crate::proptest_support::{arb_json, config};

fn arb_claims() -> impl Strategy<Value = SessionClaims> {
    let upstream = (
        prop::option::of(any::<String>()),
        any::<String>(),
        any::<u16>(),
    )
        .prop_map(|(id, version, caps)| UpstreamSession {
            id,
            version,
            caps: crate::wire::caps::Caps(caps),
        });
    (
        any::<String>(),
        any::<String>(),
        any::<u64>(),
        any::<String>(),
        arb_json(),
        arb_json(),
        prop::collection::btree_map(any::<String>(), upstream, 0..4),
    )
        .prop_map(|(sid, sub, iat, v, caps, info, up)| SessionClaims {
            sid,
            sub,
            iat,
            v,
            caps,
            info,
            up,
            stamped: Default::default(),
        })
}

/// Small claims, so that flipping every bit of a token stays fast.
fn small_claims() -> SessionClaims {
    SessionClaims::new(
        "alice".into(),
        "2025-11-25".into(),
        serde_json::json!({}),
        serde_json::json!({"name": "t"}),
    )
}

/// `token` with bit `bit` flipped, when that is still a string.
fn flip(token: &str, bit: usize) -> Option<String> {
    let mut bytes = token.as_bytes().to_vec();
    bytes[bit / 8] ^= 1 << (bit % 8);
    String::from_utf8(bytes).ok()
}

/// `token` with bit `bit` of its decoded body (nonce, ciphertext, tag) flipped.
fn flip_sealed(token: &str, bit: usize) -> Option<String> {
    let mut raw = URL_SAFE_NO_PAD.decode(token.strip_prefix(PREFIX)?).ok()?;
    let bit = bit % (raw.len() * 8);
    raw[bit / 8] ^= 1 << (bit % 8);
    Some(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
}

/// What a client might send as a session id: anything, the prefix with any base64 body,
/// or a real token cut short or lengthened.
fn arb_token() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..160)
            .prop_map(|b| format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(b))),
        (any::<prop::sample::Index>(), ".{0,8}").prop_map(|(cut, tail)| {
            let t = the_token();
            let mut cut_at = cut.index(t.len() + 1);
            while !t.is_char_boundary(cut_at) {
                cut_at -= 1;
            }
            format!("{}{tail}", &t[..cut_at])
        }),
    ]
}

/// One token sealed under `[7; 32]`, the same on every call.
fn the_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| Sealer::new(&[7; 32]).seal(&small_claims()))
}

#[test]
fn every_single_bit_flip_of_a_token_is_refused() {
    let sealer = Sealer::new(&[7; 32]);
    // Three lengths of claims, so that the last base64 character carries 0, 2 and 4
    // unused bits in one token or another.
    for sub in ["a", "ab", "abc"] {
        let mut claims = small_claims();
        claims.sub = sub.into();
        let token = sealer.seal(&claims);
        assert!(sealer.open(&token).is_some());
        for bit in 0..token.len() * 8 {
            if let Some(t) = flip(&token, bit) {
                assert_eq!(sealer.open(&t), None, "bit {bit} flipped: {t}");
            }
            if let Some(t) = flip_sealed(&token, bit) {
                assert_eq!(sealer.open(&t), None, "sealed bit {bit} flipped: {t}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn sealed_claims_open_to_themselves(claims in arb_claims(), key in any::<[u8; 32]>()) {
        let sealer = Sealer::new(&key);
        let token = sealer.seal(&claims);
        prop_assert!(token.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{}", token);
        prop_assert_eq!(sealer.open(&token), Some(claims));
    }

    #[test]
    fn a_flipped_bit_is_refused(
        claims in arb_claims(),
        key in any::<[u8; 32]>(),
        at in any::<prop::sample::Index>(),
        in_last_char in any::<bool>(),
    ) {
        let sealer = Sealer::new(&key);
        let token = sealer.seal(&claims);
        // Half the time in the last character, whose low bits may be unused by base64.
        let bit = if in_last_char {
            (token.len() - 1) * 8 + at.index(8)
        } else {
            at.index(token.len() * 8)
        };
        if let Some(t) = flip(&token, bit) {
            prop_assert_eq!(sealer.open(&t), None, "bit {} flipped", bit);
        }
        if let Some(t) = flip_sealed(&token, bit) {
            prop_assert_eq!(sealer.open(&t), None, "sealed bit {} flipped", bit);
        }
    }

    #[test]
    fn a_token_sealed_under_another_key_is_refused(
        claims in arb_claims(),
        key in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
    ) {
        prop_assume!(key != other);
        let token = Sealer::new(&key).seal(&claims);
        prop_assert_eq!(Sealer::new(&other).open(&token), None);
    }

    #[test]
    fn anything_else_is_refused_without_panicking(token in arb_token()) {
        prop_assume!(token != the_token());
        prop_assert_eq!(Sealer::new(&[7; 32]).open(&token), None);
    }
}
