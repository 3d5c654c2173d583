//! Backend and tool rules, evaluated from token claims only (no network per request).

use crate::config::{AuthMode, BackendConfig, Policy};

use super::Identity;

/// Whether `who` passes `policy`: `deny_users` wins; an empty set of allow lists allows
/// everyone; otherwise one matching allow rule is enough.
pub fn allows(policy: &Policy, who: &Identity) -> bool {
    let email = who.email.as_deref().map(str::to_ascii_lowercase);
    let sub = who.sub.to_ascii_lowercase();
    let is_user = |list: &Vec<String>| list.iter().any(|u| Some(u) == email.as_ref() || *u == sub);
    if is_user(&policy.deny_users) {
        return false;
    }
    if policy.allow_domains.is_empty()
        && policy.allow_groups.is_empty()
        && policy.allow_users.is_empty()
    {
        return true;
    }
    is_user(&policy.allow_users)
        || who
            .domain()
            .is_some_and(|d| policy.allow_domains.contains(&d))
        || who.groups.iter().any(|g| policy.allow_groups.contains(g))
}

/// Rules are enforced only when callers are authenticated.
pub fn may_use_backend(mode: AuthMode, backend: &BackendConfig, who: &Identity) -> bool {
    mode == AuthMode::None || allows(&backend.policy, who)
}

pub fn may_use_tool(mode: AuthMode, backend: &BackendConfig, tool: &str, who: &Identity) -> bool {
    if mode == AuthMode::None {
        return true;
    }
    allows(&backend.policy, who)
        && backend
            .tool_policies
            .get(tool)
            .is_none_or(|p| allows(p, who))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(email: &str, groups: &[&str]) -> Identity {
        Identity {
            sub: format!("sub-{email}"),
            email: Some(email.into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            client_id: None,
            scopes: vec![],
        }
    }

    #[test]
    fn rules() {
        let open = Policy::default();
        assert!(allows(&open, &who("a@x.com", &[])));
        let sre = Policy {
            allow_groups: vec!["sre".into()],
            ..Policy::default()
        };
        assert!(allows(&sre, &who("a@x.com", &["sre"])));
        assert!(!allows(&sre, &who("a@x.com", &["dev"])));
        let domain = Policy {
            allow_domains: vec!["x.com".into()],
            deny_users: vec!["bad@x.com".into()],
            ..Policy::default()
        };
        assert!(allows(&domain, &who("A@X.com", &[])));
        assert!(!allows(&domain, &who("bad@x.com", &[])));
        assert!(!allows(&domain, &who("a@y.com", &[])));
        let users = Policy {
            allow_users: vec!["boss@x.com".into()],
            ..Policy::default()
        };
        assert!(allows(&users, &who("Boss@x.com", &[])));
        assert!(!allows(&users, &who("staff@x.com", &[])));
    }
}
