//! The configuration's unit tests: defaults, references, errors (key, line, no secret).

use std::time::Duration;

use super::server::valid_schema_name;
use super::validate::Unit;
use super::*;

const MINIMAL: &str = r#"
[store]
url = "postgres://postgres@127.0.0.1:5432/test"
[[resource]]
url = "http://127.0.0.1:8080/mcp"
[google]
client_id = "cid"
client_secret = "${env:SECRET}"
allowed_domains = ["Example.com"]
"#;

fn env(n: &str) -> Option<String> {
    (n == "SECRET").then(|| "s3cret".to_string())
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(MINIMAL, &env).unwrap();
    assert_eq!(c.issuer, "http://127.0.0.1:8090");
    assert_eq!(c.server.mode, Mode::Issuer);
    assert_eq!(c.google.client_secret.as_deref(), Some("s3cret"));
    assert_eq!(c.google.allowed_domains, vec!["example.com"]);
    assert_eq!(c.tokens.access_token_ttl, Duration::from_secs(600));
    assert_eq!(c.tokens.code_ttl, Duration::from_secs(60));
    assert_eq!(c.store.schema, "mcp_oauth");
}

#[test]
fn unset_env_names_the_key() {
    let err = Config::parse(MINIMAL, &|_| None).unwrap_err().to_string();
    assert!(err.contains("google.client_secret"), "{err}");
    assert!(err.contains("SECRET"), "{err}");
}

#[test]
fn unknown_keys_are_errors() {
    let text = format!("{MINIMAL}\nbogus = 1\n");
    assert!(Config::parse(&text, &env).is_err());
}

#[test]
fn resources_compare_canonically() {
    let c = Config::parse(MINIMAL, &env).unwrap();
    assert!(c.find_resource("http://127.0.0.1:8080/mcp").is_some());
    assert!(c.find_resource("HTTP://127.0.0.1:8080/mcp/").is_some());
    assert!(c.find_resource("http://127.0.0.1:8080/other").is_none());
    assert!(c.find_resource("http://127.0.0.1:8080/mcp#x").is_none());
    assert!(c.find_resource("not a url").is_none());
}

#[test]
fn non_loopback_http_issuer_is_refused() {
    let text = format!("[server]\nissuer = \"http://auth.example.com\"\n{MINIMAL}");
    let err = Config::parse(&text, &env).unwrap_err().to_string();
    assert!(err.contains("server.issuer"), "{err}");
}

#[test]
fn env_defaults_apply_when_unset_or_empty() {
    let text = format!("[server]\nlisten = \"${{env:LISTEN:-127.0.0.1:0}}\"\n{MINIMAL}");
    let c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:0");
    let c = Config::parse(&text, &|n| match n {
        "LISTEN" => Some(String::new()),
        _ => env(n),
    })
    .unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:0");
    let c = Config::parse(&text, &|n| match n {
        "LISTEN" => Some("127.0.0.1:9999".into()),
        _ => env(n),
    })
    .unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:9999");
}

fn secrets(reference: &str) -> Result<String, String> {
    match reference {
        "db#url" => Ok("postgres://app:hunter2-pw@db.internal:5432/mcp".into()),
        "google#client_secret" => Ok("GOCSPX-very-secret".into()),
        "pool" => Ok("not-a-number-s3cret".into()),
        other => Err(format!("secret {other:?} was not loaded")),
    }
}

#[test]
fn secret_references_resolve_and_audit_table_parses() {
    let text = r#"
[store]
url = "${secret:db#url}"
[[resource]]
url = "http://127.0.0.1:8080/mcp"
[google]
client_id = "cid"
client_secret = "${secret:google#client_secret}"
allowed_domains = ["example.com"]
[audit]
postgres_url = "${secret:db#url}"
spool_dir = "${env:SPOOL:-/tmp/spool}"
flush_interval_ms = 50
"#;
    let c = Config::parse_with(text, &|_| None, &secrets).unwrap();
    assert_eq!(
        c.store.url,
        "postgres://app:hunter2-pw@db.internal:5432/mcp"
    );
    assert_eq!(
        c.google.client_secret.as_deref(),
        Some("GOCSPX-very-secret")
    );
    let audit = c.audit.expect("[audit]");
    assert_eq!(audit.postgres_url.as_deref(), Some(c.store.url.as_str()));
    assert_eq!(audit.spool_dir, std::path::PathBuf::from("/tmp/spool"));
    assert_eq!(audit.flush_interval_ms, 50);
    assert_eq!(audit.schema, "public");
    assert!(!format!("{audit:?}").contains("hunter2"));
    assert!(Config::parse(MINIMAL, &env).unwrap().audit.is_none());
    let names = secret_names(&format!("# ${{secret:in-a-comment}}\n{text}")).unwrap();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["db".to_string(), "google".to_string()]
    );
}

#[test]
fn errors_name_the_key_and_never_show_a_secret() {
    // A missing secret: the key and the reference, nothing else.
    let text = MINIMAL.replace("${env:SECRET}", "${secret:nope#key}");
    let err = Config::parse_with(&text, &env, &secrets)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("google.client_secret") && err.contains("nope"),
        "{err}"
    );
    // Without a store.
    let err = Config::parse(&text, &env).unwrap_err().to_string();
    assert!(err.contains("no secret store"), "{err}");
    // A secret value in the wrong place: the type error would quote it.
    let text = MINIMAL.replace(
        "[[resource]]",
        "pool_size = \"${secret:pool}\"\n[[resource]]",
    );
    let err = Config::parse_with(&text, &env, &secrets)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("not-a-number-s3cret"), "{err}");
    assert!(err.contains("***"), "{err}");
    // A bad audit value names its key.
    let text = format!("{MINIMAL}\n[audit]\nbatch_size = 0\n");
    let err = Config::parse(&text, &env).unwrap_err().to_string();
    assert!(err.contains("audit.batch_size"), "{err}");
    let text = format!("{MINIMAL}\n[audit]\nbogus = 1\n");
    assert!(Config::parse(&text, &env).is_err());
}

#[test]
fn default_path_follows_config_env() {
    assert_eq!(
        default_path(None),
        PathBuf::from("ops/config/sidecar.development.toml")
    );
    assert_eq!(
        default_path(Some("production")),
        PathBuf::from("ops/config/sidecar.production.toml")
    );
    assert_eq!(
        default_path(Some("")),
        PathBuf::from("ops/config/sidecar.development.toml")
    );
}

#[test]
fn abuse_limits_have_defaults_and_are_validated() {
    let c = Config::parse(MINIMAL, &env).unwrap();
    assert_eq!(c.rate_limit.lookups_burst, 20);
    assert_eq!(c.server.body_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_connections, 4096);
    assert_eq!(
        c.clients.unused_registration_ttl,
        Duration::from_secs(86_400)
    );
    assert_eq!(c.store.cleanup_interval, Duration::from_secs(300));
    for (table, key, bad) in [
        (
            "[rate_limit]",
            "rate_limit.lookups_per_second",
            "lookups_per_second = 0.0",
        ),
        (
            "[rate_limit]",
            "rate_limit.lookups_burst",
            "lookups_burst = 0",
        ),
    ] {
        let text = format!("{MINIMAL}\n{table}\n{bad}\n");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    for (key, bad) in [
        ("server.body_timeout_s", "body_timeout_s = 0"),
        ("server.max_connections", "max_connections = 0"),
        ("server.header_timeout_s", "header_timeout_s = 301"),
        ("server.stop_delay_s", "stop_delay_s = 601"),
        ("server.drain_s", "drain_s = -1"),
    ] {
        let text = format!("[server]\n{bad}\n{MINIMAL}");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    let text = MINIMAL.replace("[[resource]]", "cleanup_interval_s = 0\n[[resource]]");
    let err = Config::parse(&text, &env).unwrap_err().to_string();
    assert!(err.contains("store.cleanup_interval_s"), "{err}");
}

#[test]
fn schema_names_are_checked() {
    assert!(valid_schema_name("mcp_oauth_t1"));
    assert!(!valid_schema_name("Bad"));
    assert!(!valid_schema_name("x;drop"));
    assert!(!valid_schema_name(""));
}

#[test]
fn a_bad_value_reports_file_and_line() {
    // The bad value is on line 3 (after an empty line and `[tokens]`).
    let text = format!("\n[tokens]\naccess_token_ttl_s = 5\n{MINIMAL}");
    let err = Config::parse_named(&text, "sidecar.toml", &env, &|_| Err("none".into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("sidecar.toml:3: `tokens.access_token_ttl_s`: must be 30 … 86400"),
        "{err}"
    );
    // An unset variable: the line of the value that names it.
    let err = Config::parse_named(MINIMAL, "s.toml", &|_| None, &|_| Err("none".into()))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("s.toml:8: `google.client_secret`"), "{err}");
    // A syntax or unknown-key error: the line too.
    let text = format!("{MINIMAL}bogus = 1\n");
    let err = Config::parse_named(&text, "s.toml", &env, &|_| Err("none".into()))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("s.toml:10: "), "{err}");
    assert!(err.contains("bogus"), "{err}");
    // `[audit]` errors point at the key's line, not the table's (line 11).
    let text = format!("{MINIMAL}\n[audit]\nbatch_size = 0\n");
    let err = Config::parse_named(&text, "s.toml", &env, &|_| Err("none".into()))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("s.toml:12: `audit.batch_size`"), "{err}");
}

#[test]
fn a_secret_number_in_error_is_scrubbed_and_the_line_kept() {
    let text = MINIMAL.replace(
        "[[resource]]",
        "pool_size = \"${secret:pool}\"\n[[resource]]",
    );
    let err = Config::parse_named(&text, "s.toml", &env, &secrets)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("s.toml:4: `store.pool_size`"), "{err}");
    assert!(!err.contains("not-a-number-s3cret"), "{err}");
    // A number may come from the environment.
    let text = MINIMAL.replace(
        "[[resource]]",
        "pool_size = \"${env:POOL:-7}\"\n[[resource]]",
    );
    assert_eq!(Config::parse(&text, &env).unwrap().store.pool_size, 7);
}

#[test]
fn every_mistake_is_reported_with_its_line() {
    let text = format!(
        "{MINIMAL}[server]\nmax_connections = 0\n[tokens]\ncode_ttl_s = \"soon\"\n[audit]\nschema = \"public\"\npool_size = 0\n"
    );
    let Err(ConfigError::Invalid(found)) = Config::parse(&text, &env) else {
        panic!("three mistakes, no error")
    };
    let line = |needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
    };
    let at: Vec<(Option<usize>, &str)> = found
        .0
        .iter()
        .map(|d| (Some(d.line), d.key.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (line("max_connections"), "server.max_connections"),
            (line("code_ttl_s"), "tokens.code_ttl_s"),
            // The key's line, not the `[audit]` header's.
            (line("pool_size"), "audit.pool_size"),
        ],
        "{found}"
    );
}

#[test]
fn the_same_resource_twice_names_both_lines() {
    let text = format!("{MINIMAL}[[resource]]\nurl = \"http://127.0.0.1:8080/mcp/\"\n");
    let err = Config::parse(&text, &env).unwrap_err().to_string();
    let second = text.lines().count();
    assert_eq!(
        err,
        format!(
            "<config>:{second}: `resource[1].url`: the same resource twice; remove one of them\n\
             <config>:5: `resource[1].url`: the other [[resource]] with this URL"
        )
    );
}

#[test]
fn durations_are_read_in_the_unit_their_key_names() {
    assert_eq!(Unit::Millis.of(1500), Duration::from_millis(1500));
    assert_eq!(Unit::Secs.of(90), Duration::from_secs(90));
    assert_eq!(Unit::Days.of(2), Duration::from_secs(2 * 86_400));
    assert_eq!(Unit::Days.of(u64::MAX), Duration::from_secs(u64::MAX));
    // Defaults, in the unit of the key.
    let c = Config::parse(MINIMAL, &env).unwrap();
    assert_eq!(c.clients.cimd_timeout, Duration::from_millis(3000));
    assert_eq!(c.google.timeout, Duration::from_millis(10_000));
    assert_eq!(
        c.authorization.consent_ttl,
        Duration::from_secs(90 * 86_400)
    );
    assert_eq!(c.tokens.refresh_token_ttl, Duration::from_secs(30 * 86_400));
    assert_eq!(c.server.stop_delay, Duration::ZERO);
    // Written values (one of them as a string holding a reference).
    let text = format!(
        "[server]\ndrain_s = 7\n{MINIMAL}[clients]\ncimd_timeout_ms = \"${{env:CIMD:-700}}\"\n\
         cimd_max_cache_s = 120\n[authorization]\nconsent_ttl_days = 3\npending_ttl_s = 45\n"
    );
    let c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.server.drain, Duration::from_secs(7));
    assert_eq!(c.clients.cimd_timeout, Duration::from_millis(700));
    assert_eq!(c.clients.cimd_max_cache, Duration::from_secs(120));
    assert_eq!(c.authorization.consent_ttl, Duration::from_secs(3 * 86_400));
    assert_eq!(c.authorization.pending_ttl, Duration::from_secs(45));
    // A bad one still names its key (as written, with the unit) and its line.
    let text = MINIMAL.replace("[google]\n", "[google]\ntimeout_ms = -5\n");
    let err = Config::parse_named(&text, "s.toml", &env, &|_| Err("none".into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("s.toml:7: `google.timeout_ms`: expected a whole number, found \"-5\""),
        "{err}"
    );
}

#[test]
fn urls_are_parsed_at_start_up_and_kept_as_written() {
    let text = MINIMAL.replace(
        "[google]\n",
        "[google]\nissuer = \"https://idp.example.com/\"\n\
         token_endpoint = \"https://idp.example.com/token\"\n",
    );
    let c = Config::parse(&text, &env).unwrap();
    // The issuer loses its trailing `/` (paths are appended to it); nothing else is
    // rewritten by the parser (a bare origin gets no `/`).
    assert_eq!(c.google.issuer, "https://idp.example.com");
    assert_eq!(c.google.issuer.url().host_str(), Some("idp.example.com"));
    let token = c.google.token_endpoint.as_ref().expect("token_endpoint");
    assert_eq!(token.as_str(), "https://idp.example.com/token");
    assert_eq!(c.google.directory_api_base, "https://admin.googleapis.com");
    assert_eq!(
        c.google.credentials.sts_endpoint,
        "https://sts.googleapis.com/v1/token"
    );
    assert_eq!(c.issuer.to_string(), "http://127.0.0.1:8090");
    assert_eq!(c.resources[0].url, "http://127.0.0.1:8080/mcp");
    assert_eq!(HttpUrl::parse("ftp://x"), Err(UrlError::NotHttp));
}

#[test]
fn a_bad_url_names_the_key_and_its_line() {
    // Each bad value on the line after `[google]`: its line is found in the text.
    let cases = [
        (
            "jwks_uri = \"not a url\"",
            "google.jwks_uri",
            "must be an http(s) URL: ",
        ),
        (
            "directory_api_base = \"ftp://admin.example.com\"",
            "google.directory_api_base",
            "must be an http(s) URL",
        ),
        ("issuer = \"https://\"", "google.issuer", "empty host"),
    ];
    for (line, key, message) in cases {
        let text = MINIMAL.replace("[google]\n", &format!("[google]\n{line}\n"));
        let at = text.lines().position(|l| l == line).map(|i| i + 1);
        let err = Config::parse_named(&text, "s.toml", &env, &|_| Err("none".into()))
            .unwrap_err()
            .to_string();
        let want = format!("s.toml:{}: `{key}`: {message}", at.unwrap_or(0));
        assert!(err.starts_with(&want), "{err} (wanted {want})");
    }
    // In [google.credentials], and read from the environment: the line of the value.
    let text = format!(
        "{MINIMAL}[google.credentials]\nsts_endpoint = \"${{env:STS:-sts.example.com/v1/token}}\"\n"
    );
    let err = Config::parse_named(&text, "s.toml", &env, &|_| Err("none".into()))
        .unwrap_err()
        .to_string();
    let at = text.lines().count();
    assert!(
        err.starts_with(&format!(
            "s.toml:{at}: `google.credentials.sts_endpoint`: must be an http(s) URL: relative URL without a base"
        )),
        "{err}"
    );
    // A store URL that is no connection string: named, and the value never shown.
    let text = MINIMAL.replace(
        "postgres://postgres@127.0.0.1:5432/test",
        "postgres://app:hunter2@[bad/test",
    );
    let err = Config::parse_named(&text, "s.toml", &env, &|_| Err("none".into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("s.toml:3: `store.url`: is not a PostgreSQL"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
