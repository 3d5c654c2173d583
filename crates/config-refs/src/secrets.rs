//! `${secret:NAME}` and `${secret:NAME#json_key}` references, resolved through AWS
//! Secrets Manager (default credential chain; `AWS_ENDPOINT_URL` and
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` are honoured, which is how tests point it at a
//! local moto server). Values are cached and refreshed on a timer; they are never
//! logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use aws_sdk_secretsmanager::Client;
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum SecretError {
    #[error("secret {name:?}: {message}")]
    Fetch { name: String, message: String },
    #[error("secret {name:?} has no key {key:?} (it must be a JSON object holding that key)")]
    MissingKey { name: String, key: String },
    #[error("secret {0:?} was not loaded")]
    NotLoaded(String),
}

/// The names of every secret a configuration text refers to.
pub fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${secret:") {
        let after = &rest[i + "${secret:".len()..];
        match after.find('}') {
            Some(end) => {
                let reference = &after[..end];
                let name = reference.split('#').next().unwrap_or_default();
                if !name.is_empty() {
                    out.insert(name.to_string());
                }
                rest = &after[end..];
            }
            None => break,
        }
    }
    out
}

/// The secrets a gateway configuration needs: references in its string values (not in
/// comments), leaving out backends with `enabled = false`. Text that is not valid TOML
/// falls back to a scan of the raw text (the config loader reports the TOML error).
pub fn config_references(text: &str) -> BTreeSet<String> {
    fn walk(v: &toml::Value, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::String(s) => out.extend(referenced_names(s)),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => {
                if t.get("enabled").and_then(toml::Value::as_bool) == Some(false) {
                    return;
                }
                t.values().for_each(|x| walk(x, out));
            }
            _ => {}
        }
    }
    match text.parse::<toml::Table>() {
        Ok(t) => {
            let mut out = BTreeSet::new();
            walk(&toml::Value::Table(t), &mut out);
            out
        }
        Err(_) => referenced_names(text),
    }
}

pub struct SecretStore {
    client: Client,
    values: RwLock<BTreeMap<String, String>>,
}

impl SecretStore {
    /// Builds a client from the default AWS configuration chain.
    pub async fn connect() -> SecretStore {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .load()
            .await;
        SecretStore {
            client: Client::new(&conf),
            values: RwLock::new(BTreeMap::new()),
        }
    }

    async fn fetch(&self, name: &str) -> Result<String, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| SecretError::Fetch {
                name: name.to_string(),
                message: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            })?;
        out.secret_string()
            .map(str::to_string)
            .ok_or_else(|| SecretError::Fetch {
                name: name.to_string(),
                message: "it holds binary data, not a string".into(),
            })
    }

    /// Loads (or reloads) the named secrets. Returns the names whose value changed.
    pub async fn load(&self, names: &BTreeSet<String>) -> Result<Vec<String>, SecretError> {
        let mut fresh = BTreeMap::new();
        for name in names {
            fresh.insert(name.clone(), self.fetch(name).await?);
        }
        let mut changed = Vec::new();
        if let Ok(mut v) = self.values.write() {
            for (k, val) in fresh {
                if v.get(&k) != Some(&val) {
                    changed.push(k.clone());
                }
                v.insert(k, val);
            }
        }
        Ok(changed)
    }

    /// The value of a reference `NAME` or `NAME#json_key`.
    pub fn resolve(&self, reference: &str) -> Result<String, SecretError> {
        let (name, key) = match reference.split_once('#') {
            Some((n, k)) => (n, Some(k)),
            None => (reference, None),
        };
        let values = self
            .values
            .read()
            .map_err(|_| SecretError::NotLoaded(name.to_string()))?;
        let raw = values
            .get(name)
            .ok_or_else(|| SecretError::NotLoaded(name.to_string()))?;
        match key {
            None => Ok(raw.clone()),
            Some(k) => {
                let missing = || SecretError::MissingKey {
                    name: name.to_string(),
                    key: k.to_string(),
                };
                let doc: serde_json::Value = serde_json::from_str(raw).map_err(|_| missing())?;
                match doc.get(k) {
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                        Ok(v.to_string())
                    }
                    _ => Err(missing()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_references_skip_comments_and_disabled_backends() {
        let text = "# a comment naming ${secret:NAME}\nkey = \"${secret:used#k}\"\n[[backend]]\nname = \"off\"\nenabled = false\nheaders = { A = \"${secret:off}\" }\n[[backend]]\nname = \"on\"\nheaders = { A = \"${secret:on}\" }\n";
        assert_eq!(
            config_references(text).into_iter().collect::<Vec<_>>(),
            vec!["on".to_string(), "used".to_string()]
        );
    }

    #[test]
    fn finds_references() {
        let names = referenced_names(
            "a = \"${secret:db#url}\"\nb = \"Bearer ${secret:grafana}\"\nc = \"${env:X}\"\nd = \"${secret:db#user}\"",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["db".to_string(), "grafana".to_string()]
        );
    }
}
