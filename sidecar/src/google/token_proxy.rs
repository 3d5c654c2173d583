//! Forwards a google-direct client's token request to Google's token endpoint with the
//! sidecar's Google client credentials added, so that the client secret never leaves
//! the sidecar. Only the form given is sent (the caller picks the fields); Google's
//! answer is read up to [`MAX_GOOGLE_ANSWER`] bytes. Nothing here logs: neither the
//! form (codes, refresh tokens) nor the answer (Google's tokens).

use serde_json::Value;

use super::{Google, GoogleError};

/// The most of Google's token answer read (a token response is a few KiB).
pub const MAX_GOOGLE_ANSWER: usize = 64 * 1024;

impl Google {
    /// POSTs `form` plus `client_id` (and `client_secret` when configured) to Google's
    /// token endpoint; returns Google's status and JSON answer.
    pub async fn forward_token(&self, form: &[(&str, &str)]) -> Result<(u16, Value), GoogleError> {
        let e = self.endpoints().await?;
        let mut body: Vec<(&str, &str)> = form.to_vec();
        body.push(("client_id", self.cfg.client_id.as_str()));
        if let Some(s) = &self.cfg.client_secret {
            body.push(("client_secret", s.as_str()));
        }
        let mut resp = self
            .http
            .post(&e.token)
            .form(&body)
            .send()
            .await
            // Without the URL: reqwest's errors name it, and it carries nothing secret,
            // but keep the message short and free of request data.
            .map_err(|err| GoogleError::TokenExchange(err.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|err| GoogleError::TokenExchange(err.without_url().to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_GOOGLE_ANSWER {
                return Err(GoogleError::TokenExchange(format!(
                    "the answer is larger than {MAX_GOOGLE_ANSWER} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            GoogleError::TokenExchange(format!("HTTP {status} with a body that is not JSON"))
        })?;
        Ok((status, v))
    }
}
