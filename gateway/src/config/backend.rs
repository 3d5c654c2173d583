//! `[[backend]]` validated: names, transports (HTTP URL or STDIO command), policies,
//! identity headers.

use super::raw::*;
use super::validate::{Checked, Reported, Validator};
use super::*;
use std::ops::Range;
use std::time::Duration;
use url::Url;

impl Validator<'_> {
    pub(super) fn backend(
        &self,
        b: FileBackend,
        span: Range<usize>,
        server: &ServerConfig,
    ) -> Checked<BackendConfig> {
        let name = b.name.get_ref().clone();
        let mut failed = false;
        if !valid_backend_name(&name) {
            self.err(
                b.name.span(),
                "backend.name",
                format!(
                    "{name:?} must be 1-32 characters of letters, digits, '-' or '_', \
                     must not contain \"__\" and must not end with '_'"
                ),
            );
            failed = true;
        }
        let transport = self.transport(&b, &name, span.clone());
        let mut headers = Vec::new();
        let mut header_templates = Vec::new();
        for (k, v) in &b.headers {
            match self.header(k, v) {
                Ok((hn, hv)) => {
                    header_templates.push((hn.clone(), v.get_ref().clone()));
                    headers.push((hn, hv));
                }
                Err(Reported) => failed = true,
            }
        }
        let mut forward_identity = Vec::new();
        for (claim, header) in &b.forward_identity {
            match self.forward_identity(claim, header, span.clone()) {
                Ok(pair) => forward_identity.push(pair),
                Err(Reported) => failed = true,
            }
        }
        let transport = transport?;
        if failed {
            return Err(Reported);
        }
        Ok(BackendConfig {
            name,
            transport,
            headers,
            header_templates,
            policy: Policy::from_file(&FilePolicy {
                allow_domains: b.allow_domains.clone(),
                allow_groups: b.allow_groups.clone(),
                allow_users: b.allow_users.clone(),
                deny_users: b.deny_users.clone(),
            }),
            tool_policies: b
                .tools
                .iter()
                .map(|(t, p)| (t.clone(), Policy::from_file(p)))
                .collect(),
            forward_identity,
            prefix: b.prefix.unwrap_or(true),
            protocol: self.protocol(&b)?,
            timeout: b
                .timeout_ms
                .map(|ms| Duration::from_millis(ms.max(1)))
                .unwrap_or(server.request_timeout),
        })
    }

    /// One `headers` entry: a valid name, and a value (references resolved) that is a
    /// valid header value.
    fn header(
        &self,
        k: &str,
        v: &toml::Spanned<String>,
    ) -> Checked<(http::HeaderName, http::HeaderValue)> {
        let key = format!("backend.headers.{k}");
        let hn = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| self.err(v.span(), &key, "not a valid HTTP header name"))?;
        let value = self.expand(v, &key)?;
        let hv = http::HeaderValue::from_str(&value).map_err(|_| {
            // Never echo the value: it is usually a credential.
            self.err(v.span(), &key, "value is not a valid HTTP header value")
        })?;
        Ok((hn, hv))
    }

    /// One `forward_identity` entry: a claim and the header it is sent in.
    fn forward_identity(
        &self,
        claim: &str,
        header: &str,
        span: Range<usize>,
    ) -> Checked<(IdentityClaim, http::HeaderName)> {
        let key = format!("backend.forward_identity.{claim}");
        let Some(claim) = IdentityClaim::parse(claim) else {
            return Err(self.err(span, &key, "claim must be email, sub, groups or client_id"));
        };
        let hn = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            self.err(
                span.clone(),
                &key,
                format!("{header:?} is not a valid header name"),
            )
        })?;
        if hn == http::header::AUTHORIZATION || hn == http::header::COOKIE {
            return Err(self.err(span, &key, "must not be Authorization or Cookie"));
        }
        Ok((claim, hn))
    }

    /// The backend's transport: an HTTP or SSE URL, or a STDIO command; STDIO-only keys
    /// on another transport are an error.
    fn transport(&self, b: &FileBackend, name: &str, span: Range<usize>) -> Checked<Transport> {
        let transport_name = b
            .transport
            .as_ref()
            .map(|t| t.get_ref().as_str())
            .unwrap_or("http");
        let transport = match transport_name {
            "http" => Transport::Http {
                url: self.backend_url(b, name, span.clone(), "its MCP endpoint")?,
            },
            "sse" => Transport::Sse {
                url: self.backend_url(b, name, span.clone(), "its SSE endpoint")?,
            },
            "stdio" => Transport::Stdio(self.stdio(b, name, span.clone())?),
            other => {
                let tspan = b.transport.as_ref().map(|t| t.span()).unwrap_or(span);
                return Err(self.err(
                    tspan,
                    "backend.transport",
                    format!("unknown transport {other:?}; supported: \"http\", \"stdio\", \"sse\""),
                ));
            }
        };
        let mut failed = false;
        if !matches!(transport, Transport::Stdio(_)) {
            for (key, present) in [
                ("command", b.command.is_some()),
                ("args", !b.args.is_empty()),
                ("env", !b.env.is_empty()),
                ("cwd", b.cwd.is_some()),
                ("sharing", b.sharing.is_some()),
                ("processes", b.processes.is_some()),
                ("idle_timeout_s", b.idle_timeout_s.is_some()),
                ("max_processes", b.max_processes.is_some()),
            ] {
                if present {
                    self.err(
                        span.clone(),
                        &format!("backend.{key}"),
                        format!("only applies to transport = \"stdio\" (backend {name:?})"),
                    );
                    failed = true;
                }
            }
        }
        if failed {
            return Err(Reported);
        }
        Ok(transport)
    }
}

impl Validator<'_> {
    /// An http(s) URL with a host, from a value that may hold references.
    pub(super) fn http_url(&self, v: &toml::Spanned<String>, key: &str) -> Checked<Url> {
        let raw = self.expand(v, key)?;
        let url = Url::parse(&raw)
            .map_err(|e| self.err(v.span(), key, format!("{:?}: {e}", shown(v, &raw))))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "{:?} must be an http:// or https:// URL with a host",
                    shown(v, &raw)
                ),
            ));
        }
        Ok(url)
    }

    /// `protocol`: which era the backend is spoken to in (default `auto`).
    fn protocol(&self, b: &FileBackend) -> Checked<BackendProtocol> {
        let Some(p) = &b.protocol else {
            return Ok(BackendProtocol::Auto);
        };
        BackendProtocol::NAMES
            .iter()
            .find(|(n, _)| *n == p.get_ref().as_str())
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                self.err(
                    p.span(),
                    "backend.protocol",
                    format!(
                        "unknown protocol {:?}: use \"auto\" (ask with server/discover), \"2026-07-28\" or \"2025\"",
                        p.get_ref()
                    ),
                )
            })
    }

    /// The required http(s) `url` of an HTTP or legacy-SSE backend.
    pub(super) fn backend_url(
        &self,
        b: &FileBackend,
        name: &str,
        span: Range<usize>,
        what: &str,
    ) -> Checked<Url> {
        let Some(url_v) = &b.url else {
            return Err(self.err(
                span,
                "backend.url",
                format!("backend {name:?} needs a url: {what}"),
            ));
        };
        self.http_url(url_v, "backend.url")
    }

    pub(super) fn stdio(
        &self,
        b: &FileBackend,
        name: &str,
        span: Range<usize>,
    ) -> Checked<StdioConfig> {
        let Some(cmd_v) = &b.command else {
            return Err(self.err(
                span,
                "backend.command",
                format!("backend {name:?} uses transport \"stdio\" and needs a command"),
            ));
        };
        let command = self.expand(cmd_v, "backend.command").and_then(|command| {
            if command.trim().is_empty() {
                Err(self.err(cmd_v.span(), "backend.command", "must not be empty"))
            } else {
                Ok(command)
            }
        });
        let mut failed = false;
        let mut args = Vec::new();
        for a in &b.args {
            match self.expand(a, "backend.args") {
                Ok(a) => args.push(a),
                Err(Reported) => failed = true,
            }
        }
        let mut env = Vec::new();
        for (k, v) in &b.env {
            let key = format!("backend.env.{k}");
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                self.err(v.span(), &key, "not a valid environment variable name");
                failed = true;
                continue;
            }
            match self.expand(v, &key) {
                Ok(value) => env.push((k.clone(), value)),
                Err(Reported) => failed = true,
            }
        }
        let cwd = match &b.cwd {
            None => Ok(None),
            Some(c) => self.expand(c, "backend.cwd").and_then(|dir| {
                let dir = std::path::PathBuf::from(dir);
                if dir.is_dir() {
                    Ok(Some(dir))
                } else {
                    Err(self.err(
                        c.span(),
                        "backend.cwd",
                        format!("{} is not a directory", dir.display()),
                    ))
                }
            }),
        };
        let sharing = self.sharing(b, span);
        let (command, cwd, sharing) = (command?, cwd?, sharing?);
        if failed {
            return Err(Reported);
        }
        Ok(StdioConfig {
            protocol: self.protocol(b)?,
            command,
            args,
            env,
            cwd,
            sharing,
        })
    }

    /// `sharing` and the keys that go with it.
    fn sharing(&self, b: &FileBackend, span: Range<usize>) -> Checked<Sharing> {
        let sharing = match b.sharing.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("shared") => {
                if b.idle_timeout_s.is_some() || b.max_processes.is_some() {
                    return Err(self.err(
                        span,
                        "backend.sharing",
                        "idle_timeout_s and max_processes apply to sharing = \"per_session\"",
                    ));
                }
                let processes = b.processes.unwrap_or(1);
                if !(1..=64).contains(&processes) {
                    return Err(self.err(span, "backend.processes", "must be between 1 and 64"));
                }
                Sharing::Shared { processes }
            }
            Some("per_session") => {
                if b.processes.is_some() {
                    return Err(self.err(
                        span,
                        "backend.processes",
                        "applies to sharing = \"shared\"; use max_processes for per_session",
                    ));
                }
                let max_processes = b.max_processes.unwrap_or(100);
                if max_processes == 0 {
                    return Err(self.err(span, "backend.max_processes", "must be at least 1"));
                }
                Sharing::PerSession {
                    idle_timeout: Duration::from_secs(b.idle_timeout_s.unwrap_or(300).max(1)),
                    max_processes,
                }
            }
            Some(other) => {
                let sspan = b.sharing.as_ref().map(|s| s.span()).unwrap_or(span);
                return Err(self.err(
                    sspan,
                    "backend.sharing",
                    format!("{other:?} is not \"shared\" or \"per_session\""),
                ));
            }
        };
        Ok(sharing)
    }
}
