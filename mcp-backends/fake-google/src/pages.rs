//! The fake account chooser: one plain HTML form, no JavaScript, so that tests can
//! sign in with a GET and a POST, and a headless browser with one click.

use maud::{html, Markup, DOCTYPE};

use crate::config::User;

/// The account chooser. `params` are the authorization request's parameters, carried
/// as hidden fields; each user is a submit button named `email`.
pub fn chooser(params: &[(String, String)], users: &[User], hd_hint: Option<&str>) -> String {
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in - Google Accounts (fake)" }
                style { (STYLE) }
            }
            body {
                main {
                    h1 { "Choose an account" }
                    p.sub { "to continue (fake Google for tests and local runs)" }
                    @if let Some(hd) = hd_hint {
                        p.hint { "Accounts of " strong { (hd) } " are expected." }
                    }
                    form method="post" action="/authorize" {
                        @for (k, v) in params {
                            input type="hidden" name=(k) value=(v);
                        }
                        ul {
                            @for u in users {
                                li {
                                    button type="submit" name="email" value=(u.email) data-email=(u.email) {
                                        span.name { (u.name) }
                                        span.email { (u.email) }
                                        @if !u.email_verified { span.flag { "unverified" } }
                                        @if u.hd.is_none() { span.flag { "no Workspace domain" } }
                                    }
                                }
                            }
                        }
                        button.cancel type="submit" name="deny" value="1" { "Cancel" }
                    }
                }
            }
        }
    };
    page.into_string()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f1f3f4;margin:0}\
main{max-width:420px;margin:48px auto;background:#fff;border-radius:8px;padding:32px;border:1px solid #dadce0}\
h1{font-weight:400;font-size:24px;margin:0 0 4px}.sub{color:#5f6368;margin:0 0 16px}\
.hint{background:#e8f0fe;padding:8px;border-radius:4px}ul{list-style:none;padding:0}\
li button{width:100%;text-align:left;background:#fff;border:0;border-top:1px solid #dadce0;padding:12px 8px;cursor:pointer}\
li button:hover{background:#f8f9fa}.name{display:block;font-weight:500}.email{color:#5f6368;font-size:14px}\
.flag{margin-left:8px;color:#b3261e;font-size:12px}.cancel{margin-top:16px;background:none;border:0;color:#1a73e8;cursor:pointer}";
