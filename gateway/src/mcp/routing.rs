//! Which backend a public name or URI belongs to, and whether the caller may use it.
//!
//! Names are `{backend}__{name}` ([`super::names`]); URIs are routed by the index built
//! from the lists ([`super::index`]). Not here: sending anything.

use super::exchange::Caller;
use super::handler::Gateway;
use super::index::{self};
use super::names;
use super::session::{caps, SessionClaims};
use crate::auth::policy;
use crate::config::IdentityClaim;
use crate::upstream::Backend;

impl Gateway {
    /// Whether the caller may use backend `b` at all.
    pub(super) fn may_use(&self, b: &Backend, caller: &Caller) -> bool {
        policy::may_use_backend(self.config.auth.mode, &b.config, caller)
    }

    /// Headers that tell the backend who is calling, as configured.
    pub fn identity_headers(b: &Backend, caller: &Caller) -> Vec<(http::HeaderName, String)> {
        b.config
            .forward_identity
            .iter()
            .filter_map(|(claim, header)| {
                let v = match claim {
                    IdentityClaim::Email => caller.email.clone()?,
                    IdentityClaim::Sub => caller.sub.clone(),
                    IdentityClaim::Groups => caller.groups.join(","),
                    IdentityClaim::ClientId => caller.client_id.clone()?,
                };
                Some((header.clone(), v))
            })
            .collect()
    }

    pub(super) fn resolve_name(&self, public: &str) -> Option<(usize, String)> {
        if let Some(e) = self.index.names.get(public) {
            return Some(e.value().clone());
        }
        if let Some((head, rest)) = names::split_prefixed(public) {
            if let Some(b) = self
                .backends
                .iter()
                .find(|b| b.config.prefix && b.name() == head)
            {
                return Some((b.index, rest.to_string()));
            }
        }
        self.backends
            .iter()
            .find(|b| !b.config.prefix)
            .map(|b| (b.index, public.to_string()))
    }

    pub(super) fn resolve_uri(
        &self,
        claims: &SessionClaims,
        caller: &Caller,
        uri: &str,
    ) -> Option<(usize, String)> {
        if let Some((name, original)) = index::split_prefixed_uri(uri) {
            if let Some(b) = self.backend(name) {
                return Some((b.index, original.to_string()));
            }
        }
        if let Some(b) = self.index.resource_backend(uri) {
            return Some((b, uri.to_string()));
        }
        // Not listed yet on this replica: with one resource backend the answer is clear.
        let candidates = self.session_backends(claims, caller, caps::Caps::RESOURCES);
        match candidates.as_slice() {
            [only] => Some((*only, uri.to_string())),
            _ => None,
        }
    }
}
