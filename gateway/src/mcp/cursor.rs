//! Gateway pagination cursors: the cursor of every backend that has more, in one opaque
//! string, so a later page asks each backend for its own next page.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Backend name → that backend's `nextCursor`.
pub type Cursors = BTreeMap<String, String>;

pub fn encode(c: &Cursors) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

pub fn decode(s: &str) -> Option<Cursors> {
    if s.len() > 64 * 1024 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(s).ok()?;
    serde_json::from_slice(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut c = Cursors::new();
        c.insert("a".into(), "page2".into());
        assert_eq!(decode(&encode(&c)), Some(c));
        assert_eq!(decode("!!"), None);
        assert_eq!(decode("bm90IGpzb24"), None);
    }
}

#[cfg(test)]
mod proptests;
