//! Background work of the gateway, each a Pingora `BackgroundService` that stops with
//! the server:
//!
//! - [`probes`]: backend health, the issuer's keys, supervised STDIO/SSE connections;
//! - [`audit_flush`]: the audit queue written out at shutdown;
//! - [`secret_refresh`]: rotated `${secret:…}` values picked up;
//! - [`announce`]: "listening on" printed once the listeners take connections.

pub mod announce;
pub mod audit_flush;
pub mod probes;
pub mod secret_refresh;

pub use announce::Announce;
pub use audit_flush::AuditFlush;
pub use probes::Probes;
pub use secret_refresh::SecretRefresh;
