//! Admin SDK Directory API: `GET /admin/directory/v1/groups?userKey=…`, authorised by a
//! service-account token that carries a Directory scope. Paged like Google's
//! (`maxResults`, `pageToken`, `nextPageToken`); a user without groups gets no
//! `groups` field at all, as Google answers. `GET /admin/directory/v1/users/{userKey}`
//! (`users.get`, by email or id) answers the user's `suspended` and `archived` flags, or
//! 404 for a deleted user.

use http::StatusCode;
use serde_json::json;

use crate::http::{api_error, json, Req, Resp};
use crate::state::{Grant, State};

/// The caller's service-account token must carry `needed` (or cloud-platform).
fn authorised(st: &State, req: &Req, needed: &str) -> Result<(), Box<Resp>> {
    let grant = req.bearer().and_then(|t| st.token(t)).map(|t| t.grant);
    let scope = match grant {
        Some(Grant::ServiceAccount { scope, .. }) => scope,
        Some(_) => {
            return Err(Box::new(api_error(
                StatusCode::FORBIDDEN,
                "Not Authorized to access this resource/api",
            )))
        }
        None => {
            return Err(Box::new(api_error(
                StatusCode::UNAUTHORIZED,
                "Login Required.",
            )))
        }
    };
    if !scope
        .split_whitespace()
        .any(|s| s.contains(needed) || s.ends_with("/cloud-platform"))
    {
        return Err(Box::new(api_error(
            StatusCode::FORBIDDEN,
            "Request had insufficient authentication scopes.",
        )));
    }
    Ok(())
}

/// `users.get`: `user_key` is the (percent-decoded) email or the user's id.
pub fn user_get(st: &State, req: &Req, user_key: &str) -> Resp {
    st.count("directory.users.get");
    if let Err(r) = authorised(st, req, "admin.directory.user") {
        return *r;
    }
    let found = st
        .user(user_key)
        .or_else(|| st.all_users().into_iter().find(|u| u.sub == user_key));
    let Some(u) = found else {
        return api_error(StatusCode::NOT_FOUND, "Resource Not Found: userKey");
    };
    json(
        StatusCode::OK,
        &json!({
            "kind": "admin#directory#user",
            "id": u.sub,
            "primaryEmail": u.email,
            "name": {"fullName": u.name},
            "isAdmin": false,
            "suspended": u.suspended,
            "archived": u.archived,
            "orgUnitPath": "/",
        }),
    )
}

pub fn groups(st: &State, req: &Req) -> Resp {
    st.count("directory.groups");
    if let Err(r) = authorised(st, req, "admin.directory.group") {
        return *r;
    }
    let Some(user_key) = req.query.get("userKey") else {
        return api_error(StatusCode::BAD_REQUEST, "Bad Request");
    };
    let Some(user) = st.user(user_key) else {
        return api_error(StatusCode::NOT_FOUND, "Resource Not Found: userKey");
    };
    let page_size = req
        .query
        .get("maxResults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(st.directory_page_size)
        .clamp(1, st.directory_page_size.max(1));
    let start = match req.query.get("pageToken") {
        Some(t) => match t
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return api_error(StatusCode::BAD_REQUEST, "Invalid page token"),
        },
        None => 0,
    };
    let page: Vec<_> = user
        .groups
        .iter()
        .skip(start)
        .take(page_size)
        .map(|g| {
            json!({
                "kind": "admin#directory#group",
                "id": format!("0{}", &crate::config::subject_for(g)[..16]),
                "email": g,
                "name": g.split('@').next().unwrap_or(g),
                "description": "",
                "directMembersCount": "1",
                "adminCreated": true,
            })
        })
        .collect();
    let mut out = json!({"kind": "admin#directory#groups", "etag": "\"fake\""});
    if !page.is_empty() {
        out["groups"] = json!(page);
    }
    if start + page_size < user.groups.len() {
        out["nextPageToken"] = json!(format!("page-{}", start + page_size));
    }
    json(StatusCode::OK, &out)
}
