//! The client side of the sign-in, as a browser and an MCP client drive it:
//! registration, PKCE, the authorize request and its hops, the token endpoint.

use super::*;

/// A client without cookies and without following redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// A "browser": cookies kept, redirects followed by hand.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .build()
        .expect("client")
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = format!("v{}", random(32));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

pub struct Registered {
    pub client_id: String,
    pub redirect_uri: String,
    pub body: Value,
}

pub async fn register(sidecar: &Sidecar, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}/register", sidecar.url))
        .header("user-agent", "claude-code/1.0.0")
        .json(&body)
        .send()
        .await
        .expect("register");
    let status = r.status().as_u16();
    (status, r.json().await.expect("register json"))
}

pub async fn register_public(sidecar: &Sidecar) -> Registered {
    let redirect_uri = "http://127.0.0.1:33418/callback".to_string();
    let (status, body) = register(
        sidecar,
        json!({"client_name": "Test CLI", "redirect_uris": [redirect_uri],
               "application_type": "native", "token_endpoint_auth_method": "none",
               "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    Registered {
        client_id: body["client_id"].as_str().expect("client_id").to_string(),
        redirect_uri,
        body,
    }
}

/// Parameters of an authorization request; `None` leaves a parameter out.
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub challenge: Option<String>,
    pub method: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

impl AuthRequest {
    pub fn new(client: &Registered, pkce: &Pkce) -> AuthRequest {
        AuthRequest {
            client_id: client.client_id.clone(),
            redirect_uri: client.redirect_uri.clone(),
            state: Some(format!("st-{}", random(8))),
            challenge: Some(pkce.challenge.clone()),
            method: Some("S256".into()),
            resource: Some(RESOURCE.into()),
            scope: Some("mcp".into()),
        }
    }

    pub fn url(&self, sidecar: &Sidecar) -> String {
        let mut u = url::Url::parse(&format!("{}/authorize", sidecar.url)).expect("url");
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", &self.client_id);
            q.append_pair("redirect_uri", &self.redirect_uri);
            for (k, v) in [
                ("state", &self.state),
                ("code_challenge", &self.challenge),
                ("code_challenge_method", &self.method),
                ("resource", &self.resource),
                ("scope", &self.scope),
            ] {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
        }
        u.into()
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on HTTP {}", r.status()))
        .to_str()
        .expect("location")
        .to_string()
}

pub fn query_of(u: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(u)
        .expect("url")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The value of the first `<input name="{name}" value="…">` in `html`.
pub fn hidden(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in page"))
        + needle.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].replace("&amp;", "&")
}

/// The form Google's account chooser page posts when `email` is picked: its hidden
/// fields (those it has) and the email.
pub fn chooser_form(chooser: &str, email: &str) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "hd",
        "prompt",
        "access_type",
    ]
    .into_iter()
    .filter(|k| chooser.contains(&format!("name=\"{k}\" value=\"")))
    .map(|k| (k.to_string(), hidden(chooser, k)))
    .collect();
    form.push(("email".into(), email.into()));
    form
}

/// How a sign-in ended.
pub enum Outcome {
    /// Redirected to the client's redirect URI (query parameters).
    Redirect(std::collections::HashMap<String, String>),
    /// A page (status, body) instead.
    Page(u16, String),
}

/// Approves the consent page in `page` and follows the redirect to Google.
async fn approve(b: &reqwest::Client, sidecar: &Sidecar, page: &str) -> reqwest::Response {
    let r = b
        .post(format!("{}/consent", sidecar.url))
        .form(&[
            ("request", hidden(page, "request")),
            ("csrf", hidden(page, "csrf")),
            ("action", "approve".into()),
        ])
        .send()
        .await
        .expect("consent");
    assert_eq!(r.status(), 302, "consent answer");
    r
}

/// Signs `email` in through `b` (a browser), approving consent when asked.
pub async fn sign_in(
    b: &reqwest::Client,
    sidecar: &Sidecar,
    req: &AuthRequest,
    email: &str,
) -> Outcome {
    let r = b.get(req.url(sidecar)).send().await.expect("authorize");
    let to_google = match r.status().as_u16() {
        200 => {
            let page = r.text().await.expect("consent page");
            assert!(
                page.contains("Approve"),
                "expected the consent page: {page}"
            );
            location(&approve(b, sidecar, &page).await)
        }
        302 => {
            let loc = location(&r);
            if loc.starts_with(&req.redirect_uri) {
                return Outcome::Redirect(query_of(&loc));
            }
            loc
        }
        s => return Outcome::Page(s, r.text().await.unwrap_or_default()),
    };
    // Google's account chooser, then pick `email`.
    let r = b.get(&to_google).send().await.expect("google authorize");
    assert_eq!(r.status(), 200, "google chooser");
    let chooser = r.text().await.expect("chooser");
    let form = chooser_form(&chooser, email);
    let google_url = to_google
        .split('?')
        .next()
        .expect("google base")
        .to_string();
    let r = b
        .post(&google_url)
        .form(&form)
        .send()
        .await
        .expect("google login");
    assert_eq!(r.status(), 302, "google login answer");
    let callback = location(&r);
    let r = b.get(&callback).send().await.expect("callback");
    match r.status().as_u16() {
        302 => Outcome::Redirect(query_of(&location(&r))),
        200 => {
            // Consent asked after sign-in (another person than the remembered one).
            let page = r.text().await.expect("page");
            let r = approve(b, sidecar, &page).await;
            Outcome::Redirect(query_of(&location(&r)))
        }
        s => Outcome::Page(s, r.text().await.unwrap_or_default()),
    }
}

/// Signs in and expects a code; returns it.
/// A sign-in with a fresh PKCE pair and the default request; returns the pair and the
/// authorization code.
pub async fn sign_in_new(
    b: &reqwest::Client,
    sidecar: &Sidecar,
    client: &Registered,
    email: &str,
) -> (Pkce, String) {
    let p = pkce();
    let code = sign_in_code(b, sidecar, &AuthRequest::new(client, &p), email).await;
    (p, code)
}

pub async fn sign_in_code(
    b: &reqwest::Client,
    sidecar: &Sidecar,
    req: &AuthRequest,
    email: &str,
) -> String {
    match sign_in(b, sidecar, req, email).await {
        Outcome::Redirect(q) => {
            assert_eq!(q.get("state"), req.state.as_ref(), "state echoed");
            assert_eq!(q.get("iss"), Some(&sidecar.url), "iss (RFC 9207)");
            q.get("code")
                .unwrap_or_else(|| panic!("no code: {q:?}"))
                .clone()
        }
        Outcome::Page(s, body) => panic!("sign-in ended on a page ({s}): {body}"),
    }
}

pub async fn token(
    sidecar: &Sidecar,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = http()
        .post(format!("{}/token", sidecar.url))
        .form(form)
        .send()
        .await
        .expect("token");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.expect("token json"), headers)
}

pub async fn exchange(
    sidecar: &Sidecar,
    client: &Registered,
    code: &str,
    pkce: &Pkce,
) -> (u16, Value) {
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &client.redirect_uri),
            ("client_id", &client.client_id),
            ("code_verifier", &pkce.verifier),
            ("resource", RESOURCE),
        ],
    )
    .await;
    (s, v)
}

pub async fn refresh(sidecar: &Sidecar, client: &Registered, rt: &str) -> (u16, Value) {
    let (s, v, _) = token(
        sidecar,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", &client.client_id),
            ("resource", RESOURCE),
        ],
    )
    .await;
    (s, v)
}

/// Verifies an access token against the sidecar's JWKS; returns its claims.
pub async fn verify(sidecar: &Sidecar, access_token: &str) -> Value {
    let jwks: Value = http()
        .get(format!("{}/jwks", sidecar.url))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(access_token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.expect("kid");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().expect("x"),
        jwk["y"].as_str().expect("y"),
    )
    .expect("key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[RESOURCE]);
    v.set_issuer(&[sidecar.url.as_str()]);
    jsonwebtoken::decode::<Value>(access_token, &key, &v)
        .expect("access token verifies")
        .claims
}
