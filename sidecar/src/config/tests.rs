//! The configuration's unit tests: defaults, references, errors (key, line, no secret).

use super::server::valid_schema_name;
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
    assert_eq!(c.tokens.access_token_ttl_s, 600);
    assert_eq!(c.tokens.code_ttl_s, 60);
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
    assert_eq!(c.server.body_timeout_s, 10);
    assert_eq!(c.server.max_connections, 4096);
    assert_eq!(c.clients.unused_registration_ttl_s, 86_400);
    assert_eq!(c.store.cleanup_interval_s, 300);
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
