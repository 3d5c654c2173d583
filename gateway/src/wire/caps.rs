//! Capability bits of a backend, as learnt from its `initialize` result: what it can
//! be asked (tools, prompts, resources, logging, completions) and what it announces.

use serde::{Deserialize, Serialize};

/// A set of capability bits. A newtype, so that it cannot be mixed up with any other
/// integer; sealed into session ids as its number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Caps(pub u16);

impl Caps {
    pub const TOOLS: Caps = Caps(1);
    pub const PROMPTS: Caps = Caps(2);
    pub const RESOURCES: Caps = Caps(4);
    pub const LOGGING: Caps = Caps(8);
    pub const COMPLETIONS: Caps = Caps(16);
    pub const RESOURCES_SUBSCRIBE: Caps = Caps(32);
    pub const TOOLS_LIST_CHANGED: Caps = Caps(64);
    pub const PROMPTS_LIST_CHANGED: Caps = Caps(128);
    pub const RESOURCES_LIST_CHANGED: Caps = Caps(256);

    /// Whether every bit of `other` is set here.
    pub fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set (a backend not heard from yet).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Caps {
    type Output = Caps;
    fn bitor(self, rhs: Caps) -> Caps {
        Caps(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Caps {
    fn bitor_assign(&mut self, rhs: Caps) {
        self.0 |= rhs.0;
    }
}

/// Reads the bits from a `ServerCapabilities` object.
pub fn from_json(c: &serde_json::Value) -> Caps {
    let mut bits = 0;
    let has = |k: &str| c.get(k).is_some_and(|v| !v.is_null());
    let flag =
        |k: &str, f: &str| c.get(k).and_then(|v| v.get(f)).and_then(|v| v.as_bool()) == Some(true);
    if has("tools") {
        bits |= Caps::TOOLS.0;
    }
    if has("prompts") {
        bits |= Caps::PROMPTS.0;
    }
    if has("resources") {
        bits |= Caps::RESOURCES.0;
    }
    if has("logging") {
        bits |= Caps::LOGGING.0;
    }
    if has("completions") {
        bits |= Caps::COMPLETIONS.0;
    }
    if flag("resources", "subscribe") {
        bits |= Caps::RESOURCES_SUBSCRIBE.0;
    }
    if flag("tools", "listChanged") {
        bits |= Caps::TOOLS_LIST_CHANGED.0;
    }
    if flag("prompts", "listChanged") {
        bits |= Caps::PROMPTS_LIST_CHANGED.0;
    }
    if flag("resources", "listChanged") {
        bits |= Caps::RESOURCES_LIST_CHANGED.0;
    }
    Caps(bits)
}

/// Builds a `ServerCapabilities` object from the union of bits.
pub fn to_json(caps: Caps) -> serde_json::Value {
    let bits = caps.0;
    use serde_json::json;
    let mut c = serde_json::Map::new();
    if bits & Caps::TOOLS.0 != 0 {
        c.insert(
            "tools".into(),
            json!({"listChanged": bits & Caps::TOOLS_LIST_CHANGED.0 != 0}),
        );
    }
    if bits & Caps::PROMPTS.0 != 0 {
        c.insert(
            "prompts".into(),
            json!({"listChanged": bits & Caps::PROMPTS_LIST_CHANGED.0 != 0}),
        );
    }
    if bits & Caps::RESOURCES.0 != 0 {
        c.insert(
            "resources".into(),
            json!({"subscribe": bits & Caps::RESOURCES_SUBSCRIBE.0 != 0,
                   "listChanged": bits & Caps::RESOURCES_LIST_CHANGED.0 != 0}),
        );
    }
    if bits & Caps::LOGGING.0 != 0 {
        c.insert("logging".into(), json!({}));
    }
    if bits & Caps::COMPLETIONS.0 != 0 {
        c.insert("completions".into(), json!({}));
    }
    serde_json::Value::Object(c)
}
