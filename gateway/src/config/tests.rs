use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", &|n| {
        (n == "TOKEN").then(|| "s3cret".to_string())
    })
}

#[test]
fn defaults_apply() {
    let c = parse("[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\n").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.max_body_bytes, 4 * 1024 * 1024);
    assert!(c.backends[0].prefix);
    assert!(c.server.allowed_hosts.contains(&"localhost".to_string()));
}

#[test]
fn env_reference_resolves_and_missing_one_names_key_and_line() {
    let c = parse(
        "[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { Authorization = \"Bearer ${env:TOKEN}\" }\n",
    )
    .unwrap();
    assert_eq!(c.backends[0].headers[0].1, "Bearer s3cret");
    let e = parse(
        "[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { X = \"${env:NOPE}\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("test.toml:4"), "{e}");
    assert!(e.contains("backend.headers.X"), "{e}");
    assert!(e.contains("NOPE"), "{e}");
}

#[test]
fn env_defaults() {
    let env = |n: &str| (n == "SET").then(|| "9000".to_string());
    let none = |_: &str| Err("none".to_string());
    assert_eq!(
        expand_refs("a:${env:SET:-1}", &env, &none).unwrap(),
        "a:9000"
    );
    assert_eq!(
        expand_refs("a:${env:UNSET:-8080}", &env, &none).unwrap(),
        "a:8080"
    );
    assert!(expand_refs("${env:UNSET}", &env, &none).is_err());
}

#[test]
fn unknown_key_reports_line() {
    let e = parse("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("listn"), "{e}");
}

#[test]
fn none_auth_refuses_public_listen() {
    let e = parse("[server]\nlisten = \"0.0.0.0:8080\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.listen"), "{e}");
    assert!(e.contains("loopback"), "{e}");
}

#[test]
fn two_unprefixed_backends_are_refused() {
    let e = parse(
        "[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\nprefix = false\n[[backend]]\nname = \"b\"\nurl = \"http://h/mcp\"\nprefix = false\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("prefix = false"), "{e}");
    assert!(e.contains(":5:"), "{e}");
}

#[test]
fn bad_backend_names() {
    for bad in ["a__b", "", "x y", "a_", &"n".repeat(33)] {
        let text = format!("[[backend]]\nname = {bad:?}\nurl = \"http://h/mcp\"\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("backend.name"), "{bad}: {e}");
    }
    let e = parse("[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\n[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\n").unwrap_err().to_string();
    assert!(e.contains("duplicate"), "{e}");
}

#[test]
fn disabled_backends_are_dropped_and_transport_checked() {
    let c = parse("[[backend]]\nname = \"a\"\nurl = \"http://h/mcp\"\nenabled = false\n").unwrap();
    assert!(c.backends.is_empty());
    let e = parse("[[backend]]\nname = \"a\"\ntransport = \"carrier-pigeon\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend.transport") && e.contains(":3:"), "{e}");
    let e = parse("[[backend]]\nname = \"a\"\nurl = \"ftp://h/mcp\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend.url"), "{e}");
}

#[test]
fn auth_modes_and_policies() {
    let c = parse("[server]\npublic_url = \"https://mcp.example.com\"\n[auth]\nmode = \"oauth\"\nissuer = \"https://auth.example.com\"\n[[backend]]\nname = \"g\"\nurl = \"http://h/mcp\"\nallow_groups = [\"sre\"]\nforward_identity = { email = \"X-Forwarded-Email\" }\ntools = { delete = { allow_users = [\"Boss@Example.com\"] } }\n").unwrap();
    assert_eq!(c.auth.mode, AuthMode::OAuth);
    assert_eq!(c.auth.audience, "https://mcp.example.com/mcp");
    assert_eq!(c.backends[0].policy.allow_groups, vec!["sre"]);
    assert_eq!(
        c.backends[0].tool_policies["delete"].allow_users,
        vec!["boss@example.com"]
    );
    assert_eq!(c.backends[0].forward_identity[0].1, "x-forwarded-email");
    let e = parse("[auth]\nmode = \"oauth\"\n").unwrap_err().to_string();
    assert!(e.contains("auth.issuer"), "{e}");
    let e = parse("[auth]\nmode = \"oauth\"\nissuer = \"https://a\"\nalgorithms = [\"HS256\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("auth.algorithms") && e.contains(":4:"), "{e}");
    let e = parse("[auth]\nmode = \"google-direct\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("allowed_domains"), "{e}");
    let e = parse("[auth]\nmode = \"saml\"\n").unwrap_err().to_string();
    assert!(e.contains("auth.mode"), "{e}");
    // With authentication the gateway may listen publicly.
    assert!(parse("[server]\nlisten = \"0.0.0.0:8080\"\npublic_url = \"https://m.example.com\"\n[auth]\nmode = \"oauth\"\nissuer = \"https://a\"\n").is_ok());
}

#[test]
fn stdio_backends() {
    let c = parse(
        "[[backend]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"server\"\nargs = [\"--x\"]\nenv = { KEY = \"${env:TOKEN}\" }\nsharing = \"per_session\"\nidle_timeout_s = 5\n",
    )
    .unwrap();
    let Transport::Stdio(s) = &c.backends[0].transport else {
        panic!("not stdio")
    };
    assert_eq!(s.args, vec!["--x"]);
    assert_eq!(s.env, vec![("KEY".to_string(), "s3cret".to_string())]);
    assert!(matches!(
        s.sharing,
        Sharing::PerSession {
            max_processes: 100,
            ..
        }
    ));
    let e = parse("[[backend]]\nname = \"t\"\ntransport = \"stdio\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend.command"), "{e}");
    let e = parse("[[backend]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"x\"\nsharing = \"sometimes\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend.sharing") && e.contains(":5:"), "{e}");
    let e = parse("[[backend]]\nname = \"t\"\nurl = \"http://h/mcp\"\ncommand = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend.command") && e.contains("stdio"), "{e}");
    let e = parse("[[backend]]\nname = \"t\"\ntransport = \"stdio\"\ncommand = \"x\"\nprocesses = 2\nsharing = \"per_session\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("backend.processes"), "{e}");
}

#[test]
fn session_key_formats() {
    let hex = "00".repeat(32);
    let c = parse(&format!("[server]\nsession_key = \"{hex}\"\n")).unwrap();
    assert_eq!(c.server.session_key, Some([0u8; 32]));
    let e = parse("[server]\nsession_key = \"short\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.session_key"), "{e}");
}

#[test]
fn every_mistake_is_reported_with_its_line() {
    let text = "\
[server]
listen = \"nowhere\"
[auth]
algorithms = [\"HS256\"]
[[backend]]
name = \"a\"
url = \"ftp://h/mcp\"
[audit]
file = \"audit.jsonl\"
batch_size = 0
";
    let Err(ConfigError::Invalid(found)) = parse(text) else {
        panic!("three mistakes, no error")
    };
    let at: Vec<(usize, &str)> = found.0.iter().map(|d| (d.line, d.key.as_str())).collect();
    assert_eq!(
        at,
        [
            (2, "server.listen"),
            (4, "auth.algorithms"),
            (7, "backend.url"),
            // The key's line, not the `[audit]` header's.
            (10, "audit.batch_size"),
        ],
        "{found}"
    );
    let shown = found.to_string();
    assert!(shown.starts_with("4 mistakes"), "{shown}");
    assert!(
        shown.contains("test.toml:10: `audit.batch_size`: 0 is out of range"),
        "{shown}"
    );
}

#[test]
fn a_conflict_names_both_lines() {
    let text = "\
[[backend]]
name = \"a\"
url = \"http://h/mcp\"
[[backend]]
name = \"b\"
url = \"http://h/mcp\"
[[backend]]
name = \"a\"
url = \"http://h/mcp\"
";
    let e = parse(text).unwrap_err().to_string();
    assert_eq!(
        e,
        "test.toml:8: `backend.name`: duplicate backend name \"a\"; every backend needs its own name\n\
         test.toml:2: `backend.name`: the other backend named \"a\""
    );
    let e =
        parse("[server]\nlisten = \"127.0.0.1:9100\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n")
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("test.toml:4: `metrics.listen`") && e.contains("test.toml:2:"),
        "{e}"
    );
}
