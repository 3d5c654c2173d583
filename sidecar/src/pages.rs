//! Server-rendered HTML (maud, escaped by construction), no JavaScript: the consent
//! page, the refusal page and the error page.

use maud::{html, Markup, PreEscaped, DOCTYPE};

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f5f6f8;margin:0;color:#1f2328}\
main{max-width:480px;margin:56px auto;background:#fff;border:1px solid #d0d7de;border-radius:12px;padding:32px}\
h1{font-size:22px;margin:0 0 16px}p{line-height:1.5}\
.app{font-weight:600}.muted{color:#57606a;font-size:14px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 16px;margin:20px 0;font-size:14px}\
dt{color:#57606a}dd{margin:0;word-break:break-all}\
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:10px 12px;font-size:14px}\
.bad{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:12px;font-size:15px}\
.actions{display:flex;gap:12px;margin-top:24px}\
button,.button{font-size:15px;padding:10px 18px;border-radius:6px;border:1px solid #d0d7de;background:#f6f8fa;cursor:pointer;text-decoration:none;color:#1f2328}\
button.primary{background:#1f883d;border-color:#1a7f37;color:#fff}";

fn layout(title: &str, head_extra: Option<Markup>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
                @if let Some(extra) = head_extra { (extra) }
            }
            body { main { (body) } }
        }
    }
    .into_string()
}

/// What the consent page shows.
pub struct Consent<'a> {
    pub client_name: &'a str,
    pub client_id: &'a str,
    pub redirect_host: &'a str,
    pub loopback_only: bool,
    pub metadata_host: Option<&'a str>,
    pub resource_name: &'a str,
    pub resource_url: &'a str,
    pub scope: &'a str,
    pub signed_in_as: Option<&'a str>,
    pub request_id: &'a str,
    pub csrf: &'a str,
    pub action: &'a str,
}

pub fn consent(c: &Consent) -> String {
    let body = html! {
        h1 { "Allow " span.app { (c.client_name) } " to use " (c.resource_name) "?" }
        p {
            span.app { (c.client_name) } " wants to act on your behalf at "
            strong { (c.resource_name) } ", with your company account"
            @if let Some(e) = c.signed_in_as { " (" strong { (e) } ")" }
            ": it will be able to use the tools, prompts and resources you may use there."
        }
        dl {
            dt { "Application" } dd { (c.client_name) }
            @if let Some(h) = c.metadata_host { dt { "Published by" } dd { (h) } }
            dt { "Sends you back to" } dd { strong { (c.redirect_host) } }
            dt { "Will access" } dd { (c.resource_url) }
            dt { "Permissions" } dd { (c.scope) }
            dt { "Client ID" } dd.muted { (c.client_id) }
        }
        @if c.loopback_only {
            p.warn {
                "This application runs on your own computer (it receives the answer at "
                strong { (c.redirect_host) } "). Approve only if you started it yourself just now."
            }
        }
        form method="post" action=(c.action) {
            input type="hidden" name="request" value=(c.request_id);
            input type="hidden" name="csrf" value=(c.csrf);
            div.actions {
                button.primary type="submit" name="action" value="approve" { "Approve" }
                button type="submit" name="action" value="deny" { "Deny" }
            }
        }
        p.muted {
            @if c.signed_in_as.is_some() { "Your approval is remembered for this application." }
            @else { "Next you sign in with Google. Your approval is remembered for this application." }
        }
    };
    layout("Approve access", None, body)
}

/// A sign-in that policy refused. `return_url` sends the client `error=access_denied`
/// (followed automatically after a few seconds, without JavaScript).
pub fn refusal(message: &str, email: Option<&str>, return_url: Option<&str>) -> String {
    let head = return_url.map(|u| {
        html! { meta http-equiv="refresh" content=(format!("8;url={u}")); }
    });
    let body = html! {
        h1 { "Access refused" }
        p.bad { (message) }
        @if let Some(e) = email { p.muted { "You signed in as " strong { (e) } "." } }
        p { "If you think you should have access, ask your administrator. You can also sign in again with another account." }
        @if let Some(u) = return_url {
            div.actions { a.button href=(u) { "Return to the application" } }
            p.muted { "You will be returned to the application in a few seconds." }
        }
    };
    layout("Access refused", head, body)
}

/// A request that cannot go back to the client (unknown client, bad redirect URI,
/// expired sign-in, …).
pub fn error(title: &str, message: &str) -> String {
    let body = html! {
        h1 { (title) }
        p.bad { (message) }
        p.muted { "Start again from your application. If it keeps happening, tell your administrator what the application was and this message." }
    };
    layout(title, None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_escapes_client_supplied_text() {
        let page = consent(&Consent {
            client_name: "<script>alert(1)</script>",
            client_id: "mcp_x",
            redirect_host: "127.0.0.1:3000",
            loopback_only: true,
            metadata_host: None,
            resource_name: "Gateway",
            resource_url: "http://127.0.0.1:8080/mcp",
            scope: "mcp",
            signed_in_as: None,
            request_id: "r1",
            csrf: "c1",
            action: "/consent",
        });
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("name=\"action\" value=\"approve\""));
        assert!(page.contains("127.0.0.1:3000"));
    }

    #[test]
    fn refusal_links_back() {
        let page = refusal(
            "no",
            Some("a@b.c"),
            Some("http://127.0.0.1/cb?error=access_denied&state=s"),
        );
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(page.contains("error=access_denied&amp;state=s"));
    }
}
