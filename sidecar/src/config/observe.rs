//! `[metrics]` (the Prometheus listener) and `[tracing]` (OpenTelemetry export; the
//! same keys as the gateway's, see `mcp_telemetry::traces`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::raw::{Num, Text};
use super::validate::Validator;
use config_refs::diagnostic::Checked;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Text>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    pub(super) enabled: Option<bool>,
    pub(super) endpoint: Option<Text>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Text>,
    pub(super) sample_ratio: Num,
    pub(super) service_name: Option<Text>,
}

impl Validator<'_> {
    /// `[metrics] listen`: the address of the Prometheus listener, if any.
    pub(super) fn metrics(&self, m: &RawMetrics) -> Checked<Option<SocketAddr>> {
        let Some(v) = &m.listen else { return Ok(None) };
        let addr = self.string(v, "metrics.listen")?;
        match addr.parse::<SocketAddr>() {
            Ok(a) => Ok(Some(a)),
            Err(_) => Err(self.err(
                v.span(),
                "metrics.listen",
                format!("{addr:?} is not an address like \"127.0.0.1:9091\""),
            )),
        }
    }

    pub(super) fn tracing(&self, t: &RawTracing) -> Checked<mcp_telemetry::TraceSettings> {
        let endpoint = self.opt(&t.endpoint, "tracing.endpoint")?;
        if let (Some(e), Some(v)) = (&endpoint, &t.endpoint) {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(self.err(v.span(), "tracing.endpoint", "must be an http(s) URL"));
            }
        }
        let sample_ratio = match &t.sample_ratio {
            None => None,
            Some(_) => {
                Some(self.in_range(&t.sample_ratio, "tracing.sample_ratio", 1.0, (0.0, 1.0))?)
            }
        };
        let mut headers = Vec::new();
        for (name, v) in &t.headers {
            headers.push((
                name.clone(),
                self.string(v, &format!("tracing.headers.{name}"))?,
            ));
        }
        Ok(mcp_telemetry::TraceSettings {
            enabled: t.enabled,
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
            headers,
            sample_ratio,
            service_name: self.opt(&t.service_name, "tracing.service_name")?,
        })
    }
}
