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
