// A local LLM server for tests: the OpenAI chat-completions or the Anthropic messages wire
// format over real HTTP (non-streaming), whose "model" is deterministic, scripted per test and
// adversarial. Plain node, no packages.
//   node end2end/model-server.cjs PORT openai|anthropic [API_KEY]
//   -> prints "model server (FORMAT) listening on http://127.0.0.1:PORT" once ready.
//   GET /healthz -> 200 "ok".
// openai:    POST /v1/chat/completions, `Authorization: Bearer API_KEY`.
// anthropic: POST /v1/messages, `x-api-key: API_KEY` and `anthropic-version` (required).
// Without API_KEY any key (or none) is accepted. The other format's path -> 404.
// Requests are validated like the real APIs, so client bugs show up as 400s in the API's own
// error shape: model, max_tokens (required for anthropic), message roles and content blocks,
// tools, `stream: true` (refused: not implemented). Tool history is checked as strictly as the
// real services do:
//   openai: an assistant message with tool_calls (arguments a JSON-encoded *string*) must be
//     followed by one `tool` message per call id before anything else; a `tool` message must
//     answer a pending call of the assistant message just before.
//   anthropic: first message user, roles alternate, no "system" role inside messages; each
//     tool_result answers a tool_use of the immediately preceding assistant message, every
//     tool_use is answered in the next user message, tool_result blocks come before any text
//     in that message, and tool blocks need `tools` in the request.
// Tokens: ceil(characters / 4) of the request's text (system, messages, tool calls, tool
// definitions) and of the reply's text (text, tool names and arguments). A reply over the
// request's max_tokens (openai: max_completion_tokens or max_tokens) is cut to max_tokens * 4
// characters (tool calls that no longer fit are dropped) with finish_reason "length" /
// stop_reason "max_tokens".
//
// The model. The conversation is normalised into system text and entries user / assistant /
// tool (one per tool result). The current question is the last user text that does not sit in
// a tool-result turn (user text sent along with or after tool results, before the next
// assistant message, belongs to those results); the step is the number of assistant messages
// after it.
//  1. Injection: it obeys instructions in every user text and tool result after the last
//     assistant message (never the system prompt, never its own messages). Datamarking is undone
//     first: any character that is not printable ASCII, not a letter of any script and not
//     whitespace, and U+02C6 (ˆ), becomes a space. Forms (keywords case-insensitive, extra
//     spaces allowed): [[call TOOL {json object}]] and [[say TEXT]]. A text that parses as JSON
//     (before or after unmarking) is searched through its string values (nested JSON strings
//     too); other text is searched as is, and JSON-escaped arguments (\") are unescaped.
//     Found -> the calls as tool calls in order (arguments that do not parse: {"raw": "..."}),
//     the say texts joined by "\n" as the text. Wins over any script.
//  2. Script: the most recently registered script whose `match` occurs in the current question
//     plays steps[step]; past the last step the reply is "Done.".
//  3. Otherwise: "I can answer questions about this workspace's members, your integrations and
//     recent activity."
//  Say texts expand {{system}} (the whole system prompt) and {{last_tool_result}} (the latest
//  tool result, verbatim). Tool calls -> finish_reason "tool_calls" / stop_reason "tool_use",
//  else "stop" / "end_turn".
//
// Test control (plain JSON; state is shared by every test using this server):
//   GET  /__test/requests -> {"requests": [{method, path, headers, auth_ok, body, status}]} since
//        the last reset, model calls and stray requests alike (not /__test/ nor /healthz).
//        Header names lower-cased; authorization and x-api-key values read "<redacted>";
//        auth_ok: the request passed the key check (always true without API_KEY). body: the
//        parsed JSON (raw text if it did not parse; null over 2 MB). status: the answer's.
//   POST /__test/script {"match": "substring", "steps": [STEP, ...]} -> registers, replacing the
//        script with the same match. STEP: {"say": "text"} or {"call": [{"name", "arguments",
//        "id"?}], "say"?: "text"}. arguments: an object, or a string sent verbatim as the openai
//        arguments string (malformed JSON on purpose; anthropic gets it parsed if it is an
//        object, else {"raw": string}). id: the tool call id to use (default: a fresh one).
//   POST /__test/outage {"down": bool, "status"?: 503, "retry_after"?: seconds} -> while down,
//        model calls answer that status in the format's error shape (anthropic 429
//        rate_limit_error, 500 api_error, 503/529 overloaded_error; openai 429 code
//        rate_limit_exceeded, 5xx type server_error), with `retry-after` when given.
//   POST /__test/fail_next {"count": n, "status"?: 503, "retry_after"?: seconds} -> the next n
//        model calls fail that way, then normal again.
//   POST /__test/delay {"ms": n} -> every model-call answer (errors too) waits n ms first.
//   POST /__test/huge {"bytes": n} -> the next successful reply's text is n bytes of ASCII
//        (max_tokens ignored); content-length is always exact.
//   GET  /__test/stats -> {"calls": n, "by_status": {"200": n, ...}}: every answer on the model
//        path, whatever its status.
//   POST /__test/reset -> clears requests, scripts, outage, fail_next, delay, huge and stats.
// Outage and fail_next apply only to requests that passed the key check and validation, so a
// malformed request still gets its 400. Request bodies over 2 MB -> 413; other methods than POST
// on the model path -> 405.
const http = require('http');
const crypto = require('crypto');
const { URL } = require('url');

const port = Number(process.argv[2]);
const format = process.argv[3];
const apiKey = process.argv[4] || '';
if (!Number.isInteger(port) || port < 1 || port > 65535 || !['openai', 'anthropic'].includes(format)) {
  console.error('usage: node end2end/model-server.cjs PORT openai|anthropic [API_KEY]');
  process.exit(2);
}
const OPENAI = format === 'openai';
const MODEL_PATH = OPENAI ? '/v1/chat/completions' : '/v1/messages';
const MAX_BODY = 2 * 1024 * 1024;
const DEFAULT_TEXT = "I can answer questions about this workspace's members, your integrations and recent activity.";
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

let requests;
let scripts;
let outage;
let failNext;
let delayMs;
let hugeBytes;
let stats;
function reset() {
  requests = [];
  scripts = [];
  outage = { down: false, status: 503, retry_after: null };
  failNext = { count: 0, status: 503, retry_after: null };
  delayMs = 0;
  hugeBytes = 0;
  stats = { calls: 0, by_status: {} };
}
reset();

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const chars = (s) => (s ? [...s].length : 0);
const tokens = (n) => Math.ceil(n / 4);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
function randomId(length) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return [...crypto.randomBytes(length)].map((b) => alphabet[b % alphabet.length]).join('');
}

// ---------------------------------------------------------------------------------------------
// Errors in the format's own shape

class ApiError extends Error {
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

function errorBody(status, message, param) {
  if (OPENAI) {
    let type = 'invalid_request_error';
    let code = null;
    if (status === 401) code = 'invalid_api_key';
    else if (status === 429) { type = 'requests'; code = 'rate_limit_exceeded'; }
    else if (status >= 500) { type = 'server_error'; code = 'server_error'; }
    return { error: { message, type, param: param ?? null, code } };
  }
  const types = {
    400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error',
    404: 'not_found_error', 413: 'request_too_large', 429: 'rate_limit_error', 500: 'api_error',
    503: 'overloaded_error', 529: 'overloaded_error',
  };
  const type = types[status] || (status >= 500 ? 'api_error' : 'invalid_request_error');
  return { type: 'error', error: { type, message } };
}

function failureMessage(status) {
  if (status === 429) return OPENAI ? 'Rate limit reached for requests' : 'Number of requests exceeds your rate limit';
  if (status === 503 || status === 529) return OPENAI ? 'The server is overloaded or not ready yet.' : 'Overloaded';
  if (status >= 500) {
    return OPENAI ? 'The server had an error while processing your request.' : 'Internal server error';
  }
  return `Test failure (${status})`;
}

// ---------------------------------------------------------------------------------------------
// Validation and normalisation into {system, entries: [{role, text, calls?, id?}], tools,
// maxTokens}; calls: [{id, name, args}] with args the JSON text of the arguments.

function need(ok, message, param) {
  if (!ok) throw new ApiError(400, message, param);
}

function openaiContent(content, p) {
  if (typeof content === 'string') return content;
  need(Array.isArray(content) && content.length,
    `Invalid '${p}.content': expected a string or a non-empty array of content parts.`, `${p}.content`);
  return content.map((part, j) => {
    need(isObj(part) && part.type === 'text' && typeof part.text === 'string',
      `Invalid '${p}.content[${j}]': only {"type": "text", "text"} parts are supported.`, `${p}.content[${j}]`);
    return part.text;
  }).join('\n');
}

function validateOpenaiTools(tools) {
  need(Array.isArray(tools) && tools.length, "Invalid 'tools': expected a non-empty array.", 'tools');
  const names = new Set();
  tools.forEach((t, i) => {
    const p = `tools[${i}]`;
    need(isObj(t) && t.type === 'function', `Invalid '${p}.type': expected 'function'.`, `${p}.type`);
    const f = t.function;
    need(isObj(f), `Missing required parameter: '${p}.function'.`, `${p}.function`);
    need(typeof f.name === 'string' && TOOL_NAME.test(f.name),
      `Invalid '${p}.function.name': string does not match pattern '${TOOL_NAME.source}'.`, `${p}.function.name`);
    need(!names.has(f.name), `Invalid 'tools': duplicate function name '${f.name}'.`, 'tools');
    names.add(f.name);
    need(f.description === undefined || typeof f.description === 'string',
      `Invalid '${p}.function.description': expected a string.`, `${p}.function.description`);
    need(f.parameters === undefined || isObj(f.parameters),
      `Invalid '${p}.function.parameters': expected a JSON Schema object.`, `${p}.function.parameters`);
  });
}

function openaiToolCalls(toolCalls, p, seenIds) {
  need(Array.isArray(toolCalls) && toolCalls.length,
    `Invalid '${p}.tool_calls': expected a non-empty array.`, `${p}.tool_calls`);
  return toolCalls.map((c, j) => {
    const q = `${p}.tool_calls[${j}]`;
    need(isObj(c), `Invalid type for '${q}': expected an object.`, q);
    need(typeof c.id === 'string' && c.id, `Missing required parameter: '${q}.id'.`, `${q}.id`);
    need(!seenIds.has(c.id), `Invalid '${q}.id': duplicate tool call id '${c.id}'.`, `${q}.id`);
    seenIds.add(c.id);
    need(c.type === 'function', `Invalid value for '${q}.type': expected 'function'.`, `${q}.type`);
    const f = c.function;
    need(isObj(f), `Missing required parameter: '${q}.function'.`, `${q}.function`);
    need(typeof f.name === 'string' && f.name, `Missing required parameter: '${q}.function.name'.`, `${q}.function`);
    const a = `${q}.function.arguments`;
    need(typeof f.arguments === 'string',
      `Invalid type for '${a}': expected a string (JSON-encoded arguments), got ${JSON.stringify(f.arguments)}.`, a);
    try { JSON.parse(f.arguments); } catch { need(false, `Invalid '${a}': not valid JSON.`, a); }
    return { id: c.id, name: f.name, args: f.arguments };
  });
}

function validateOpenai(b) {
  need(isObj(b), 'The request body must be a JSON object.');
  need(typeof b.model === 'string' && b.model, 'you must provide a model parameter', 'model');
  need(b.stream == null || typeof b.stream === 'boolean', "Invalid type for 'stream': expected a boolean.", 'stream');
  need(b.stream !== true, 'stream: true is not supported by this test server.', 'stream');
  for (const k of ['max_tokens', 'max_completion_tokens']) {
    need(b[k] == null || (Number.isInteger(b[k]) && b[k] >= 1), `Invalid '${k}': expected an integer >= 1.`, k);
  }
  const t = b.temperature;
  need(t == null || (typeof t === 'number' && t >= 0 && t <= 2), "Invalid 'temperature': not in 0..2.", 'temperature');
  need(b.n == null || b.n === 1, "Invalid 'n': this test server produces one choice.", 'n');
  if (b.tools !== undefined) validateOpenaiTools(b.tools);
  else {
    need(b.tool_choice == null || b.tool_choice === 'none',
      "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", 'tool_choice');
  }
  need(Array.isArray(b.messages) && b.messages.length, "Invalid 'messages': expected a non-empty array.", 'messages');

  const system = [];
  const entries = [];
  const seenIds = new Set();
  let pending = null; // call ids of the last assistant message still waiting for their tool message
  const allAnswered = () => need(!pending,
    "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
    + `The following tool_call_ids did not have response messages: ${[...(pending || [])].join(', ')}`, 'messages');
  b.messages.forEach((m, i) => {
    const p = `messages[${i}]`;
    need(isObj(m), `Invalid type for '${p}': expected an object.`, p);
    if (m.role !== 'tool') allAnswered();
    if (m.role === 'system') {
      system.push(openaiContent(m.content, p));
    } else if (m.role === 'user') {
      entries.push({ role: 'user', text: openaiContent(m.content, p) });
    } else if (m.role === 'assistant') {
      const calls = m.tool_calls == null ? [] : openaiToolCalls(m.tool_calls, p, seenIds);
      need(m.content != null || calls.length, `Invalid '${p}': 'content' is required without 'tool_calls'.`, p);
      entries.push({ role: 'assistant', text: m.content == null ? '' : openaiContent(m.content, p), calls });
      pending = calls.length ? new Set(calls.map((c) => c.id)) : null;
    } else if (m.role === 'tool') {
      const id = m.tool_call_id;
      need(typeof id === 'string' && id, `Missing required parameter: '${p}.tool_call_id'.`, `${p}.tool_call_id`);
      need(pending && pending.has(id), "Invalid parameter: messages with role 'tool' must be a response to a "
        + `preceding message with 'tool_calls' (no pending tool call '${id}').`, `${p}.tool_call_id`);
      pending.delete(id);
      if (!pending.size) pending = null;
      entries.push({ role: 'tool', text: openaiContent(m.content, p), id });
    } else {
      need(false, `Invalid value: '${m.role}'. Supported values: 'system', 'assistant', 'user', 'tool'.`, `${p}.role`);
    }
  });
  allAnswered();
  return {
    system: system.join('\n\n'),
    entries,
    tools: b.tools || [],
    maxTokens: b.max_completion_tokens ?? b.max_tokens ?? null,
  };
}

function anthropicText(blocks, p) {
  if (typeof blocks === 'string') return blocks;
  need(Array.isArray(blocks), `${p}: Input should be a valid string or a list of text blocks`);
  return blocks.map((blk, j) => {
    need(isObj(blk) && blk.type === 'text' && typeof blk.text === 'string', `${p}.${j}: only text blocks allowed`);
    return blk.text;
  }).join('\n');
}

function validateAnthropicTools(tools) {
  need(Array.isArray(tools), 'tools: Input should be a valid list');
  const names = new Set();
  tools.forEach((t, i) => {
    const p = `tools.${i}`;
    need(isObj(t), `${p}: Input should be an object`);
    need(t.type === undefined || t.type === 'custom', `${p}.type: only custom tools are supported here`);
    need(typeof t.name === 'string' && TOOL_NAME.test(t.name), `${p}.name: String should match '${TOOL_NAME.source}'`);
    need(!names.has(t.name), `tools: Tool names must be unique (${t.name})`);
    names.add(t.name);
    need(t.description === undefined || typeof t.description === 'string', `${p}.description: should be a string`);
    need(isObj(t.input_schema), `${p}.input_schema: Field required`);
    need(t.input_schema.type === 'object', `${p}.input_schema.type: Input should be 'object'`);
  });
}

function validateAnthropic(b) {
  need(isObj(b), 'The request body must be a JSON object.');
  need(typeof b.model === 'string' && b.model, 'model: Field required');
  need(b.max_tokens !== undefined, 'max_tokens: Field required');
  need(Number.isInteger(b.max_tokens) && b.max_tokens >= 1, 'max_tokens: Input should be an integer >= 1');
  need(b.stream === undefined || typeof b.stream === 'boolean', 'stream: Input should be a valid boolean');
  need(b.stream !== true, 'stream: true is not supported by this test server.');
  const t = b.temperature;
  need(t === undefined || (typeof t === 'number' && t >= 0 && t <= 1), 'temperature: Input should be between 0 and 1');
  const system = b.system === undefined ? '' : anthropicText(b.system, 'system');
  if (b.tools !== undefined) validateAnthropicTools(b.tools);
  need(Array.isArray(b.messages) && b.messages.length, 'messages: at least one message is required');

  const entries = [];
  const seenIds = new Set();
  let toolBlocks = false;
  let prev = null; // {role, toolUseIds}
  b.messages.forEach((m, i) => {
    const p = `messages.${i}`;
    need(isObj(m), `${p}: Input should be an object`);
    need(m.role !== 'system', `${p}.role: Unexpected role "system". The Messages API accepts a top-level \`system\` `
      + 'parameter, not "system" as an input message role.');
    need(m.role === 'user' || m.role === 'assistant', `${p}.role: Input should be 'user' or 'assistant'`);
    need(i > 0 || m.role === 'user', 'messages: first message must use the "user" role');
    need(!prev || prev.role !== m.role,
      `messages: roles must alternate between "user" and "assistant", but found multiple "${m.role}" roles in a row`);
    // Only a final assistant message (a prefill) may be empty.
    const mayBeEmpty = i === b.messages.length - 1 && m.role === 'assistant';
    need(typeof m.content === 'string' || Array.isArray(m.content), `${p}.content: should be a string or a list`);
    need(mayBeEmpty || m.content.length,
      `${p}: all messages must have non-empty content except for the optional final assistant message`);
    const blocks = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content;
    const pendingIds = prev ? prev.toolUseIds : [];
    const texts = [];
    const calls = [];
    const answered = new Set();
    blocks.forEach((blk, j) => {
      const q = `${p}.content.${j}`;
      need(isObj(blk), `${q}: Input should be an object`);
      if (blk.type === 'text') {
        need(typeof blk.text === 'string', `${q}.text: Field required`);
        need(blk.text.trim() || (mayBeEmpty && typeof m.content === 'string'),
          'messages: text content blocks must contain non-whitespace text');
        texts.push(blk.text);
      } else if (blk.type === 'tool_use') {
        toolBlocks = true;
        need(m.role === 'assistant', `${q}: tool_use blocks can only appear in assistant messages`);
        need(typeof blk.id === 'string' && /^[a-zA-Z0-9_-]+$/.test(blk.id), `${q}.id: want '^[a-zA-Z0-9_-]+$'`);
        need(!seenIds.has(blk.id), `messages: \`tool_use\` ids must be unique (${blk.id})`);
        seenIds.add(blk.id);
        need(typeof blk.name === 'string' && blk.name, `${q}.name: Field required`);
        need(isObj(blk.input), `${q}.input: Input should be a valid dictionary`);
        calls.push({ id: blk.id, name: blk.name, args: JSON.stringify(blk.input) });
      } else if (blk.type === 'tool_result') {
        toolBlocks = true;
        const id = blk.tool_use_id;
        need(m.role === 'user', `${q}: tool_result blocks can only appear in user messages`);
        need(typeof id === 'string' && id, `${q}.tool_use_id: Field required`);
        need(!texts.length, `${p}.content: tool_result blocks must come first in the user message, before any text`);
        need(pendingIds.includes(id) && !answered.has(id), `${q}: unexpected \`tool_use_id\` found in \`tool_result\` `
          + `blocks: ${id}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous `
          + 'message.');
        answered.add(id);
        need(blk.is_error === undefined || typeof blk.is_error === 'boolean', `${q}.is_error: should be a boolean`);
        const text = blk.content === undefined ? '' : anthropicText(blk.content, `${q}.content`);
        entries.push({ role: 'tool', text, id });
      } else {
        need(false, `${q}.type: Input tag '${blk.type}' found using 'type' does not match any of the expected tags: `
          + "'text', 'tool_use', 'tool_result'");
      }
    });
    if (m.role === 'user') {
      const missing = pendingIds.filter((id) => !answered.has(id));
      need(!missing.length, `${p}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: `
        + `${missing.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next `
        + 'message.');
      if (texts.length) entries.push({ role: 'user', text: texts.join('\n') });
    } else {
      entries.push({ role: 'assistant', text: texts.join('\n'), calls });
    }
    prev = { role: m.role, toolUseIds: calls.map((c) => c.id) };
  });
  need(!toolBlocks || b.tools !== undefined,
    'Requests which include `tool_use` or `tool_result` blocks must define tools.');
  return { system, entries, tools: b.tools || [], maxTokens: b.max_tokens };
}

// ---------------------------------------------------------------------------------------------
// The model

// Undoes datamarking (spotlighting): markers are symbols or modifier letters put where spaces were.
const unmark = (s) => s.replace(/[^\p{L}\s!-~]|\u02C6/gu, ' ');

// Parses JSON text into an object, array or string; anything else -> undefined.
function tryJson(s) {
  const t = s.trim();
  if (!/^[[{"]/.test(t)) return undefined;
  try {
    const v = JSON.parse(t);
    return typeof v === 'object' || typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

// Undoes JSON string escaping (\" \n \u0041) of text that was cut out of serialised JSON.
function unescapeJson(s) {
  if (!s.includes('\\')) return undefined;
  try {
    return JSON.parse(`"${s.replace(/(^|[^\\])"/g, '$1\\"')}"`);
  } catch {
    return undefined;
  }
}

function stringsIn(v, out, depth = 0) {
  if (typeof v === 'string') {
    const inner = depth < 8 ? tryJson(v) : undefined;
    if (inner !== undefined && typeof inner === 'object' && inner !== null) stringsIn(inner, out, depth + 1);
    else out.push(v);
  } else if (Array.isArray(v)) {
    v.forEach((x) => stringsIn(x, out, depth + 1));
  } else if (isObj(v)) {
    Object.values(v).forEach((x) => stringsIn(x, out, depth + 1));
  }
  return out;
}

// Bodies stop at the next instruction's opening so one malformed instruction cannot swallow another.
const BODY = '(?:(?!\\[\\s*\\[\\s*(?:call|say)\\b)[\\s\\S])*?';
const INSTRUCTION = new RegExp(
  `\\[\\s*\\[\\s*(?:call\\s+([A-Za-z0-9_.:-]+)\\s*(\\{${BODY}\\}|${BODY})|say\\s+(${BODY}))\\s*\\]\\s*\\]`,
  'gi',
);

function parseArgs(src) {
  const s = src.trim();
  if (!s) return {};
  for (const candidate of [s, unescapeJson(s)]) {
    if (candidate === undefined) continue;
    try {
      const v = JSON.parse(candidate);
      if (isObj(v)) return v;
    } catch { /* try the next reading */ }
  }
  return { raw: s };
}

function scanText(text, escaped) {
  const found = [];
  for (const m of unmark(text).matchAll(INSTRUCTION)) {
    if (m[1] !== undefined) {
      found.push({ call: { name: m[1], args: parseArgs(m[2]) } });
    } else {
      const say = m[3].trim();
      found.push({ say: (escaped && unescapeJson(say)) || say });
    }
  }
  return found;
}

function scanPiece(text) {
  const parsed = tryJson(text) ?? tryJson(unmark(text));
  if (parsed !== undefined) return stringsIn(parsed, []).flatMap((s) => scanText(s, false));
  return scanText(text, true);
}

function fill(text, ctx) {
  return text
    .replace(/\{\{\s*system\s*\}\}/gi, () => ctx.system)
    .replace(/\{\{\s*last_tool_result\s*\}\}/gi, () => ctx.lastToolResult);
}

// -> {source, text (string|null), calls: [{id?, name, args (object|string)}]}
function think(conv) {
  const { entries } = conv;
  let lastAssistant = -1;
  let question = -1;
  let inToolTurn = false;
  entries.forEach((e, i) => {
    if (e.role === 'assistant') {
      lastAssistant = i;
      inToolTurn = false;
    } else if (e.role === 'tool') {
      inToolTurn = true;
    } else if (e.text.trim() && !inToolTurn) {
      question = i;
    }
  });
  const questionText = question >= 0 ? entries[question].text : '';
  const step = entries.slice(question + 1).filter((e) => e.role === 'assistant').length;
  const lastTool = entries.filter((e) => e.role === 'tool').pop();
  const ctx = { system: conv.system, lastToolResult: lastTool ? lastTool.text : '' };

  const found = entries.slice(lastAssistant + 1).flatMap((e) => scanPiece(e.text));
  if (found.length) {
    const says = found.filter((f) => f.say !== undefined).map((f) => fill(f.say, ctx));
    return {
      source: 'injection',
      text: says.length ? says.join('\n') : null,
      calls: found.filter((f) => f.call).map((f) => f.call),
    };
  }
  const script = questionText && [...scripts].reverse().find(
    (s) => questionText.includes(s.match) || unmark(questionText).includes(s.match),
  );
  if (script) {
    const source = `script ${JSON.stringify(script.match)} step ${step}`;
    if (step >= script.steps.length) return { source, text: 'Done.', calls: [] };
    const st = script.steps[step];
    return { source, text: st.say === undefined ? null : fill(st.say, ctx), calls: st.call || [] };
  }
  return { source: 'default', text: DEFAULT_TEXT, calls: [] };
}

// ---------------------------------------------------------------------------------------------
// Replies

const argsText = (args) => (typeof args === 'string' ? args : JSON.stringify(args));
function argsObject(args) {
  if (isObj(args)) return args;
  if (typeof args === 'string') {
    try {
      const v = JSON.parse(args);
      if (isObj(v)) return v;
    } catch { /* fall through */ }
    return { raw: args };
  }
  return { raw: JSON.stringify(args) };
}

function requestChars(conv) {
  let n = chars(conv.system);
  for (const e of conv.entries) {
    n += chars(e.text);
    for (const c of e.calls || []) n += chars(c.name) + chars(c.args);
  }
  return n + (conv.tools.length ? chars(JSON.stringify(conv.tools)) : 0);
}

const replyChars = (r) => chars(r.text) + r.calls.reduce((n, c) => n + chars(c.name) + chars(argsText(c.args)), 0);

function applyMaxTokens(reply, maxTokens) {
  if (!maxTokens || tokens(replyChars(reply)) <= maxTokens) return { ...reply, truncated: false };
  let budget = maxTokens * 4;
  const text = reply.text === null ? null : [...reply.text].slice(0, budget).join('');
  budget -= chars(text);
  const calls = [];
  for (const c of reply.calls) {
    const size = chars(c.name) + chars(argsText(c.args));
    if (size > budget) break;
    calls.push(c);
    budget -= size;
  }
  return { ...reply, text, calls, truncated: true };
}

function formatReply(body, conv, reply) {
  const usageIn = tokens(requestChars(conv));
  const usageOut = tokens(replyChars(reply));
  if (OPENAI) {
    const message = { role: 'assistant', content: reply.text };
    if (reply.calls.length) {
      message.tool_calls = reply.calls.map((c) => ({
        id: c.id || `call_${randomId(24)}`,
        type: 'function',
        function: { name: c.name, arguments: argsText(c.args) },
      }));
    } else if (message.content === null) {
      message.content = '';
    }
    let finish = reply.calls.length ? 'tool_calls' : 'stop';
    if (reply.truncated) finish = 'length';
    return {
      id: `chatcmpl-${randomId(29)}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: body.model,
      choices: [{ index: 0, message, finish_reason: finish }],
      usage: { prompt_tokens: usageIn, completion_tokens: usageOut, total_tokens: usageIn + usageOut },
    };
  }
  const content = [];
  if (reply.text || !reply.calls.length) content.push({ type: 'text', text: reply.text || '' });
  for (const c of reply.calls) {
    content.push({ type: 'tool_use', id: c.id || `toolu_01${randomId(22)}`, name: c.name, input: argsObject(c.args) });
  }
  let stop = reply.calls.length ? 'tool_use' : 'end_turn';
  if (reply.truncated) stop = 'max_tokens';
  return {
    id: `msg_01${randomId(22)}`,
    type: 'message',
    role: 'assistant',
    model: body.model,
    content,
    stop_reason: stop,
    stop_sequence: null,
    usage: { input_tokens: usageIn, output_tokens: usageOut },
  };
}

function hugeText(bytes) {
  const filler = 'This is filler text of a deliberately oversized model reply. ';
  return filler.repeat(Math.ceil(bytes / filler.length)).slice(0, bytes);
}

// ---------------------------------------------------------------------------------------------
// HTTP

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      // Keep draining an oversized body so the client reads our 413 instead of a reset.
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on('end', () => resolve({ text: size > MAX_BODY ? null : Buffer.concat(chunks).toString('utf8'), size }));
    req.on('error', reject);
  });
}

function sendJson(res, status, value, headers = {}) {
  const data = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

function authOk(req) {
  if (!apiKey) return true;
  if (OPENAI) {
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization || '');
    return Boolean(m) && m[1].trim() === apiKey;
  }
  return req.headers['x-api-key'] === apiKey;
}

function redacted(headers) {
  const out = { ...headers };
  for (const name of ['authorization', 'x-api-key']) if (name in out) out[name] = '<redacted>';
  return out;
}

const retryHeaders = (retryAfter) => (retryAfter != null ? { 'retry-after': String(retryAfter) } : {});

// -> {status, value, headers, note}
async function modelCall(req, entry, text) {
  if (delayMs) await sleep(delayMs);
  const fail = (status, message, param, headers = {}) => (
    { status, value: errorBody(status, message, param), headers, note: message });
  if (text === null) return fail(413, `Request body exceeds ${MAX_BODY} bytes.`);
  if (!entry.auth_ok) {
    const value = OPENAI
      ? {
        error: {
          message: 'Incorrect API key provided', type: 'invalid_request_error', param: null, code: 'invalid_api_key',
        },
      }
      : { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } };
    return { status: 401, value, headers: {}, note: 'bad key' };
  }
  if (!OPENAI && !req.headers['anthropic-version']) return fail(400, 'anthropic-version: header is required');
  if (entry.body === undefined) {
    return fail(400, OPENAI ? 'We could not parse the JSON body of your request.' : 'The body is not valid JSON.');
  }
  let conv;
  try {
    conv = OPENAI ? validateOpenai(entry.body) : validateAnthropic(entry.body);
  } catch (err) {
    if (err instanceof ApiError) return fail(err.status, err.message, err.param);
    throw err;
  }
  if (outage.down) return fail(outage.status, failureMessage(outage.status), null, retryHeaders(outage.retry_after));
  if (failNext.count > 0) {
    failNext.count -= 1;
    return fail(failNext.status, failureMessage(failNext.status), null, retryHeaders(failNext.retry_after));
  }
  let reply;
  if (hugeBytes) {
    reply = { source: `huge ${hugeBytes} bytes`, text: hugeText(hugeBytes), calls: [], truncated: false };
    hugeBytes = 0;
  } else {
    reply = applyMaxTokens(think(conv), conv.maxTokens);
  }
  const calls = reply.calls.map((c) => c.name).join(', ');
  const note = `${reply.source}${calls ? `: calls ${calls}` : ''}${reply.truncated ? ' (truncated)' : ''}`;
  return { status: 200, value: formatReply(entry.body, conv, reply), headers: {}, note };
}

function control(req, res, path, text) {
  const route = `${req.method} ${path}`;
  let body = {};
  if (req.method === 'POST') {
    if (text === null) return sendJson(res, 413, { error: 'body too large' });
    try {
      body = text.trim() ? JSON.parse(text) : {};
    } catch {
      return sendJson(res, 400, { error: 'invalid JSON' });
    }
    if (!isObj(body)) return sendJson(res, 400, { error: 'expected a JSON object' });
  }
  const invalid = (error) => sendJson(res, 400, { error });
  const status = (v, fallback) => (v === undefined ? fallback : v);
  const validStatus = (s) => Number.isInteger(s) && s >= 400 && s <= 599;
  const validRetry = (r) => r == null || (typeof r === 'number' && r >= 0);
  switch (route) {
    case 'GET /__test/requests':
      return sendJson(res, 200, { requests });
    case 'GET /__test/stats':
      return sendJson(res, 200, stats);
    case 'POST /__test/reset':
      reset();
      return sendJson(res, 200, { ok: true });
    case 'POST /__test/script': {
      const { match, steps } = body;
      if (typeof match !== 'string' || !match) return invalid('match: a non-empty string');
      if (!Array.isArray(steps)) return invalid('steps: an array');
      const normalised = [];
      for (const [i, st] of steps.entries()) {
        if (!isObj(st)) return invalid(`steps[${i}]: an object`);
        if (st.say !== undefined && typeof st.say !== 'string') return invalid(`steps[${i}].say: a string`);
        let calls = st.call === undefined ? [] : st.call;
        if (isObj(calls)) calls = [calls];
        if (!Array.isArray(calls)) return invalid(`steps[${i}].call: an array of {name, arguments}`);
        if (!calls.length && st.say === undefined) return invalid(`steps[${i}]: needs say or call`);
        for (const c of calls) {
          if (!isObj(c) || typeof c.name !== 'string' || !c.name) return invalid(`steps[${i}].call: needs a name`);
          if (c.id !== undefined && (typeof c.id !== 'string' || !c.id)) return invalid(`steps[${i}].call: bad id`);
        }
        normalised.push({
          say: st.say,
          call: calls.map((c) => ({ id: c.id, name: c.name, args: c.arguments ?? c.input ?? {} })),
        });
      }
      scripts = scripts.filter((s) => s.match !== match);
      scripts.push({ match, steps: normalised });
      return sendJson(res, 200, { ok: true, scripts: scripts.length });
    }
    case 'POST /__test/outage': {
      const s = status(body.status, 503);
      if (!validStatus(s) || !validRetry(body.retry_after)) return invalid('status: 400..599, retry_after: seconds');
      outage = { down: Boolean(body.down), status: s, retry_after: body.retry_after ?? null };
      return sendJson(res, 200, outage);
    }
    case 'POST /__test/fail_next': {
      const s = status(body.status, 503);
      if (!Number.isInteger(body.count) || body.count < 0 || !validStatus(s) || !validRetry(body.retry_after)) {
        return invalid('count: integer >= 0, status: 400..599, retry_after: seconds');
      }
      failNext = { count: body.count, status: s, retry_after: body.retry_after ?? null };
      return sendJson(res, 200, failNext);
    }
    case 'POST /__test/delay':
      if (typeof body.ms !== 'number' || body.ms < 0) return invalid('ms: a number >= 0');
      delayMs = body.ms;
      return sendJson(res, 200, { ms: delayMs });
    case 'POST /__test/huge':
      if (!Number.isInteger(body.bytes) || body.bytes < 0) return invalid('bytes: an integer >= 0');
      hugeBytes = body.bytes;
      return sendJson(res, 200, { bytes: hugeBytes });
    default:
      return sendJson(res, 404, { error: 'not_found' });
  }
}

async function handle(req, res) {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  const { text, size } = await readBody(req);
  if (path.startsWith('/__test/')) return control(req, res, path, text);
  if (path === '/healthz' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
    return res.end('ok');
  }
  let body;
  if (text !== null && text.trim()) {
    try { body = JSON.parse(text); } catch { body = undefined; }
  }
  const entry = {
    method: req.method,
    path,
    headers: redacted(req.headers),
    auth_ok: authOk(req),
    body: text === null ? null : (body === undefined ? text : body),
    status: null,
  };
  if (text === null) entry.body_bytes = size;
  requests.push(entry);
  // Keep the parsed body (or undefined when it did not parse) for the model call.
  const parsed = { ...entry, body };

  let out;
  if (path !== MODEL_PATH) {
    const message = OPENAI ? `Invalid URL (${req.method} ${path})` : 'Not Found';
    out = { status: 404, value: errorBody(404, message), headers: {}, note: 'unknown path' };
  } else if (req.method !== 'POST') {
    const value = errorBody(405, `Method ${req.method} not allowed; use POST`);
    out = { status: 405, value, headers: { allow: 'POST' }, note: 'bad method' };
  } else {
    out = await modelCall(req, parsed, text);
    stats.calls += 1;
    stats.by_status[out.status] = (stats.by_status[out.status] || 0) + 1;
  }
  entry.status = out.status;
  const requestId = OPENAI ? { 'x-request-id': `req_${randomId(24)}` } : { 'request-id': `req_01${randomId(22)}` };
  sendJson(res, out.status, out.value, { ...requestId, ...out.headers });
  console.log(`model server: ${req.method} ${path} -> ${out.status} ${out.note}`);
  return undefined;
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error('model server: internal error', err);
    if (!res.headersSent) sendJson(res, 500, errorBody(500, 'internal error of the test model server'));
    else res.destroy();
  });
});
server.listen(port, '127.0.0.1', () => {
  console.log(`model server (${format}) listening on http://127.0.0.1:${port}`);
});
