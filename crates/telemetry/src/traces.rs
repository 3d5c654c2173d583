//! OpenTelemetry traces: what the binary's config and the standard `OTEL_*` variables
//! ask for, resolved into an exporter (OTLP over HTTP, protobuf) and a sampler.
//!
//! Rules (the config's `[tracing]` table wins over the environment, except that
//! `OTEL_SDK_DISABLED=true` always turns export off):
//! - off unless `enabled = true`, an `endpoint` in the config, or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set;
//!   `enabled = false` turns it off whatever the environment says;
//! - sampling: the config's `sample_ratio` (parent-based: a sampled client's trace is
//!   always kept), else `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, else
//!   `parentbased_always_on`;
//! - service name: the config's, else `OTEL_SERVICE_NAME`, else the binary's name.
//!   `OTEL_RESOURCE_ATTRIBUTES` adds resource attributes.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The `[tracing]` table of either binary's config, as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSettings {
    /// `Some(false)`: off whatever the environment says. `Some(true)`: on (to the
    /// default endpoint `http://localhost:4318` when none is given).
    pub enabled: Option<bool>,
    /// OTLP/HTTP base URL; traces go to `{endpoint}/v1/traces`.
    pub endpoint: Option<String>,
    /// Extra request headers for the collector (credentials).
    pub headers: Vec<(String, String)>,
    /// Share of new traces kept, 0.0–1.0.
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("OTEL_TRACES_SAMPLER={0:?} is not a sampler this build knows")]
    Sampler(String),
    #[error("OTEL_TRACES_SAMPLER_ARG={0:?} is not a ratio between 0 and 1")]
    SamplerArg(String),
    #[error("the OTLP exporter: {0}")]
    Exporter(String),
}

/// Export settings once config and environment are read.
#[derive(Debug)]
pub struct Resolved {
    /// The full traces URL when the config names one (else the exporter reads the
    /// `OTEL_EXPORTER_OTLP_*` variables itself).
    pub traces_url: Option<String>,
    pub headers: Vec<(String, String)>,
    pub sampler: Sampler,
    pub service_name: String,
}

impl TraceSettings {
    /// What to export, or `None` when tracing is off. `env` reads a variable.
    pub fn resolve(
        &self,
        default_service: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Resolved>, TracesError> {
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let env_endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let wanted = match self.enabled {
            Some(v) => v,
            None => self.endpoint.is_some() || env_endpoint,
        };
        if disabled || !wanted {
            return Ok(None);
        }
        let traces_url = match &self.endpoint {
            Some(e) => Some(format!("{}/v1/traces", e.trim_end_matches('/'))),
            None if env_endpoint => None,
            None => Some("http://localhost:4318/v1/traces".to_string()),
        };
        let sampler = match self.sample_ratio {
            Some(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
            None => sampler_from_env(set("OTEL_TRACES_SAMPLER"), set("OTEL_TRACES_SAMPLER_ARG"))?,
        };
        let service_name = self
            .service_name
            .clone()
            .or_else(|| set("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| default_service.to_string());
        Ok(Some(Resolved {
            traces_url,
            headers: self.headers.clone(),
            sampler,
            service_name,
        }))
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` names (the specification's values).
fn sampler_from_env(name: Option<String>, arg: Option<String>) -> Result<Sampler, TracesError> {
    let ratio = || -> Result<f64, TracesError> {
        match &arg {
            None => Ok(1.0),
            Some(a) => a
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| TracesError::SamplerArg(a.clone())),
        }
    };
    let parent = |s: Sampler| Sampler::ParentBased(Box::new(s));
    Ok(match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => parent(Sampler::AlwaysOn),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio()?),
        Some("parentbased_always_off") => parent(Sampler::AlwaysOff),
        Some("parentbased_traceidratio") => parent(Sampler::TraceIdRatioBased(ratio()?)),
        Some(other) => return Err(TracesError::Sampler(other.to_string())),
    })
}

impl Resolved {
    /// The tracer provider: a batch processor on a thread of its own, exporting with a
    /// blocking HTTP client (so it needs no async runtime).
    pub fn provider(&self) -> Result<SdkTracerProvider, TracesError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(Duration::from_secs(10));
        if let Some(url) = &self.traces_url {
            exporter = exporter.with_endpoint(url.clone());
        }
        if !self.headers.is_empty() {
            let headers: HashMap<String, String> = self.headers.iter().cloned().collect();
            exporter = exporter.with_headers(headers);
        }
        let exporter = exporter
            .build()
            .map_err(|e| TracesError::Exporter(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(crate::head::HeadSampler::new(self.sampler.clone()))
            .with_resource(resource)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_by_default_on_with_an_endpoint_variable() {
        let s = TraceSettings::default();
        assert!(s.resolve("x", &env(&[])).unwrap().is_none());
        let on = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        let r = s.resolve("x", &on).unwrap().unwrap();
        assert_eq!(r.traces_url, None);
        assert_eq!(r.service_name, "x");
    }

    #[test]
    fn sdk_disabled_and_config_false_win() {
        let on = env(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(TraceSettings::default()
            .resolve("x", &on)
            .unwrap()
            .is_none());
        let off = TraceSettings {
            enabled: Some(false),
            endpoint: Some("http://c:4318".into()),
            ..Default::default()
        };
        let on = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert!(off.resolve("x", &on).unwrap().is_none());
    }

    #[test]
    fn config_endpoint_ratio_and_name() {
        let s = TraceSettings {
            endpoint: Some("http://c:4318/".into()),
            sample_ratio: Some(0.01),
            ..Default::default()
        };
        let e = env(&[
            ("OTEL_SERVICE_NAME", "gw-eu"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ]);
        let r = s.resolve("x", &e).unwrap().unwrap();
        assert_eq!(r.traces_url.as_deref(), Some("http://c:4318/v1/traces"));
        assert_eq!(r.service_name, "gw-eu");
        assert!(matches!(r.sampler, Sampler::ParentBased(_)));
    }

    #[test]
    fn sampler_variables() {
        let bad = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]);
        let r = TraceSettings::default().resolve("x", &bad);
        assert!(matches!(r, Err(TracesError::SamplerArg(_))));
        let unknown = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
        ]);
        let r = TraceSettings::default().resolve("x", &unknown);
        assert!(matches!(r, Err(TracesError::Sampler(_))));
        let off = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ]);
        let r = TraceSettings::default()
            .resolve("x", &off)
            .unwrap()
            .unwrap();
        assert!(matches!(r.sampler, Sampler::AlwaysOff));
    }
}
