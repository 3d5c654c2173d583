//! The binary's command line: config errors and -t.

use std::process::Command;

fn run(config: &str, args: &[&str]) -> (i32, String) {
    let dir =
        std::env::temp_dir().join(format!("mcpgw-cli-{}-{}", std::process::id(), config.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("g.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_error_exits_non_zero_naming_key_and_line() {
    let (code, err) = run(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[backend]]\nname = \"a\"\nurl = \"not a url\"\n",
        &["-t"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":6:") && err.contains("backend.url"), "{err}");
}

#[test]
fn validate_only_exits_zero() {
    let (code, err) = run("[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/mcp\"\n", &["-t"]);
    assert_eq!(code, 0, "{err}");
}
