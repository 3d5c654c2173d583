//! References in configuration values, shared by the gateway and the sidecar:
//! `${env:NAME}` (`${env:NAME:-default}` falls back when unset or empty),
//! `${file:PATH}` (the file's text, trailing newlines removed), `${secret:NAME}` and
//! `${secret:NAME#json_key}` (AWS Secrets Manager, through [`SecretStore`]).
//!
//! [`expand`] is the one expander; it reports what went wrong as a [`RefError`] that
//! names the variable, file or secret as written and never contains a resolved value.
//! This crate knows nothing of the configuration files' shapes: which keys may hold
//! references, and how an error names its key and line, is the caller's business.

pub mod diagnostic;
pub mod expand;
pub mod names;
#[cfg(feature = "aws")]
pub mod secrets;

pub use diagnostic::{line_of, Checked, Diagnostic, Diagnostics, Reported};
pub use expand::{expand, expand_noting, RefError, Sources, NO_SECRET_STORE};
pub use names::{config_references, referenced_names, value_references, Tables};
#[cfg(feature = "aws")]
pub use secrets::{SecretError, SecretStore};
