//! In-memory state of the fake: users (changeable at run time), issued codes and
//! tokens, and request counters tests can read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

use crate::config::{ClientConfig, User};
use crate::keys::SigningKey;

/// What an access token stands for.
#[derive(Debug, Clone)]
pub enum Grant {
    /// A person signed in through `/authorize`.
    User {
        email: String,
        client_id: String,
        scope: String,
    },
    /// A service account (JWT-bearer assertion, or IAM `generateAccessToken`).
    ServiceAccount {
        email: String,
        subject: Option<String>,
        scope: String,
    },
    /// A federated token from the STS exchange.
    Federated { audience: String },
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub grant: Grant,
    pub expires: Instant,
}

#[derive(Debug, Clone)]
pub struct Code {
    pub client_id: String,
    pub redirect_uri: String,
    pub email: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: String,
    pub expires: Instant,
}

pub struct State {
    pub issuer: String,
    pub key: SigningKey,
    pub clients: Vec<ClientConfig>,
    pub service_accounts: Vec<String>,
    pub wif_audience: Option<String>,
    pub directory_page_size: usize,
    pub users: Mutex<BTreeMap<String, User>>,
    pub codes: Mutex<HashMap<String, Code>>,
    pub tokens: Mutex<HashMap<String, IssuedToken>>,
    pub counters: Mutex<BTreeMap<String, u64>>,
}

pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
pub const CODE_LIFETIME: Duration = Duration::from_secs(300);

pub fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(b))
}

impl State {
    pub fn count(&self, what: &str) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(what.to_string()).or_insert(0) += 1;
        }
    }

    pub fn user(&self, email: &str) -> Option<User> {
        self.users
            .lock()
            .ok()?
            .get(&email.trim().to_ascii_lowercase())
            .cloned()
    }

    pub fn all_users(&self) -> Vec<User> {
        self.users
            .lock()
            .map(|u| u.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn issue_token(&self, prefix: &str, grant: Grant) -> String {
        let token = random_token(prefix);
        if let Ok(mut t) = self.tokens.lock() {
            let now = Instant::now();
            t.retain(|_, v| v.expires > now);
            t.insert(
                token.clone(),
                IssuedToken {
                    grant,
                    expires: now + TOKEN_LIFETIME,
                },
            );
        }
        token
    }

    pub fn token(&self, token: &str) -> Option<IssuedToken> {
        let t = self.tokens.lock().ok()?;
        let found = t.get(token)?;
        (found.expires > Instant::now()).then(|| found.clone())
    }

    /// The configured client, or `None` when the client is unknown. With no client
    /// configured, every client id is accepted.
    pub fn client(&self, client_id: &str) -> Option<ClientConfig> {
        if self.clients.is_empty() {
            return Some(ClientConfig {
                client_id: client_id.to_string(),
                client_secret: None,
                redirect_uris: Vec::new(),
            });
        }
        self.clients
            .iter()
            .find(|c| c.client_id == client_id)
            .cloned()
    }

    pub fn service_account_known(&self, email: &str) -> bool {
        self.service_accounts
            .iter()
            .any(|s| s.eq_ignore_ascii_case(email))
    }
}
