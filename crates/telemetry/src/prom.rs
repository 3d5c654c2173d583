//! Prometheus helpers both binaries use: `{prefix}_build_info`, the `process_*`
//! metrics, counters that mirror an atomic read at scrape time, and the text encoding.

use prometheus::process_collector::ProcessCollector;
use prometheus::{Encoder, IntCounter, IntGaugeVec, Opts, TextEncoder};

/// Registers `{prefix}_build_info{version}` (always 1) and the process metrics
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …) in the default
/// registry. Registering twice is refused by the registry and logged, not fatal.
pub fn register_standard(prefix: &str, version: &str) {
    let build = || -> prometheus::Result<()> {
        let info = IntGaugeVec::new(
            Opts::new(
                format!("{prefix}_build_info"),
                "Always 1; the running build's version as a label",
            ),
            &["version"],
        )?;
        info.with_label_values(&[version]).set(1);
        prometheus::register(Box::new(info))?;
        // Another part of the process (Pingora's Prometheus service) may have
        // registered the process metrics already: then they are there, as wanted.
        match prometheus::register(Box::new(ProcessCollector::for_self())) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => Ok(()),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = build() {
        tracing::warn!(error = %e, "build and process metrics not registered");
    }
}

/// Brings a counter up to `value`, read from a monotonic source (an atomic counter
/// kept elsewhere): the metric stays a counter without a second count on the hot path.
pub fn mirror(counter: &IntCounter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

/// The default registry in the Prometheus text format, and its content type.
pub fn encode() -> (Vec<u8>, String) {
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut out) {
        tracing::warn!(error = %e, "metrics not encoded");
    }
    (out, encoder.format_type().to_string())
}
