//! The list methods: asked of every backend the caller may use, in parallel, merged in a
//! deterministic order; a slow or failing backend is left out, never failing the list.
//!
//! Not here: paging cursors ([`super::cursor`]) or name rules ([`super::names`]).

use super::cursor::{self, Cursors};
use super::exchange::{Caller, Response};
use super::forward::Routed;
use super::handler::Gateway;
use super::index::{self};
use super::jsonrpc::Method;
use super::jsonrpc::{self};
use super::names;
use super::session::{caps, SessionClaims};
use super::shape::CacheHints;
use crate::auth::policy;
use crate::config::AuthMode;
use crate::upstream::{Backend, UpstreamError};
use crate::wire::version;
use crate::wire::LogLevel;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Which list a fan-out merges.
#[derive(Clone, Copy)]
pub(super) enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub(super) fn of(method: &Method) -> Option<ListKind> {
        Some(match method {
            Method::ToolsList => ListKind::Tools,
            Method::PromptsList => ListKind::Prompts,
            Method::ResourcesList => ListKind::Resources,
            Method::ResourcesTemplatesList => ListKind::Templates,
            _ => return None,
        })
    }
    pub(super) fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }
    pub(super) fn cap(self) -> caps::Caps {
        match self {
            ListKind::Tools => caps::Caps::TOOLS,
            ListKind::Prompts => caps::Caps::PROMPTS,
            ListKind::Resources | ListKind::Templates => caps::Caps::RESOURCES,
        }
    }
}

impl Gateway {
    /// `logging/setLevel`: sent to every backend of the session that logs.
    pub(super) async fn set_level(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        call: Routed,
    ) -> Response {
        let Some(level) = call.params.get("level").and_then(Value::as_str) else {
            return call.refuse(
                jsonrpc::INVALID_PARAMS,
                "logging/setLevel needs params.level".into(),
            );
        };
        let Some(level) = LogLevel::parse(level) else {
            return call.refuse(
                jsonrpc::INVALID_PARAMS,
                format!("unknown log level {level:?}"),
            );
        };
        let targets = self.session_backends(claims, caller, caps::Caps::LOGGING);
        let p = json!({"level": level});
        futures::future::join_all(targets.into_iter().map(|b| {
            let p = p.clone();
            async move {
                let _ = self
                    .in_session(claims, b, |s| {
                        let p = p.clone();
                        async move {
                            if version::is_modern(&s.version) {
                                return Ok(Value::Null); // per request in that era
                            }
                            self.backends[b]
                                .request(&claims.sid, &s, "logging/setLevel", p)
                                .await
                        }
                    })
                    .await;
            }
        }))
        .await;
        Response::json(200, &jsonrpc::result(&call.id, json!({})))
    }

    /// Fans a list request out to every backend of the session in parallel and merges
    /// the pages in config order. A failing backend is left out, never fails the list.
    pub(super) async fn list(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: &Value,
        method: &Method,
        kind: ListKind,
        params: Option<Value>,
    ) -> Response {
        let cursor_in = params
            .as_ref()
            .and_then(|p| p.get("cursor"))
            .and_then(Value::as_str);
        let targets: Vec<(usize, Option<String>)> = match cursor_in {
            Some(c) => match cursor::decode(c) {
                Some(map) => map
                    .into_iter()
                    .filter_map(|(name, cur)| self.backend(&name).map(|b| (b.index, Some(cur))))
                    .collect(),
                None => {
                    return Response::json(
                        200,
                        &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "invalid cursor"),
                    )
                }
            },
            None => self
                .session_backends(claims, caller, kind.cap())
                .into_iter()
                .map(|b| (b, None))
                .collect(),
        };
        let pages = futures::future::join_all(targets.iter().map(|(b, cur)| {
            let backend = &self.backends[*b];
            let p = match cur {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            async move {
                let fut = self.in_session(claims, *b, |s| {
                    let p = p.clone();
                    async move { backend.request(&claims.sid, &s, method.as_str(), p).await }
                });
                tokio::time::timeout(backend.config.timeout, fut)
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout(backend.config.timeout)))
            }
        }))
        .await;
        let mut merged: Vec<Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Cursors::new();
        let mut hints = CacheHints::default();
        for ((b, _), page) in targets.iter().zip(pages) {
            let backend = &self.backends[*b];
            let mut page = match page {
                Ok(p) => p,
                Err(e) => {
                    backend
                        .omitted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(backend = backend.name(), method = method.as_str(), error = %e, "backend left out of merged list");
                    continue;
                }
            };
            hints.add_page(&page);
            if let Some(c) = page.get("nextCursor").and_then(Value::as_str) {
                next.insert(backend.name().to_string(), c.to_string());
            }
            let Some(Value::Array(items)) = page.get_mut(kind.key()).map(Value::take) else {
                continue;
            };
            for mut item in items {
                if self.publish_item(kind, backend, caller, &mut item, &mut seen) {
                    merged.push(item);
                }
            }
        }
        let mut result = Map::new();
        result.insert(kind.key().into(), Value::Array(merged));
        if !next.is_empty() {
            result.insert("nextCursor".into(), Value::String(cursor::encode(&next)));
        }
        if version::is_modern(&claims.v) {
            // A list filtered by who asks is private to that person.
            hints.write(&mut result, self.config.auth.mode != AuthMode::None);
        }
        Response::json(200, &jsonrpc::result(id, Value::Object(result)))
    }

    /// Gives a listed item its public name (or URI) and indexes it. `false`: leave it out.
    pub(super) fn publish_item(
        &self,
        kind: ListKind,
        backend: &Backend,
        caller: &Caller,
        item: &mut Value,
        seen: &mut std::collections::HashSet<String>,
    ) -> bool {
        match kind {
            ListKind::Tools | ListKind::Prompts => {
                let Some(name) = item.get("name").and_then(Value::as_str) else {
                    return false;
                };
                if matches!(kind, ListKind::Tools)
                    && !policy::may_use_tool(self.config.auth.mode, &backend.config, name, caller)
                {
                    return false;
                }
                if !backend.config.prefix {
                    if let Some((head, _)) = names::split_prefixed(name) {
                        if self
                            .backends
                            .iter()
                            .any(|b| b.config.prefix && b.name() == head)
                        {
                            tracing::warn!(
                                backend = backend.name(),
                                name,
                                "name looks like another backend's prefixed name; left out"
                            );
                            return false;
                        }
                    }
                }
                let (public, shortened) =
                    names::public_name(backend.name(), backend.config.prefix, name);
                if !seen.insert(public.clone()) {
                    tracing::warn!(backend = backend.name(), name, "duplicate name; left out");
                    return false;
                }
                if shortened {
                    self.index
                        .names
                        .insert(public.clone(), (backend.index, name.to_string()));
                }
                item["name"] = Value::String(public);
                true
            }
            ListKind::Resources | ListKind::Templates => {
                let key = if matches!(kind, ListKind::Resources) {
                    "uri"
                } else {
                    "uriTemplate"
                };
                let Some(uri) = item.get(key).and_then(Value::as_str).map(str::to_string) else {
                    return false;
                };
                let map = if matches!(kind, ListKind::Resources) {
                    &self.index.resources
                } else {
                    &self.index.templates
                };
                let owner = *map.entry(uri.clone()).or_insert(backend.index);
                if owner != backend.index || !seen.insert(uri.clone()) {
                    item[key] = Value::String(format!(
                        "{}{}/{uri}",
                        index::RESOURCE_PREFIX,
                        backend.name()
                    ));
                }
                true
            }
        }
    }
}
