//! The expander: replaces every `${kind:…}` reference of a value with what it names.
//!
//! What: `${env:NAME}`, `${env:NAME:-default}`, `${file:PATH}`, `${secret:NAME}` and
//! `${secret:NAME#json_key}`. Why one function: the gateway and the sidecar read the
//! same kinds of references and must fail the same way. What it does not do: fetch
//! secrets (the caller's `secret` source answers from values already loaded, usually by
//! [`crate::SecretStore`]), or know which configuration key a value came from (the
//! caller adds the key and line to the error).

use thiserror::Error;

/// The message of a `${secret:…}` reference when no secret store is configured.
pub const NO_SECRET_STORE: &str = "no secret store (AWS Secrets Manager) is configured";

/// Where references are resolved.
pub struct Sources<'a> {
    /// `${env:NAME}`: the variable's value, `None` when unset.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// `${secret:NAME}` and `${secret:NAME#json_key}` (given `NAME` or `NAME#json_key`):
    /// the value, or why not, in words that name the secret and never hold a value.
    pub secret: &'a dyn Fn(&str) -> Result<String, String>,
}

impl<'a> Sources<'a> {
    /// `env` for variables; every `${secret:…}` is an error ([`NO_SECRET_STORE`]).
    pub fn without_secrets(env: &'a dyn Fn(&str) -> Option<String>) -> Sources<'a> {
        Sources {
            env,
            secret: &no_secret_store,
        }
    }
}

fn no_secret_store(_: &str) -> Result<String, String> {
    Err(NO_SECRET_STORE.to_string())
}

/// Why a value could not be expanded. The message shows references as written: a
/// variable's, file's or secret's name, never a value read from one.
#[derive(Debug, Error)]
pub enum RefError {
    #[error("unterminated \"${{\" reference")]
    Unterminated,
    #[error("environment variable {name} is not set")]
    EnvNotSet { name: String },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The secret source's own message (it names the secret).
    #[error("{message}")]
    Secret { reference: String, message: String },
    #[error(
        "unsupported reference \"${{{reference}}}\"; use ${{env:NAME}}, ${{env:NAME:-default}}, \
         ${{file:PATH}} or ${{secret:NAME}}"
    )]
    Unsupported { reference: String },
}

/// Expands every reference of `value`.
pub fn expand(value: &str, sources: &Sources) -> Result<String, RefError> {
    expand_noting(value, sources, &mut Vec::new())
}

/// As [`expand`], and appends to `sensitive` every value read from a file or a secret,
/// so that the caller can scrub them from later error messages (a value that failed
/// validation further on must not be quoted back).
pub fn expand_noting(
    value: &str,
    sources: &Sources,
    sensitive: &mut Vec<String>,
) -> Result<String, RefError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(RefError::Unterminated);
        };
        let reference = &after[..end];
        match reference.split_once(':') {
            Some(("env", spec)) if !spec.is_empty() => out.push_str(&env(spec, sources)?),
            Some(("file", path)) if !path.is_empty() => {
                let v = std::fs::read_to_string(path).map_err(|source| RefError::File {
                    path: path.to_string(),
                    source,
                })?;
                let v = v.trim_end_matches('\n');
                out.push_str(v);
                sensitive.push(v.to_string());
            }
            Some(("secret", name)) if !name.is_empty() => {
                let v = (sources.secret)(name).map_err(|message| RefError::Secret {
                    reference: name.to_string(),
                    message,
                })?;
                out.push_str(&v);
                sensitive.push(v);
            }
            _ => {
                return Err(RefError::Unsupported {
                    reference: reference.to_string(),
                })
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `NAME` or `NAME:-default`: the default applies when NAME is unset or empty.
fn env(spec: &str, sources: &Sources) -> Result<String, RefError> {
    let (name, default) = match spec.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (spec, None),
    };
    match (
        (sources.env)(name).filter(|v| !v.is_empty() || default.is_none()),
        default,
    ) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(RefError::EnvNotSet {
            name: name.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        match n {
            "SET" => Some("9000".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn secret(r: &str) -> Result<String, String> {
        match r {
            "db#password" => Ok("hunter2-from-secret".into()),
            other => Err(format!("secret {other:?} was not loaded")),
        }
    }

    fn sources() -> Sources<'static> {
        Sources {
            env: &env,
            secret: &secret,
        }
    }

    #[test]
    fn env_values_and_defaults() {
        let s = sources();
        assert_eq!(expand("a:${env:SET:-1}", &s).unwrap(), "a:9000");
        assert_eq!(expand("a:${env:UNSET:-8080}", &s).unwrap(), "a:8080");
        assert_eq!(expand("${env:EMPTY:-d}", &s).unwrap(), "d");
        assert_eq!(expand("${env:EMPTY}", &s).unwrap(), "");
        let e = expand("${env:UNSET}", &s).unwrap_err();
        assert!(
            matches!(&e, RefError::EnvNotSet { name } if name == "UNSET"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "environment variable UNSET is not set");
    }

    #[test]
    fn text_without_references_is_unchanged() {
        assert_eq!(
            expand("plain $ {x} $x", &sources()).unwrap(),
            "plain $ {x} $x"
        );
    }

    #[test]
    fn file_references_read_the_file_and_are_noted_as_sensitive() {
        let path = std::env::temp_dir().join(format!("config-refs-{}.txt", std::process::id()));
        std::fs::write(&path, "from-a-file\n\n").unwrap();
        let mut sensitive = Vec::new();
        let v = expand_noting(
            &format!("x=${{file:{}}};y=${{env:SET}}", path.display()),
            &sources(),
            &mut sensitive,
        )
        .unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(v, "x=from-a-file;y=9000");
        assert_eq!(sensitive, vec!["from-a-file".to_string()]);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_the_path() {
        let e = expand("${file:/nonexistent/config-refs/key.pem}", &sources()).unwrap_err();
        assert!(matches!(e, RefError::File { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/config-refs/key.pem: "),
            "{e}"
        );
    }

    #[test]
    fn secrets_resolve_and_errors_name_the_secret_not_a_value() {
        let mut sensitive = Vec::new();
        let v = expand_noting("pw=${secret:db#password}", &sources(), &mut sensitive).unwrap();
        assert_eq!(v, "pw=hunter2-from-secret");
        assert_eq!(sensitive, vec!["hunter2-from-secret".to_string()]);
        let e = expand("${secret:nope}", &sources()).unwrap_err();
        assert!(matches!(&e, RefError::Secret { reference, .. } if reference == "nope"));
        assert_eq!(e.to_string(), "secret \"nope\" was not loaded");
        let e = expand(
            "${secret:x}",
            &Sources::without_secrets(&|_: &str| None::<String>),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), NO_SECRET_STORE);
    }

    #[test]
    fn malformed_references_are_errors() {
        let s = sources();
        let e = expand("x ${env:SET", &s).unwrap_err();
        assert!(matches!(e, RefError::Unterminated), "{e:?}");
        assert_eq!(e.to_string(), "unterminated \"${\" reference");
        for bad in ["${vault:x}", "${env:}", "${file:}", "${secret:}", "${}"] {
            let e = expand(bad, &s).unwrap_err();
            assert!(matches!(e, RefError::Unsupported { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains("unsupported reference"), "{e}");
            assert!(e.to_string().contains("${file:PATH}"), "{e}");
        }
    }
}
