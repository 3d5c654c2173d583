//! `[tracing]` validated: OpenTelemetry export (off unless configured here or by the
//! `OTEL_*` variables; see `mcp_telemetry::traces`).

use super::raw::FileTracing;
use super::validate::Validator;
use config_refs::Checked;

impl Validator<'_> {
    pub(super) fn tracing(&self, t: FileTracing) -> Checked<mcp_telemetry::TraceSettings> {
        let endpoint = match &t.endpoint {
            None => None,
            Some(v) => Some(
                self.http_url(v, "tracing.endpoint")?
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
            ),
        };
        let sample_ratio = match &t.sample_ratio {
            None => None,
            Some(v) if (0.0..=1.0).contains(v.get_ref()) => Some(*v.get_ref()),
            Some(v) => {
                return Err(self.err(
                    v.span(),
                    "tracing.sample_ratio",
                    format!("{} is not between 0 and 1", v.get_ref()),
                ))
            }
        };
        let mut headers = Vec::new();
        for (name, value) in t.headers.unwrap_or_default() {
            let key = format!("tracing.headers.{name}");
            let resolved = self.expand(&value, &key)?;
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&resolved).is_err()
            {
                return Err(self.err(value.span(), &key, "not a valid HTTP header"));
            }
            headers.push((name, resolved));
        }
        Ok(mcp_telemetry::TraceSettings {
            enabled: t.enabled,
            endpoint,
            headers,
            sample_ratio,
            service_name: t.service_name,
        })
    }
}
