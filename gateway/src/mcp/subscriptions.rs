//! Resource subscriptions across the eras.
//!
//! A 2025 client subscribes with `resources/subscribe` and gets
//! `notifications/resources/updated` on its `GET` stream; a 2026-07-28 backend has no
//! `resources/subscribe`: it sends updates on a `subscriptions/listen` stream that
//! names the URIs (`resourceSubscriptions`). For a 2025 client and a modern backend
//! the gateway answers `resources/subscribe`/`unsubscribe` itself and keeps the URIs
//! here ([`Subscriptions`]), per session and backend; the session's `GET` stream
//! listens upstream with them and listens again whenever they change
//! ([`Gateway::pump_server_stream`]). (A 2026-07-28 client's own
//! `resourceSubscriptions` go upstream in [`super::listen`]; a legacy backend gets a
//! real `resources/subscribe`.)
//!
//! Bounds: at most [`MAX_URIS`] URIs per session and backend, [`MAX_ENTRIES`] session
//! and backend pairs in all; an entry goes with its session (`DELETE`), or when no
//! stream has read it for a day ([`Subscriptions::sweep`]).

use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::exchange::Response;
use super::jsonrpc::{self, Method};

/// URIs one session may watch at one backend.
pub const MAX_URIS: usize = 256;
/// Session and backend pairs with subscriptions, in all.
pub const MAX_ENTRIES: usize = 100_000;
/// An entry no stream reads is dropped after this long without a change.
const IDLE: Duration = Duration::from_secs(24 * 3600);

struct Entry {
    uris: watch::Sender<Vec<String>>,
    touched: Instant,
}

/// What 2025 sessions subscribed to at modern backends: (session, backend) → URIs
/// (the backend's own), watched by the session's `GET` stream.
#[derive(Default)]
pub struct Subscriptions {
    map: DashMap<(String, usize), Entry>,
}

impl Subscriptions {
    /// The URIs session `sid` watches at backend `b`, as they change.
    /// (Nothing subscribed yet: an empty entry, which a later subscribe fills.)
    pub(super) fn watch(&self, sid: &str, b: usize) -> watch::Receiver<Vec<String>> {
        self.entry(sid, b).uris.subscribe()
    }

    fn entry(
        &self,
        sid: &str,
        b: usize,
    ) -> dashmap::mapref::one::RefMut<'_, (String, usize), Entry> {
        self.map
            .entry((sid.to_string(), b))
            .or_insert_with(|| Entry {
                uris: watch::channel(Vec::new()).0,
                touched: Instant::now(),
            })
    }

    /// `resources/subscribe` (`on`) or `unsubscribe` of `uri` at backend `b`; the error
    /// message when a bound is reached.
    pub(super) fn set(&self, sid: &str, b: usize, uri: &str, on: bool) -> Result<(), String> {
        let key = (sid.to_string(), b);
        if on && !self.map.contains_key(&key) && self.map.len() >= MAX_ENTRIES {
            return Err(format!(
                "the gateway keeps subscriptions for {MAX_ENTRIES} sessions at most: try again later"
            ));
        }
        let mut entry = self.entry(sid, b);
        entry.touched = Instant::now();
        let mut full = false;
        entry.uris.send_if_modified(|uris| {
            let at = uris.iter().position(|u| u == uri);
            match (on, at) {
                (true, None) if uris.len() >= MAX_URIS => {
                    full = true;
                    false
                }
                (true, None) => {
                    uris.push(uri.to_string());
                    true
                }
                (false, Some(i)) => {
                    uris.remove(i);
                    true
                }
                _ => false,
            }
        });
        match full {
            true => Err(format!(
                "a session may subscribe to {MAX_URIS} resources of one backend at most"
            )),
            false => Ok(()),
        }
    }

    /// Forgets a session's subscriptions (its `DELETE`).
    pub(super) fn end_session(&self, sid: &str) {
        self.map.retain(|(s, _), _| s != sid);
    }

    /// Drops the entries no stream reads that have not changed for a day.
    pub fn sweep(&self) {
        self.map
            .retain(|_, e| e.uris.receiver_count() > 0 || e.touched.elapsed() < IDLE);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The answer to a 2025 client's `resources/subscribe`/`unsubscribe` kept here.
pub(super) fn answer(
    subs: &Subscriptions,
    (sid, b): (&str, usize),
    id: &Value,
    method: &Method,
    uri: &str,
) -> Response {
    match subs.set(sid, b, uri, *method == Method::ResourcesSubscribe) {
        Ok(()) => Response::json(200, &json!({"jsonrpc": "2.0", "id": id, "result": {}})),
        Err(why) => Response::json(200, &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribing_changes_what_the_stream_watches() {
        let subs = Subscriptions::default();
        let mut rx = subs.watch("s", 1);
        assert!(rx.borrow_and_update().is_empty());
        subs.set("s", 1, "a://x", true).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), vec!["a://x".to_string()]);
        // The same URI again changes nothing.
        subs.set("s", 1, "a://x", true).unwrap();
        assert!(!rx.has_changed().unwrap());
        subs.set("s", 1, "a://x", false).unwrap();
        assert!(rx.borrow_and_update().is_empty());
        // Another session's or backend's subscriptions are apart.
        subs.set("t", 1, "a://y", true).unwrap();
        subs.set("s", 2, "a://z", true).unwrap();
        assert!(!rx.has_changed().unwrap());
        subs.end_session("s");
        assert_eq!(subs.len(), 1);
    }

    #[test]
    fn the_uris_of_one_session_are_bounded() {
        let subs = Subscriptions::default();
        for i in 0..MAX_URIS {
            subs.set("s", 0, &format!("a://{i}"), true).unwrap();
        }
        let e = subs.set("s", 0, "a://one-more", true).unwrap_err();
        assert!(e.contains("256"), "{e}");
    }
}
