//! Workload Identity Federation: Google STS (`POST /v1/token`, RFC 8693 token exchange
//! of an AWS SigV4-signed `GetCallerIdentity` request) and the IAM Credentials API
//! (`generateAccessToken`, `signJwt`) for service-account impersonation.
//!
//! The fake checks the shape of what it is given (grant and token types, the signed
//! request's URL, method and headers, the target-resource header naming the
//! audience), not AWS's signature: it cannot reach AWS.

use http::StatusCode;
use serde_json::{json, Value};

use crate::http::{api_error, json, oauth_error, Req, Resp};
use crate::oidc::now_s;
use crate::state::{Grant, State, TOKEN_LIFETIME};

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const AWS4_REQUEST: &str = "urn:ietf:params:aws:token-type:aws4_request";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// `POST /v1/token`.
pub fn sts_token(st: &State, req: &Req) -> Resp {
    st.count("sts.token");
    let p = req.form_or_json();
    let get = |k: &str, camel: &str| {
        p.get(k)
            .or_else(|| p.get(camel))
            .map(String::as_str)
            .unwrap_or("")
    };
    let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    if get("grant_type", "grantType") != TOKEN_EXCHANGE {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be token-exchange",
        );
    }
    if get("requested_token_type", "requestedTokenType") != ACCESS_TOKEN_TYPE {
        return bad("requested_token_type must be urn:ietf:params:oauth:token-type:access_token");
    }
    if get("subject_token_type", "subjectTokenType") != AWS4_REQUEST {
        return bad("subject_token_type must be urn:ietf:params:aws:token-type:aws4_request");
    }
    let audience = get("audience", "audience").to_string();
    if audience.is_empty() {
        return bad("audience is required");
    }
    if let Some(want) = &st.wif_audience {
        if want != &audience {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "The target service indicated by the \"audience\" parameters is invalid.",
            );
        }
    }
    if let Err(why) = check_aws_request(get("subject_token", "subjectToken"), &audience) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &why);
    }
    let token = st.issue_token("ya29.fake-federated-", Grant::Federated { audience });
    json(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME.as_secs(),
        }),
    )
}

/// Checks the serialized, signed `GetCallerIdentity` request.
fn check_aws_request(subject_token: &str, audience: &str) -> Result<(), String> {
    let parsed: Value = serde_json::from_str(subject_token)
        .or_else(|_| {
            let decoded: String =
                url::form_urlencoded::parse(format!("x={subject_token}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
            serde_json::from_str(&decoded)
        })
        .map_err(|_| "subject_token is not a serialized AWS request".to_string())?;
    let url = parsed["url"].as_str().unwrap_or("");
    if !url.contains("Action=GetCallerIdentity") {
        return Err("the AWS request must be GetCallerIdentity".into());
    }
    if parsed["method"] != "POST" {
        return Err("the AWS request must be a POST".into());
    }
    let headers = parsed["headers"]
        .as_array()
        .ok_or("the AWS request has no headers")?;
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let key = h["key"].as_str()?;
            key.eq_ignore_ascii_case(name)
                .then(|| h["value"].as_str().unwrap_or("").to_string())
        })
    };
    let auth = header("authorization").ok_or("missing Authorization header")?;
    if !(auth.starts_with("AWS4-HMAC-SHA256 Credential=")
        && auth.contains("/sts/aws4_request")
        && auth.contains("SignedHeaders=")
        && auth.contains("Signature="))
    {
        return Err("Authorization is not an AWS SigV4 signature for sts".into());
    }
    let date = header("x-amz-date").ok_or("missing x-amz-date header")?;
    if date.len() != 16 || !date.ends_with('Z') {
        return Err("x-amz-date is malformed".into());
    }
    header("host").ok_or("missing host header")?;
    if header("x-goog-cloud-target-resource").as_deref() != Some(audience) {
        return Err("x-goog-cloud-target-resource does not match the audience".into());
    }
    Ok(())
}

/// Splits `/v1/projects/-/serviceAccounts/{email}:{verb}`.
pub fn parse_iam_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v1/projects/")?;
    let (_, rest) = rest.split_once("/serviceAccounts/")?;
    let (sa, verb) = rest.rsplit_once(':')?;
    let sa: String = url::form_urlencoded::parse(format!("x={sa}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    Some((sa, verb.to_string()))
}

/// `POST /v1/projects/-/serviceAccounts/{sa}:generateAccessToken` and `:signJwt`.
pub fn iam(st: &State, req: &Req, sa: &str, verb: &str) -> Resp {
    st.count(&format!("iam.{verb}"));
    let authorised = matches!(
        req.bearer().and_then(|t| st.token(t)).map(|t| t.grant),
        Some(Grant::Federated { .. }) | Some(Grant::ServiceAccount { .. })
    );
    if !authorised {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    }
    if !st.service_account_known(sa) {
        return api_error(
            StatusCode::NOT_FOUND,
            &format!("Not found; Gaia id not found for email {sa}"),
        );
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    match verb {
        "generateAccessToken" => {
            let scopes: Vec<&str> = body["scope"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if scopes.is_empty() {
                return api_error(StatusCode::BAD_REQUEST, "Scope required.");
            }
            let token = st.issue_token(
                "ya29.fake-impersonated-",
                Grant::ServiceAccount {
                    email: sa.to_string(),
                    subject: None,
                    scope: scopes.join(" "),
                },
            );
            let expire = time::OffsetDateTime::now_utc() + TOKEN_LIFETIME;
            let expire = expire
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            json(
                StatusCode::OK,
                &json!({"accessToken": token, "expireTime": expire}),
            )
        }
        "signJwt" => {
            let Some(payload) = body["payload"]
                .as_str()
                .and_then(|p| serde_json::from_str::<Value>(p).ok())
                .filter(Value::is_object)
            else {
                return api_error(StatusCode::BAD_REQUEST, "payload must be a JSON object");
            };
            if payload["iss"].as_str() != Some(sa) {
                return api_error(StatusCode::BAD_REQUEST, "iss must be the service account");
            }
            if payload["exp"].as_u64().unwrap_or(0) > now_s() + 12 * 3600 {
                return api_error(StatusCode::BAD_REQUEST, "exp is too far in the future");
            }
            match st.key.sign_jwt(&payload) {
                Ok(jwt) => json(
                    StatusCode::OK,
                    &json!({"keyId": st.key.kid, "signedJwt": jwt}),
                ),
                Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        _ => api_error(StatusCode::NOT_FOUND, "unknown method"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_path_is_split_and_decoded() {
        let (sa, verb) = parse_iam_path(
            "/v1/projects/-/serviceAccounts/dir%40p.iam.gserviceaccount.com:generateAccessToken",
        )
        .unwrap();
        assert_eq!(sa, "dir@p.iam.gserviceaccount.com");
        assert_eq!(verb, "generateAccessToken");
        assert!(parse_iam_path("/v1/other").is_none());
    }

    #[test]
    fn aws_request_shape_is_checked() {
        let aud = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws";
        let good = json!({
            "url": "https://sts.us-east-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "method": "POST",
            "headers": [
                {"key": "Authorization", "value": "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date;x-goog-cloud-target-resource, Signature=ab"},
                {"key": "host", "value": "sts.us-east-1.amazonaws.com"},
                {"key": "x-amz-date", "value": "20240101T000000Z"},
                {"key": "x-goog-cloud-target-resource", "value": aud},
            ]
        });
        assert!(check_aws_request(&good.to_string(), aud).is_ok());
        assert!(check_aws_request(&good.to_string(), "other").is_err());
        let encoded: String =
            url::form_urlencoded::byte_serialize(good.to_string().as_bytes()).collect();
        assert!(check_aws_request(&encoded, aud).is_ok());
        assert!(check_aws_request("{}", aud).is_err());
    }
}
