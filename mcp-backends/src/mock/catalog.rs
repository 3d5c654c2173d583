//! Resources, resource templates, prompts and completions of the mock: the fixtures
//! of the conformance reference server, plus `mock://{name}/info`.

use serde_json::{json, Map, Value};

use super::jsonrpc::{RpcError, RESOURCE_NOT_FOUND};
use super::server::MockServer;

/// A 1×1 red PNG.
pub const TEST_IMAGE_PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mP4z8AAAAMBAQD3A0FDAAAAAElFTkSuQmCC";
/// A 4-sample silent WAV (8 kHz, mono, 16 bit).
pub const TEST_AUDIO_WAV_BASE64: &str =
    "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQgAAAAAAAAAAAAAAA==";

pub const STATIC_TEXT_URI: &str = "test://static-text";
pub const STATIC_BINARY_URI: &str = "test://static-binary";
pub const WATCHED_URI: &str = "test://watched-resource";
pub const DYNAMIC_RESOURCE_URI: &str = "test://dynamic-resource";
pub const TEMPLATE_URI: &str = "test://template/{id}/data";
const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";

pub fn info_uri(server: &MockServer) -> String {
    format!("mock://{}/info", server.config.name)
}

fn resource(uri: &str, name: &str, title: &str, description: &str, mime: &str) -> Value {
    json!({
        "uri": uri,
        "name": name,
        "title": title,
        "description": description,
        "mimeType": mime,
    })
}

/// `resources/list`.
pub fn resources(server: &MockServer) -> Vec<Value> {
    let mut list = vec![
        resource(
            STATIC_TEXT_URI,
            "static-text",
            "Static Text Resource",
            "A static text resource for testing",
            "text/plain",
        ),
        resource(
            STATIC_BINARY_URI,
            "static-binary",
            "Static Binary Resource",
            "A static binary resource (image) for testing",
            "image/png",
        ),
        resource(
            WATCHED_URI,
            "watched-resource",
            "Watched Resource",
            "A subscribable resource that changes every 3 seconds",
            "text/plain",
        ),
    ];
    if server.dynamic_added() {
        list.push(resource(
            DYNAMIC_RESOURCE_URI,
            "dynamic-resource",
            "Dynamic Resource",
            "A resource added 2 seconds after the server started",
            "text/plain",
        ));
    }
    list.push(resource(
        &info_uri(server),
        "info",
        "Mock Server Info",
        "Which mock server this is (its --name)",
        "application/json",
    ));
    list
}

/// `resources/templates/list`.
pub fn resource_templates() -> Vec<Value> {
    vec![json!({
        "uriTemplate": TEMPLATE_URI,
        "name": "template",
        "title": "Resource Template",
        "description": "A resource template with parameter substitution",
        "mimeType": "application/json",
    })]
}

fn template_id(uri: &str) -> Option<&str> {
    let id = uri
        .strip_prefix(TEMPLATE_PREFIX)?
        .strip_suffix(TEMPLATE_SUFFIX)?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Whether `uri` names something `resources/read` can serve.
pub fn resource_exists(server: &MockServer, uri: &str) -> bool {
    read_resource(server, uri).is_ok()
}

pub fn not_found(uri: &str) -> RpcError {
    RpcError::new(RESOURCE_NOT_FOUND, format!("Resource not found: {uri}"))
        .with_data(json!({ "uri": uri }))
}

/// `resources/read`: the `contents` array.
pub fn read_resource(server: &MockServer, uri: &str) -> Result<Vec<Value>, RpcError> {
    let text = |mime: &str, text: String| json!({ "uri": uri, "mimeType": mime, "text": text });
    let content = match uri {
        STATIC_TEXT_URI => text(
            "text/plain",
            "This is the content of the static text resource.".to_string(),
        ),
        STATIC_BINARY_URI => json!({
            "uri": uri,
            "mimeType": "image/png",
            "blob": TEST_IMAGE_PNG_BASE64,
        }),
        WATCHED_URI => text(
            "text/plain",
            format!(
                "Watched resource content (version {})",
                server.watched_version()
            ),
        ),
        DYNAMIC_RESOURCE_URI if server.dynamic_added() => text(
            "text/plain",
            "This is a dynamically added resource.".to_string(),
        ),
        _ if uri == info_uri(server) => text(
            "application/json",
            json!({ "server": server.config.name }).to_string(),
        ),
        _ => match template_id(uri) {
            Some(id) => text(
                "application/json",
                json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") })
                    .to_string(),
            ),
            None => return Err(not_found(uri)),
        },
    };
    Ok(vec![content])
}

struct PromptDef {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    arguments: &'static [(&'static str, &'static str)],
}

const PROMPTS: [PromptDef; 4] = [
    PromptDef {
        name: "test_simple_prompt",
        title: "Simple Test Prompt",
        description: "A simple prompt without arguments",
        arguments: &[],
    },
    PromptDef {
        name: "test_prompt_with_arguments",
        title: "Prompt With Arguments",
        description: "A prompt with required arguments",
        arguments: &[
            ("arg1", "First test argument"),
            ("arg2", "Second test argument"),
        ],
    },
    PromptDef {
        name: "test_prompt_with_embedded_resource",
        title: "Prompt With Embedded Resource",
        description: "A prompt that includes an embedded resource",
        arguments: &[("resourceUri", "URI of the resource to embed")],
    },
    PromptDef {
        name: "test_prompt_with_image",
        title: "Prompt With Image",
        description: "A prompt that includes image content",
        arguments: &[],
    },
];

const DYNAMIC_PROMPT: PromptDef = PromptDef {
    name: "test_dynamic_prompt",
    title: "Dynamic Prompt",
    description: "A prompt added 2 seconds after the server started",
    arguments: &[],
};

fn prompt_defs(server: &MockServer) -> Vec<&'static PromptDef> {
    let mut defs: Vec<&'static PromptDef> = PROMPTS.iter().collect();
    if server.dynamic_added() {
        defs.push(&DYNAMIC_PROMPT);
    }
    defs
}

/// `prompts/list`.
pub fn prompts(server: &MockServer) -> Vec<Value> {
    prompt_defs(server)
        .into_iter()
        .map(|p| {
            let mut v = json!({ "name": p.name, "title": p.title, "description": p.description });
            if !p.arguments.is_empty() {
                v["arguments"] = p
                    .arguments
                    .iter()
                    .map(|(name, description)| {
                        json!({ "name": name, "description": description, "required": true })
                    })
                    .collect();
            }
            v
        })
        .collect()
}

fn user_text(text: &str) -> Value {
    json!({ "role": "user", "content": { "type": "text", "text": text } })
}

/// `prompts/get`: checks the arguments and renders the messages.
pub fn get_prompt(
    server: &MockServer,
    name: &str,
    arguments: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let def = prompt_defs(server)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| RpcError::invalid_params(format!("Unknown prompt: {name}")))?;
    let mut args: Vec<&str> = Vec::new();
    for (arg, _) in def.arguments {
        match arguments.get(*arg) {
            Some(Value::String(s)) => args.push(s),
            Some(_) => {
                return Err(RpcError::invalid_params(format!(
                    "argument '{arg}' of prompt '{name}' must be a string"
                )))
            }
            None => {
                return Err(RpcError::invalid_params(format!(
                    "missing required argument '{arg}' for prompt '{name}'"
                )))
            }
        }
    }
    let messages = match (name, args.as_slice()) {
        ("test_prompt_with_arguments", [arg1, arg2]) => vec![user_text(&format!(
            "Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        ))],
        ("test_prompt_with_embedded_resource", [uri]) => vec![
            json!({
                "role": "user",
                "content": {
                    "type": "resource",
                    "resource": {
                        "uri": uri,
                        "mimeType": "text/plain",
                        "text": "Embedded resource content for testing.",
                    },
                },
            }),
            user_text("Please process the embedded resource above."),
        ],
        ("test_prompt_with_image", _) => vec![
            json!({
                "role": "user",
                "content": { "type": "image", "data": TEST_IMAGE_PNG_BASE64, "mimeType": "image/png" },
            }),
            user_text("Please analyze the image above."),
        ],
        ("test_dynamic_prompt", _) => vec![user_text("This is a dynamically added prompt.")],
        _ => vec![user_text("This is a simple prompt for testing.")],
    };
    Ok(json!({ "description": def.description, "messages": messages }))
}

/// `completion/complete`: candidates for prompt arguments and template variables,
/// filtered by the typed prefix.
pub fn complete(server: &MockServer, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let reference = params
        .get("ref")
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::invalid_params("completion/complete requires 'ref' (object)"))?;
    let argument = params
        .get("argument")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            RpcError::invalid_params("completion/complete requires 'argument' (object)")
        })?;
    let arg_name = argument
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("'argument.name' must be a string"))?;
    let typed = argument
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("'argument.value' must be a string"))?;
    let candidates: Vec<String> = match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => {
            let name = reference
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| RpcError::invalid_params("'ref.name' must be a string"))?;
            if !prompt_defs(server).iter().any(|p| p.name == name) {
                return Err(RpcError::invalid_params(format!("Unknown prompt: {name}")));
            }
            match (name, arg_name) {
                ("test_prompt_with_arguments", "arg1") => ["paris", "park", "party", "test-value"]
                    .map(String::from)
                    .to_vec(),
                ("test_prompt_with_arguments", "arg2") => {
                    ["alpha", "beta", "gamma"].map(String::from).to_vec()
                }
                ("test_prompt_with_embedded_resource", "resourceUri") => resources(server)
                    .iter()
                    .filter_map(|r| r["uri"].as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            }
        }
        Some("ref/resource") => {
            let uri = reference
                .get("uri")
                .and_then(Value::as_str)
                .ok_or_else(|| RpcError::invalid_params("'ref.uri' must be a string"))?;
            if uri != TEMPLATE_URI {
                return Err(RpcError::invalid_params(format!(
                    "Unknown resource template: {uri}"
                )));
            }
            match arg_name {
                "id" => ["1", "2", "3", "42", "123"].map(String::from).to_vec(),
                _ => Vec::new(),
            }
        }
        _ => {
            return Err(RpcError::invalid_params(
                "'ref.type' must be \"ref/prompt\" or \"ref/resource\"",
            ))
        }
    };
    let values: Vec<String> = candidates
        .into_iter()
        .filter(|c| c.starts_with(typed))
        .collect();
    Ok(json!({
        "completion": { "values": values, "total": values.len(), "hasMore": false }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::config::MockConfig;

    #[test]
    fn template_ids() {
        assert_eq!(template_id("test://template/123/data"), Some("123"));
        assert_eq!(template_id("test://template//data"), None);
        assert_eq!(template_id("test://template/a/b/data"), None);
    }

    #[test]
    fn reads_and_not_found() {
        let server = MockServer::new(MockConfig::default(), None);
        let c = read_resource(&server, "test://template/7/data").expect("template");
        assert!(c[0]["text"].as_str().is_some_and(|t| t.contains("\"7\"")));
        let err = read_resource(&server, DYNAMIC_RESOURCE_URI).expect_err("not yet added");
        assert_eq!(err.code, RESOURCE_NOT_FOUND);
        server.add_dynamic();
        assert!(read_resource(&server, DYNAMIC_RESOURCE_URI).is_ok());
        assert!(read_resource(&server, "mock://mock/info").is_ok());
    }

    #[test]
    fn prompt_arguments_are_checked() {
        let server = MockServer::new(MockConfig::default(), None);
        let mut args = Map::new();
        args.insert("arg1".into(), json!("a"));
        let err = get_prompt(&server, "test_prompt_with_arguments", &args).expect_err("arg2");
        assert!(err.message.contains("arg2"));
        args.insert("arg2".into(), json!("b"));
        let ok = get_prompt(&server, "test_prompt_with_arguments", &args).expect("ok");
        assert!(ok.to_string().contains("arg1='a', arg2='b'"));
    }

    #[test]
    fn completion_filters() {
        let server = MockServer::new(MockConfig::default(), None);
        let params = json!({
            "ref": {"type": "ref/prompt", "name": "test_prompt_with_arguments"},
            "argument": {"name": "arg1", "value": "par"}
        });
        let r = complete(&server, params.as_object().expect("object")).expect("ok");
        assert_eq!(r["completion"]["values"], json!(["paris", "park", "party"]));
    }
}
