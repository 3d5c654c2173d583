//! AWS side of Workload Identity Federation: credentials (environment variables, or
//! the ECS container credentials endpoint) and a SigV4-signed `GetCallerIdentity`
//! request serialised the way Google STS expects it as a subject token.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC-SHA256 accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Reads credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN`, else from the ECS container credentials endpoint
/// (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or `…_RELATIVE_URI`).
pub async fn credentials(http: &reqwest::Client) -> Result<AwsCredentials, String> {
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
        });
    }
    let url = if let Ok(full) = std::env::var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        full
    } else if let Ok(rel) = std::env::var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        format!("http://169.254.170.2{rel}")
    } else {
        return Err(
            "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or run on ECS".into(),
        );
    };
    let mut req = http.get(&url);
    if let Ok(token) = std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
        req = req.header("authorization", token);
    }
    let v: Value = req
        .send()
        .await
        .map_err(|e| format!("AWS container credentials: {e}"))?
        .json()
        .await
        .map_err(|e| format!("AWS container credentials: {e}"))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId").ok_or("AWS container credentials: no AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")
            .ok_or("AWS container credentials: no SecretAccessKey")?,
        session_token: field("Token"),
    })
}

/// A SigV4 signature over a request with an empty body. `headers` are lowercase
/// names with their values; returns the `Authorization` header value.
#[allow(clippy::too_many_arguments)]
pub fn sign_v4(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    region: &str,
    service: &str,
    creds: &AwsCredentials,
    amz_date: &str,
) -> String {
    let mut sorted: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    sorted.sort();
    let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = sorted
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let payload_hash = hex(&Sha256::digest(b""));
    let canonical_request =
        format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{}", creds.secret_access_key).as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let signature = hex(&hmac(&k_signing, &string_to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

/// The signed `GetCallerIdentity` request, as the JSON Google STS takes as an AWS
/// subject token.
pub fn caller_identity_token(
    creds: &AwsCredentials,
    region: &str,
    audience: &str,
    amz_date: &str,
) -> Value {
    let host = format!("sts.{region}.amazonaws.com");
    let query = "Action=GetCallerIdentity&Version=2011-06-15";
    let mut headers = vec![
        ("host".to_string(), host.clone()),
        ("x-amz-date".to_string(), amz_date.to_string()),
        (
            "x-goog-cloud-target-resource".to_string(),
            audience.to_string(),
        ),
    ];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".to_string(), t.clone()));
    }
    let auth = sign_v4("POST", "/", query, &headers, region, "sts", creds, amz_date);
    let mut list = vec![json!({"key": "Authorization", "value": auth})];
    for (k, v) in headers {
        list.push(json!({"key": k, "value": v}));
    }
    json!({
        "url": format!("https://{host}?{query}"),
        "method": "POST",
        "headers": list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// AWS's published SigV4 test suite, case `get-vanilla`.
    #[test]
    fn matches_the_aws_get_vanilla_vector() {
        let auth = sign_v4(
            "GET",
            "/",
            "",
            &[
                ("host".into(), "example.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            "us-east-1",
            "service",
            &example_creds(),
            "20150830T123600Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn caller_identity_token_names_the_audience() {
        let mut creds = example_creds();
        creds.session_token = Some("tok".into());
        let t = caller_identity_token(&creds, "eu-west-1", "//iam/aud", "20240101T000000Z");
        assert_eq!(t["method"], "POST");
        assert_eq!(
            t["url"],
            "https://sts.eu-west-1.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
        );
        let headers = t["headers"].as_array().unwrap();
        let find = |k: &str| {
            headers
                .iter()
                .find(|h| h["key"] == k)
                .and_then(|h| h["value"].as_str())
                .unwrap()
                .to_string()
        };
        assert_eq!(find("x-goog-cloud-target-resource"), "//iam/aud");
        assert_eq!(find("x-amz-security-token"), "tok");
        assert!(find("Authorization").contains(
            "SignedHeaders=host;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource"
        ));
    }
}
