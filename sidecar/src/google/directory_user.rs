//! Admin SDK Directory API `users.get`: whether a person is still employed (not
//! suspended, not archived, not deleted), asked at every refresh so that offboarding
//! ends a sign-in at the next refresh. Needs the `admin.directory.user.readonly` scope;
//! without Directory credentials nothing is asked (and the sidecar warns at start-up).

use serde_json::Value;
use url::Url;

use super::{Google, GoogleError};

/// What the directory says of a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Suspended,
    Archived,
}

impl UserStatus {
    /// The reason recorded when a refresh is refused.
    pub fn code(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "user_suspended",
            UserStatus::Archived => "user_archived",
        }
    }
}

impl Google {
    /// `users.get` for `email`. `Ok(None)` when no Directory credentials are
    /// configured; `Err(UserNotFound)` for a deleted user (HTTP 404).
    pub async fn user_status(&self, email: &str) -> Result<Option<UserStatus>, GoogleError> {
        if !self.tokens.enabled() {
            return Ok(None);
        }
        let mut u = Url::parse(&format!(
            "{}/admin/directory/v1/users",
            self.cfg.directory_api_base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| GoogleError::Directory(e.to_string()))?;
        u.path_segments_mut()
            .map_err(|_| GoogleError::Directory("directory_api_base cannot be a base".into()))?
            .push(email);
        let v = self.directory_get(u, "users.get: ").await?;
        Ok(Some(if v["suspended"] == Value::Bool(true) {
            UserStatus::Suspended
        } else if v["archived"] == Value::Bool(true) {
            UserStatus::Archived
        } else {
            UserStatus::Active
        }))
    }
}
