//! The answer servers write, read by its bytes: `{"jsonrpc":"2.0","id":…,"result":{…}}`,
//! its members in one of the orders the SDKs write them, nothing escaped, a plain id.
//!
//! Why: every modern client's call comes back through [`super::Shape`], and most answers
//! are of this one form. For it, finding the result's members, the strings among them and
//! the era's keys at the result's top level is one pass over the bytes (~1,000
//! instructions for a small answer); reading it with serde cost 3,500 to 5,000, the
//! largest single part of what the era added to a call. Anything else is `None` here, and
//! the parsing path, which says the same, takes it.

/// A plain answer's parts.
#[derive(Debug)]
pub(super) struct Plain<'a> {
    /// The id as written: a string with nothing escaped, or an integer.
    pub id: &'a [u8],
    /// What follows the result's `{`: through the answer's end, or through the result's
    /// `}` when the answer's other members follow the result (then [`Plain::close`] is
    /// `}`).
    pub members: &'a [u8],
    /// What closes the answer after [`Plain::members`].
    pub close: &'static [u8],
}

/// The era's keys at a result's top level, each value as written.
#[derive(Debug, Default, PartialEq)]
pub(super) struct EraKeys<'a> {
    pub result_type: Option<&'a [u8]>,
    pub ttl_ms: Option<&'a [u8]>,
    pub cache_scope: Option<&'a [u8]>,
}

impl<'a> Plain<'a> {
    /// The answer in `body` when it is a plain one, in any of the orders servers write
    /// its members: `jsonrpc`, `id`, `result` (Python's and Rust's SDKs); `id`,
    /// `jsonrpc`, `result` (names sorted, as Go's maps and `serde_json`'s default maps
    /// write them); `result`, `jsonrpc`, `id` (TypeScript's SDK).
    pub fn read(body: &'a [u8]) -> Option<Plain<'a>> {
        const JSONRPC: &[u8] = br#""jsonrpc":"2.0""#;
        const ID: &[u8] = br#""id":"#;
        const RESULT: &[u8] = br#""result":{"#;
        const TAIL: &[u8] = br#"},"jsonrpc":"2.0","id":"#;
        let body = body.trim_ascii();
        if memchr::memchr(b'\\', body).is_some() || !body.ends_with(b"}") {
            return None;
        }
        let inner = body.strip_prefix(b"{")?;
        if let Some(members) = inner.strip_prefix(RESULT) {
            let at = memchr::memmem::rfind(members, TAIL)?;
            let id = &members[at + TAIL.len()..members.len() - 1];
            return (plain_id_len(id)? == id.len()).then_some(Plain {
                id,
                members: &members[..=at],
                close: b"}",
            });
        }
        let (id, before_result) = match inner.strip_prefix(JSONRPC) {
            Some(t) => {
                let t = t.strip_prefix(b",")?.strip_prefix(ID)?;
                t.split_at(plain_id_len(t)?)
            }
            None => {
                let t = inner.strip_prefix(ID)?;
                let (id, t) = t.split_at(plain_id_len(t)?);
                (id, t.strip_prefix(b",")?.strip_prefix(JSONRPC)?)
            }
        };
        Some(Plain {
            id,
            members: before_result.strip_prefix(b",")?.strip_prefix(RESULT)?,
            close: b"",
        })
    }

    /// Whether no string after the result's `{` is one of `names`: with nothing
    /// escaped, every other quote opens a string, so each pair is one string.
    pub fn names_none_of(&self, names: &[&[u8]]) -> bool {
        let m = self.members;
        let mut i = 0;
        while let Some(open) = find(m, i, |b| b == b'"', |t| memchr::memchr(b'"', t)) {
            let Some(close) = string_end(m, open) else {
                return false;
            };
            if names.contains(&&m[open + 1..close]) {
                return false;
            }
            i = close + 1;
        }
        true
    }

    /// The era's keys among the result's own members, when the result is an object
    /// whose keys' values are scalars and it is the answer's last member. `None` for
    /// anything else (a key twice, an era's key holding an object, members after the
    /// result, an answer cut short).
    pub fn era_keys(&self) -> Option<EraKeys<'a>> {
        let m = self.members;
        let mut keys = EraKeys::default();
        // Braces outside strings: in JSON a key (a string followed by `:`) is always an
        // object's, so the depth of objects alone says whose key it is.
        let mut depth = 0usize;
        let mut i = 0;
        loop {
            let mark = |b| matches!(b, b'"' | b'{' | b'}');
            let at = find(m, i, mark, |t| memchr::memchr3(b'"', b'{', b'}', t))?;
            i = at + 1;
            match m[at] {
                b'{' => depth += 1,
                b'}' if depth > 0 => depth -= 1,
                b'}' => {
                    let after = m[i..].trim_ascii();
                    let last = match self.close {
                        b"" => after == b"}",
                        _ => after.is_empty(),
                    };
                    return last.then_some(keys);
                }
                _ => {
                    let end = string_end(m, at)?;
                    i = end + 1;
                    let Some(value) = m[i..].trim_ascii_start().strip_prefix(b":") else {
                        continue;
                    };
                    let slot = match (depth, &m[at + 1..end]) {
                        (0, b"resultType") => &mut keys.result_type,
                        (0, b"ttlMs") => &mut keys.ttl_ms,
                        (0, b"cacheScope") => &mut keys.cache_scope,
                        _ => continue,
                    };
                    let value = value.trim_ascii_start();
                    let len = scalar_len(value)?;
                    if slot.replace(&value[..len]).is_some() {
                        return None;
                    }
                    i = m.len() - value.len() + len;
                }
            }
        }
    }
}

impl EraKeys<'_> {
    /// Whether a result with these keys is this era's as it is: it says what kind of
    /// result it is, and a complete read its cache hints.
    pub fn complete_for(&self, method: &super::Method) -> bool {
        let Some(kind) = self.result_type else {
            return false;
        };
        !matches!(method, super::Method::ResourcesRead)
            || kind != br#""complete""#
            || (self.ttl_ms.is_some() && self.cache_scope.is_some())
    }
}

/// Where the first byte at or after `from` that `is` picks is. Gaps between marks in
/// JSON are mostly short: the first few bytes are looked at one by one, and only a
/// longer gap is searched with `far` (memchr, whose setup costs more than those bytes).
fn find(
    text: &[u8],
    from: usize,
    is: impl Fn(u8) -> bool,
    far: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    const NEAR: usize = 32;
    let rest = text.get(from..)?;
    let near = &rest[..rest.len().min(NEAR)];
    match near.iter().position(|&b| is(b)) {
        Some(at) => Some(from + at),
        None if rest.len() > NEAR => far(&rest[NEAR..]).map(|at| from + NEAR + at),
        None => None,
    }
}

/// The closing quote of the string whose opening quote is at `open` (nothing escaped).
fn string_end(text: &[u8], open: usize) -> Option<usize> {
    find(text, open + 1, |b| b == b'"', |t| memchr::memchr(b'"', t))
}

/// The length of the string at the start of `text`, its quotes included.
fn string_len(text: &[u8]) -> Option<usize> {
    string_end(text, 0).map(|end| end + 1)
}

/// The length of the id at the start of `text` when it is a plain one: a string with
/// nothing escaped, or an integer.
fn plain_id_len(text: &[u8]) -> Option<usize> {
    match text.first()? {
        b'"' => string_len(text),
        b'-' | b'0'..=b'9' => {
            let digits = text[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            (text[0] != b'-' || digits > 0).then_some(digits + 1)
        }
        _ => None,
    }
}

/// The length of the scalar at the start of `text` (a string with nothing escaped, or a
/// number, `true`, `false` or `null` as written): `None` for an object or an array.
fn scalar_len(text: &[u8]) -> Option<usize> {
    match text.first()? {
        b'"' => string_len(text),
        b'{' | b'[' => None,
        _ => text
            .iter()
            .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
            .filter(|&len| len > 0),
    }
}

#[cfg(test)]
mod tests;
