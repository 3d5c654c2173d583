//! Who may sign in: a verified email, a Workspace domain (`hd`) in
//! `allowed_domains`, and, when `allowed_groups` is set, membership of one of them.
//! Checked at sign-in and again at every refresh.

use crate::config::GoogleConfig;

/// A refusal: a stable code (audit, logs) and the sentence shown to the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

pub fn check_identity(
    cfg: &GoogleConfig,
    email: &str,
    email_verified: bool,
    hd: Option<&str>,
) -> Result<(), Refusal> {
    if email.is_empty() {
        return Err(Refusal {
            code: "no_email",
            message: "Google did not share an email address for this account.".into(),
        });
    }
    if !email_verified {
        return Err(Refusal {
            code: "email_unverified",
            message: format!("Google has not verified the email address {email}."),
        });
    }
    let allowed = cfg.allowed_domains.join(", ");
    match hd.map(str::to_ascii_lowercase) {
        None => Err(Refusal {
            code: "not_workspace_account",
            message: format!(
                "{email} is not a Google Workspace account. Sign in with your account of {allowed}."
            ),
        }),
        Some(d) if !cfg.allowed_domains.contains(&d) => Err(Refusal {
            code: "domain_not_allowed",
            message: format!(
                "{email} belongs to {d}, which may not use this service. Sign in with your account of {allowed}."
            ),
        }),
        Some(_) => Ok(()),
    }
}

pub fn check_groups(cfg: &GoogleConfig, email: &str, groups: &[String]) -> Result<(), Refusal> {
    if cfg.allowed_groups.is_empty() || groups.iter().any(|g| cfg.allowed_groups.contains(g)) {
        return Ok(());
    }
    Err(Refusal {
        code: "not_in_allowed_group",
        message: format!(
            "{email} is not a member of any group allowed here ({}).",
            cfg.allowed_groups.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GoogleConfig {
        let text = r#"
[store]
url = "postgres://x@127.0.0.1/test"
[[resource]]
url = "http://127.0.0.1:8080/mcp"
[google]
client_id = "c"
allowed_domains = ["example.com"]
allowed_groups = ["eng@example.com"]
"#;
        crate::config::Config::parse(text, &|_| None)
            .unwrap()
            .google
    }

    #[test]
    fn identity_rules() {
        let c = cfg();
        assert!(check_identity(&c, "a@example.com", true, Some("example.com")).is_ok());
        assert!(check_identity(&c, "a@example.com", true, Some("EXAMPLE.com")).is_ok());
        assert_eq!(
            check_identity(&c, "a@example.com", false, Some("example.com"))
                .unwrap_err()
                .code,
            "email_unverified"
        );
        assert_eq!(
            check_identity(&c, "a@other.com", true, Some("other.com"))
                .unwrap_err()
                .code,
            "domain_not_allowed"
        );
        assert_eq!(
            check_identity(&c, "a@gmail.com", true, None)
                .unwrap_err()
                .code,
            "not_workspace_account"
        );
    }

    #[test]
    fn group_rule() {
        let c = cfg();
        assert!(check_groups(&c, "a@example.com", &["eng@example.com".into()]).is_ok());
        assert_eq!(
            check_groups(&c, "a@example.com", &["ops@example.com".into()])
                .unwrap_err()
                .code,
            "not_in_allowed_group"
        );
    }
}
