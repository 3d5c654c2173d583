//! mcp-mock over stdio: newline-delimited JSON-RPC on stdin/stdout.

use std::process::Stdio;

use crate::common::within;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};

pub struct StdioMock {
    _child: tokio::process::Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl StdioMock {
    pub fn start(args: &[&str]) -> StdioMock {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-mock"))
            .arg("--stdio")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mcp-mock --stdio");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        StdioMock {
            _child: child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }

    pub async fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        within("stdin write", self.stdin.write_all(line.as_bytes()))
            .await
            .expect("write");
    }

    pub async fn next(&mut self) -> Value {
        let line = within("a stdout line", self.lines.next_line())
            .await
            .expect("read")
            .expect("stdout open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {line}"))
    }

    /// Sends a request and returns its response (notifications before it are skipped).
    pub async fn request(&mut self, message: &Value) -> Value {
        self.send(message).await;
        loop {
            let m = self.next().await;
            if m.get("method").is_none() && m["id"] == message["id"] {
                return m;
            }
        }
    }
}

#[tokio::test]
async fn stdio_initialize_and_tools_call() {
    let mut mock = StdioMock::start(&["--name", "gamma", "--no-dynamic"]);

    // Requests before initialize are refused.
    let early = mock
        .request(&json!({ "jsonrpc": "2.0", "id": "early", "method": "tools/list" }))
        .await;
    assert_eq!(early["error"]["code"], -32600);

    let init = mock
        .request(
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": { "sampling": {} },
            "clientInfo": { "name": "it", "version": "1" } } }),
        )
        .await;
    assert_eq!(init["result"]["serverInfo"]["name"], "gamma");
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    mock.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await;

    let echo = mock
        .request(&json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                          "params": { "name": "echo", "arguments": { "text": "over stdio" } } }))
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "over stdio");

    let who = mock
        .request(&json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                          "params": { "name": "whoami", "arguments": {} } }))
        .await;
    let who: Value =
        serde_json::from_str(who["result"]["content"][0]["text"].as_str().expect("text"))
            .expect("JSON");
    assert_eq!(
        who,
        json!({ "server": "gamma", "session": null, "id": 3, "headers": {} })
    );

    // A server-to-client request over stdio: answered on stdin, matched by id.
    mock.send(&json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/call",
                       "params": { "name": "test_sampling", "arguments": { "prompt": "p" } } }))
        .await;
    let sampling = mock.next().await;
    assert_eq!(sampling["method"], "sampling/createMessage");
    mock.send(&json!({ "jsonrpc": "2.0", "id": sampling["id"], "result": {
        "role": "assistant", "model": "m",
        "content": { "type": "text", "text": "stdio answer" } } }))
        .await;
    let done = mock.next().await;
    assert_eq!(done["id"], 4);
    assert_eq!(
        done["result"]["content"][0]["text"],
        "LLM response: stdio answer"
    );

    // Parse errors are answered with id null and the server keeps going.
    mock.stdin.write_all(b"{oops\n").await.expect("write");
    let parse = mock.next().await;
    assert_eq!(parse["error"]["code"], -32700);
    assert_eq!(parse["id"], Value::Null);
    let ping = mock
        .request(&json!({ "jsonrpc": "2.0", "id": 5, "method": "ping" }))
        .await;
    assert_eq!(ping["result"], json!({}));
}
