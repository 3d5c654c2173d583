//! Capability bits of a backend, as learnt from its `initialize` result: what it can
//! be asked (tools, prompts, resources, logging, completions) and what it announces.

pub const TOOLS: u16 = 1;
pub const PROMPTS: u16 = 2;
pub const RESOURCES: u16 = 4;
pub const LOGGING: u16 = 8;
pub const COMPLETIONS: u16 = 16;
pub const RESOURCES_SUBSCRIBE: u16 = 32;
pub const TOOLS_LIST_CHANGED: u16 = 64;
pub const PROMPTS_LIST_CHANGED: u16 = 128;
pub const RESOURCES_LIST_CHANGED: u16 = 256;

/// Reads the bits from a `ServerCapabilities` object.
pub fn from_json(c: &serde_json::Value) -> u16 {
    let mut bits = 0;
    let has = |k: &str| c.get(k).is_some_and(|v| !v.is_null());
    let flag =
        |k: &str, f: &str| c.get(k).and_then(|v| v.get(f)).and_then(|v| v.as_bool()) == Some(true);
    if has("tools") {
        bits |= TOOLS;
    }
    if has("prompts") {
        bits |= PROMPTS;
    }
    if has("resources") {
        bits |= RESOURCES;
    }
    if has("logging") {
        bits |= LOGGING;
    }
    if has("completions") {
        bits |= COMPLETIONS;
    }
    if flag("resources", "subscribe") {
        bits |= RESOURCES_SUBSCRIBE;
    }
    if flag("tools", "listChanged") {
        bits |= TOOLS_LIST_CHANGED;
    }
    if flag("prompts", "listChanged") {
        bits |= PROMPTS_LIST_CHANGED;
    }
    if flag("resources", "listChanged") {
        bits |= RESOURCES_LIST_CHANGED;
    }
    bits
}

/// Builds a `ServerCapabilities` object from the union of bits.
pub fn to_json(bits: u16) -> serde_json::Value {
    use serde_json::json;
    let mut c = serde_json::Map::new();
    if bits & TOOLS != 0 {
        c.insert(
            "tools".into(),
            json!({"listChanged": bits & TOOLS_LIST_CHANGED != 0}),
        );
    }
    if bits & PROMPTS != 0 {
        c.insert(
            "prompts".into(),
            json!({"listChanged": bits & PROMPTS_LIST_CHANGED != 0}),
        );
    }
    if bits & RESOURCES != 0 {
        c.insert(
            "resources".into(),
            json!({"subscribe": bits & RESOURCES_SUBSCRIBE != 0,
                   "listChanged": bits & RESOURCES_LIST_CHANGED != 0}),
        );
    }
    if bits & LOGGING != 0 {
        c.insert("logging".into(), json!({}));
    }
    if bits & COMPLETIONS != 0 {
        c.insert("completions".into(), json!({}));
    }
    serde_json::Value::Object(c)
}
