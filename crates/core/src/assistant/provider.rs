//! The model provider: one client, two wire formats — the OpenAI-compatible
//! chat-completions API with tool calls (OpenAI, Mistral, Azure OpenAI, vLLM, Ollama) and
//! the Anthropic messages API. Both are translated to and from the same few types, so the
//! guard pipeline around them (`super`) cannot tell which one answered.
//!
//! Every call has a timeout, a bounded number of retries for passing failures (429, 5xx,
//! an unreachable host), a cap on the tokens asked for and on the size of the answer read.
//! Nothing from the provider's error bodies is passed on: they can echo our request.

use std::time::Duration;

use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Largest answer body read from a provider; beyond it the answer is refused.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Pauses before the retries of a call that failed for a passing reason.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];
/// Longest `retry-after` honoured within one call; a longer one fails the call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);
const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// `POST {base}/chat/completions`, bearer key.
    OpenAi,
    /// `POST {base}/v1/messages`, `x-api-key`.
    Anthropic,
}

impl WireFormat {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "openai" => Some(WireFormat::OpenAi),
            "anthropic" => Some(WireFormat::Anthropic),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            WireFormat::OpenAi => "openai",
            WireFormat::Anthropic => "anthropic",
        }
    }
}

/// One deployment's model: where, which, with what key, within which bounds.
#[derive(Clone)]
pub struct ModelConfig {
    pub format: WireFormat,
    /// `https://api.openai.com/v1`, `https://api.mistral.ai/v1`, `https://api.anthropic.com`…
    pub base_url: url::Url,
    pub model: String,
    pub api_key: Zeroizing<String>,
    /// `max_tokens` of every call.
    pub max_output_tokens: u32,
    pub timeout: Duration,
}

impl std::fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelConfig")
            .field("format", &self.format)
            .field("base_url", &self.base_url.as_str())
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// A tool the model may ask for, described as both formats want it.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The provider's id for the call, echoed with its result.
    pub id: String,
    pub name: String,
    /// As the model wrote them; parsed strictly by `super::tools`, never trusted.
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub call_id: String,
    pub content: String,
    pub is_error: bool,
}

/// One step of a conversation as sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    User(String),
    Assistant { text: String, calls: Vec<ToolCall> },
    ToolResults(Vec<ToolResult>),
}

#[derive(Debug, Clone)]
pub struct ModelRequest<'a> {
    pub system: &'a str,
    pub turns: &'a [Turn],
    pub tools: &'a [ToolSpec],
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelReply {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The provider said what the call used (some OpenAI-compatible servers do not).
    pub usage_reported: bool,
    /// The answer stopped at `max_tokens`.
    pub truncated: bool,
}

/// Why a call gave no answer, in terms the page can state without the provider's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelError {
    Unreachable,
    Timeout,
    /// 429 from the provider, still after the retries.
    RateLimited,
    /// 5xx, still after the retries.
    Unavailable,
    /// 4xx: our key, model or request was refused.
    Rejected,
    /// Not the format's answer.
    Malformed,
    TooLarge,
}

/// The one HTTP client for model calls: no redirects (a redirect could carry the key
/// elsewhere), the deployment's timeout.
#[derive(Clone)]
pub struct ModelClient {
    config: ModelConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelClient").field("config", &self.config).finish()
    }
}

impl ModelClient {
    pub fn new(config: ModelConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5).min(config.timeout))
            .timeout(config.timeout)
            .build()?;
        Ok(Self { config, http })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn endpoint(&self) -> String {
        let base = self.config.base_url.as_str().trim_end_matches('/');
        match self.config.format {
            WireFormat::OpenAi => format!("{base}/chat/completions"),
            WireFormat::Anthropic => format!("{base}/v1/messages"),
        }
    }

    /// The request body in the deployment's format (public for the tests of the format).
    pub fn body(&self, req: &ModelRequest<'_>) -> Value {
        match self.config.format {
            WireFormat::OpenAi => openai_body(&self.config, req),
            WireFormat::Anthropic => anthropic_body(&self.config, req),
        }
    }

    /// One completion, retried at most twice for passing failures.
    pub async fn complete(&self, req: &ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        let body = serde_json::to_vec(&self.body(req)).map_err(|_| ModelError::Malformed)?;
        let mut attempt = 0;
        loop {
            let outcome = self.call_once(&body).await;
            let pause = match &outcome {
                Err(Failure::Passing(error, retry_after)) if attempt < RETRY_PAUSES.len() => match retry_after {
                    Some(wait) if *wait > MAX_RETRY_AFTER => return Err(*error),
                    Some(wait) => *wait,
                    None => RETRY_PAUSES[attempt],
                },
                _ => {
                    return outcome.map_err(|f| match f {
                        Failure::Passing(e, _) | Failure::Final(e) => e,
                    })
                }
            };
            attempt += 1;
            tokio::time::sleep(pause).await;
        }
    }

    async fn call_once(&self, body: &[u8]) -> Result<ModelReply, Failure> {
        let mut request = self.http.post(self.endpoint()).header("content-type", "application/json");
        request = match self.config.format {
            WireFormat::OpenAi => request.bearer_auth(self.config.api_key.as_str()),
            WireFormat::Anthropic => {
                request.header("x-api-key", self.config.api_key.as_str()).header("anthropic-version", ANTHROPIC_VERSION)
            }
        };
        let mut response = request.body(body.to_vec()).send().await.map_err(|e| {
            // A timed-out call may still be billed by the provider: not tried again.
            if e.is_timeout() {
                Failure::Final(ModelError::Timeout)
            } else {
                Failure::Passing(ModelError::Unreachable, None)
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(match status.as_u16() {
                429 => Failure::Passing(ModelError::RateLimited, retry_after),
                500..=599 => Failure::Passing(ModelError::Unavailable, retry_after),
                _ => Failure::Final(ModelError::Rejected),
            });
        }
        if response.content_length().is_some_and(|n| n > MAX_REPLY_BYTES as u64) {
            return Err(Failure::Final(ModelError::TooLarge));
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_REPLY_BYTES {
                        return Err(Failure::Final(ModelError::TooLarge));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(Failure::Final(ModelError::Timeout)),
                Err(_) => return Err(Failure::Passing(ModelError::Unreachable, None)),
            }
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| Failure::Final(ModelError::Malformed))?;
        let reply = match self.config.format {
            WireFormat::OpenAi => parse_openai(&value),
            WireFormat::Anthropic => parse_anthropic(&value),
        };
        reply.ok_or(Failure::Final(ModelError::Malformed))
    }
}

enum Failure {
    /// Worth another try (after this long, when the provider said).
    Passing(ModelError, Option<Duration>),
    Final(ModelError),
}

fn openai_body(config: &ModelConfig, req: &ModelRequest<'_>) -> Value {
    let mut messages = vec![json!({ "role": "system", "content": req.system })];
    for turn in req.turns {
        match turn {
            Turn::User(text) => messages.push(json!({ "role": "user", "content": text })),
            Turn::Assistant { text, calls } if calls.is_empty() => {
                messages.push(json!({ "role": "assistant", "content": text }))
            }
            Turn::Assistant { text, calls } => {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id,
                            "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments.to_string() },
                        })
                    })
                    .collect();
                let content = if text.is_empty() { Value::Null } else { Value::String(text.clone()) };
                messages.push(json!({ "role": "assistant", "content": content, "tool_calls": calls }));
            }
            Turn::ToolResults(results) => {
                for r in results {
                    messages.push(json!({ "role": "tool", "tool_call_id": r.call_id, "content": r.content }));
                }
            }
        }
    }
    let mut body = json!({ "model": config.model, "messages": messages, "max_tokens": config.max_output_tokens });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": { "name": t.name, "description": t.description, "parameters": t.parameters },
                })
            })
            .collect();
    }
    body
}

fn anthropic_body(config: &ModelConfig, req: &ModelRequest<'_>) -> Value {
    // The format wants strictly alternating roles, starting with the person: consecutive
    // turns of one role are merged into one message.
    let mut messages: Vec<Value> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        if let Some(last) = messages.last_mut().filter(|m| m["role"] == role) {
            if let Some(content) = last["content"].as_array_mut() {
                content.extend(blocks);
            }
        } else {
            messages.push(json!({ "role": role, "content": blocks }));
        }
    };
    for turn in req.turns {
        match turn {
            Turn::User(text) => push("user", vec![json!({ "type": "text", "text": text })]),
            Turn::Assistant { text, calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
                for c in calls {
                    let input = if c.arguments.is_object() { c.arguments.clone() } else { json!({}) };
                    blocks.push(json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": input }));
                }
                push("assistant", blocks);
            }
            Turn::ToolResults(results) => push(
                "user",
                results
                    .iter()
                    .map(|r| {
                        json!({
                            "type": "tool_result",
                            "tool_use_id": r.call_id,
                            "content": r.content,
                            "is_error": r.is_error,
                        })
                    })
                    .collect(),
            ),
        }
    }
    if messages.first().is_some_and(|m| m["role"] != "user") {
        messages
            .insert(0, json!({ "role": "user", "content": [{ "type": "text", "text": "(conversation continues)" }] }));
    }
    let mut body = json!({
        "model": config.model,
        "max_tokens": config.max_output_tokens,
        "system": req.system,
        "messages": messages,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
            .collect();
    }
    body
}

fn parse_openai(value: &Value) -> Option<ModelReply> {
    let choice = value["choices"].as_array()?.first()?;
    let message = &choice["message"];
    let text = message["content"].as_str().unwrap_or_default().to_string();
    let mut calls = Vec::new();
    if let Some(list) = message["tool_calls"].as_array() {
        for c in list {
            let name = c["function"]["name"].as_str()?.to_string();
            let raw = c["function"]["arguments"].as_str().unwrap_or("{}");
            // Unparseable arguments stay visible as such: the strict parser refuses them.
            let arguments = serde_json::from_str(raw).unwrap_or_else(|_| json!({ "unparsed": raw }));
            calls.push(ToolCall { id: c["id"].as_str()?.to_string(), name, arguments });
        }
    }
    Some(ModelReply {
        text,
        calls,
        input_tokens: value["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: value["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        usage_reported: value["usage"]["prompt_tokens"].is_u64() && value["usage"]["completion_tokens"].is_u64(),
        truncated: choice["finish_reason"] == "length",
    })
}

fn parse_anthropic(value: &Value) -> Option<ModelReply> {
    if value["type"] != "message" {
        return None;
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in value["content"].as_array()? {
        match block["type"].as_str()? {
            "text" => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(block["text"].as_str()?);
            }
            "tool_use" => calls.push(ToolCall {
                id: block["id"].as_str()?.to_string(),
                name: block["name"].as_str()?.to_string(),
                arguments: block["input"].clone(),
            }),
            _ => {}
        }
    }
    Some(ModelReply {
        text,
        calls,
        input_tokens: value["usage"]["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: value["usage"]["output_tokens"].as_u64().unwrap_or(0),
        usage_reported: value["usage"]["input_tokens"].is_u64() && value["usage"]["output_tokens"].is_u64(),
        truncated: value["stop_reason"] == "max_tokens",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(format: WireFormat) -> ModelClient {
        ModelClient::new(ModelConfig {
            format,
            base_url: url::Url::parse("http://127.0.0.1:9/v1").unwrap(),
            model: "m".into(),
            api_key: Zeroizing::new("k".into()),
            max_output_tokens: 100,
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    fn exchange() -> Vec<Turn> {
        vec![
            Turn::User("who?".into()),
            Turn::Assistant {
                text: String::new(),
                calls: vec![ToolCall { id: "c1".into(), name: "list_members".into(), arguments: json!({}) }],
            },
            Turn::ToolResults(vec![ToolResult { call_id: "c1".into(), content: "[]".into(), is_error: false }]),
        ]
    }

    #[test]
    fn openai_tool_exchange_uses_string_arguments_and_tool_messages() {
        let turns = exchange();
        let body = client(WireFormat::OpenAi).body(&ModelRequest { system: "s", turns: &turns, tools: &[] });
        let m = body["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"], "system");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(m[3]["role"], "tool");
        assert_eq!(m[3]["tool_call_id"], "c1");
    }

    #[test]
    fn anthropic_alternates_roles_and_answers_tool_use_with_tool_result() {
        let mut turns = vec![Turn::User("a".into()), Turn::User("b".into())];
        turns.extend(exchange());
        let body = client(WireFormat::Anthropic).body(&ModelRequest { system: "s", turns: &turns, tools: &[] });
        let m = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = m.iter().map(|x| x["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(m[0]["content"].as_array().unwrap().len(), 3);
        assert_eq!(m[2]["content"][0]["tool_use_id"], "c1");
        assert_eq!(body["system"], "s");
    }

    #[test]
    fn replies_parse_in_both_formats() {
        let o = json!({"choices":[{"message":{"content":null,"tool_calls":[{"id":"x","type":"function",
            "function":{"name":"n","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":3,"completion_tokens":4}});
        let r = parse_openai(&o).unwrap();
        assert_eq!(r.calls[0].arguments, json!({"a":1}));
        assert_eq!((r.input_tokens, r.output_tokens), (3, 4));
        let a = json!({"type":"message","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t",
            "name":"n","input":{"b":2}}],"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":2}});
        let r = parse_anthropic(&a).unwrap();
        assert_eq!(r.text, "hi");
        assert!(r.truncated);
        assert!(parse_anthropic(&json!({"type":"error"})).is_none());
        let bad =
            json!({"choices":[{"message":{"tool_calls":[{"id":"x","function":{"name":"n","arguments":"{oops"}}]}}]});
        assert_eq!(parse_openai(&bad).unwrap().calls[0].arguments, json!({"unparsed":"{oops"}));
    }
}
