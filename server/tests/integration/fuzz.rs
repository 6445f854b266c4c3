//! Hostile input for every server function: each one, as a signed-out visitor and as a
//! signed-in owner of a workspace, gets malformed, oversized, mistyped and malicious fields
//! and bodies. None may answer a 5xx, and no answer may reveal internals (database, panic,
//! Rust type names). Every failure is collected and reported together.
//!
//! The functions come from the server-function registry, and their argument names from
//! their `#[server]` definitions in `app/src`, so a new server function is fuzzed without
//! touching this file. Inputs are pseudo-random from a fixed seed (per function and
//! caller), so a failure reproduces; change `SEED` to explore other inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::{FutureExt, StreamExt};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::header::{ACCEPT, CONTENT_TYPE, REFERER};
use reqwest::{Method, StatusCode};

use app::error::AppError;

use crate::common::{self, Client, TestApp};

const SEED: u64 = 0x00F1_0C51_F022_2024;

/// Never the real password: a step-up that succeeded would stay fresh for the rest of the
/// run, and the fuzzed `delete_workspace` would then delete the workspace under test.
const WRONG_PASSWORD: &str = "not the password, but long enough";

const FORM: &str = "application/x-www-form-urlencoded";
const FETCH_ACCEPT: &str = "application/json";
const PLAIN_FORM_ACCEPT: &str = "text/html,application/xhtml+xml";

/// What an answer must never contain (compared without case): database, pool and panic
/// details.
const LEAKS_ANY_CASE: &[&str] =
    &["diesel", "postgres", "panicked", "constraint", "sqlstate", "deadpool", "backtrace", "syntax error at"];
/// Compared exactly: `SQL` as in an error text, Rust `Debug` output.
const LEAKS_EXACT: &[&str] = &["SQL", "Error {", "Err(", "thread '"];
/// Crates whose paths (`name::Item`) in an answer would be a Rust type or error leaking.
const CRATE_ROOTS: &[&str] = &[
    "std",
    "core",
    "alloc",
    "fluxi_core",
    "app",
    "server",
    "server_fn",
    "leptos",
    "leptos_axum",
    "leptos_router",
    "axum",
    "hyper",
    "http",
    "tokio",
    "tower",
    "tower_http",
    "tower_sessions",
    "tower_sessions_core",
    "serde",
    "serde_json",
    "serde_urlencoded",
    "diesel",
    "diesel_async",
    "uuid",
    "time",
    "argon2",
    "totp_rs",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    SignedOut,
    Owner,
}

/// One argument of a server function, as declared.
#[derive(Debug, Clone)]
struct Arg {
    name: String,
    optional: bool,
}

/// A form field's name or value: text (percent-encoded when sent) or raw bytes of the
/// encoded form, for what text cannot say (invalid UTF-8, broken escapes).
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Raw(String),
}

impl Part {
    fn encoded(&self) -> String {
        match self {
            Part::Text(text) => percent_encode(text),
            Part::Raw(raw) => raw.clone(),
        }
    }

    /// For the failure report: short and with every character visible.
    fn describe(&self) -> String {
        let (text, raw) = match self {
            Part::Text(t) => (t.as_str(), ""),
            Part::Raw(r) => (r.as_str(), "raw "),
        };
        let n = text.chars().count();
        let shown: String = text.chars().take(40).collect();
        let more = if n > 40 { format!("… ({n} chars)") } else { String::new() };
        format!("{raw}{shown:?}{more}")
    }
}

/// Everything but unreserved characters percent-encoded, as a browser would.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                out.push('%');
                out.push(char::from_digit(u32::from(b >> 4), 16).unwrap().to_ascii_uppercase());
                out.push(char::from_digit(u32::from(b & 15), 16).unwrap().to_ascii_uppercase());
            }
        }
    }
    out
}

fn text(s: impl Into<String>) -> Part {
    Part::Text(s.into())
}

type Pairs = Vec<(Part, Part)>;

fn encode_pairs(pairs: &Pairs) -> Vec<u8> {
    pairs.iter().map(|(k, v)| format!("{}={}", k.encoded(), v.encoded())).collect::<Vec<_>>().join("&").into_bytes()
}

/// One hostile request to one server function.
#[derive(Debug, Clone)]
struct Case {
    what: String,
    method: Method,
    content_type: Option<String>,
    accept: String,
    /// A path on this server (the page a plain form was on), or a full hostile value.
    referer: Option<String>,
    /// Where to send it instead of `/api/<function>`.
    path: Option<String>,
    /// A made-up `Cookie` header (signed-out caller only: it replaces the client's cookies).
    cookie: Option<String>,
    body: Vec<u8>,
    /// One hostile value in one field: only a sample of these is sent to a function that
    /// refuses the caller outright (past the checks every request gets, each would be the
    /// same "please sign in").
    field_value: bool,
}

impl Case {
    fn form(what: impl Into<String>, pairs: &Pairs) -> Self {
        Self::bytes(what, Some(FORM), encode_pairs(pairs))
    }

    fn bytes(what: impl Into<String>, content_type: Option<&str>, body: Vec<u8>) -> Self {
        Self {
            what: what.into(),
            method: Method::POST,
            content_type: content_type.map(str::to_string),
            accept: FETCH_ACCEPT.into(),
            referer: None,
            path: None,
            cookie: None,
            body,
            field_value: false,
        }
    }

    /// The same, sent the way a browser without JavaScript submits a form.
    fn plain_form(mut self) -> Self {
        self.what = format!("{} [plain form]", self.what);
        self.accept = PLAIN_FORM_ACCEPT.into();
        self.referer = Some("/".into());
        self
    }
}

/// What the run knows about the world, for plausible field values.
struct World {
    slug: String,
    owner_id: String,
    member_id: String,
    invitation_id: String,
    token: String,
}

// ---------------------------------------------------------------------------------------
// The server functions and their arguments

/// Every `#[server(…, endpoint = "name")]` function in `app/src`, with its arguments.
fn declared_server_functions() -> BTreeMap<String, Vec<Arg>> {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/src"), &mut files);
    let mut found = BTreeMap::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let mut rest = source.as_str();
        while let Some(at) = rest.find("#[server(") {
            rest = &rest[at..];
            let attribute = &rest[..rest.find(")]").expect("end of #[server(…)]")];
            let after = &rest[attribute.len()..];
            let signature = &after[after.find("fn ").expect("fn after #[server]") + 3..];
            let open = signature.find('(').unwrap();
            let fn_name = signature[..open].trim();
            let endpoint =
                attribute.split_once("endpoint").and_then(|(_, e)| e.split('"').nth(1)).unwrap_or(fn_name).to_string();
            found.insert(endpoint, parse_args(&signature[open + 1..]));
            rest = after;
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `name: Type, …)` up to the closing parenthesis: names, and which are `Option<…>`.
fn parse_args(params: &str) -> Vec<Arg> {
    let (mut depth, mut current, mut args) = (0i32, String::new(), Vec::new());
    let mut push = |param: &str| {
        if let Some((name, ty)) = param.split_once(':') {
            let name = name.trim().trim_start_matches("mut ").trim().to_string();
            args.push(Arg { name, optional: ty.trim().starts_with("Option<") });
        }
    };
    for c in params.chars() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' if depth == 0 => break,
            ')' | '>' | ']' => depth -= 1,
            ',' if depth == 0 => {
                push(&current);
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    push(&current);
    args
}

// ---------------------------------------------------------------------------------------
// Inputs

/// A value the function could accept, so that a case varying one field gets past the
/// others. Slugs, ids and tokens are the real ones most of the time, to reach the checks
/// behind the first lookup.
fn plausible(name: &str, world: &World, rng: &mut StdRng) -> String {
    match name {
        "slug" if rng.gen_bool(0.8) => world.slug.clone(),
        "slug" => "no-such-workspace".into(),
        "token" if rng.gen_bool(0.7) => world.token.clone(),
        "token" => hex(rng, 64),
        "invitation_id" => world.invitation_id.clone(),
        n if n.ends_with("_id") => match rng.gen_range(0..3) {
            0 => world.member_id.clone(),
            1 => world.owner_id.clone(),
            _ => random_uuid(rng).to_string(),
        },
        n if n.contains("password") => WRONG_PASSWORD.into(),
        "email" => format!("fuzz-{}@example.test", hex(rng, 8)),
        "role" => "viewer".into(),
        "required" => "off".into(),
        "code" => "123456".into(),
        "next" => "/account".into(),
        "form" => "login".into(),
        "display_name" | "name" | "title" => "Fuzz".into(),
        "body" => "Some text.".into(),
        // The audit viewer's filter fields: empty is "no filter".
        "action" | "actor" | "from" | "to" | "outcome" | "before" | "after" | "event" | "recovery_code" => {
            String::new()
        }
        _ => "x".into(),
    }
}

/// Every argument with a plausible value (optional ones only sometimes).
fn baseline(args: &[Arg], world: &World, rng: &mut StdRng) -> Pairs {
    let mut pairs = Vec::new();
    for arg in args {
        if !arg.optional || rng.gen_bool(0.5) {
            pairs.push((text(&arg.name), text(plausible(&arg.name, world, rng))));
        }
    }
    pairs
}

/// `pairs` with `name` set to `value` (added if it was left out).
fn with_field(mut pairs: Pairs, name: &str, value: Part) -> Pairs {
    match pairs.iter_mut().find(|(k, _)| matches!(k, Part::Text(n) if n == name)) {
        Some(pair) => pair.1 = value,
        None => pairs.push((text(name), value)),
    }
    pairs
}

fn without_field(pairs: &Pairs, name: &str) -> Pairs {
    pairs.iter().filter(|(k, _)| !matches!(k, Part::Text(n) if n == name)).cloned().collect()
}

/// A version-4 UUID from the seeded generator, so that it repeats from run to run.
fn random_uuid(rng: &mut StdRng) -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

fn hex(rng: &mut StdRng, len: usize) -> String {
    (0..len).map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap()).collect()
}

/// Random printable ASCII that does not happen to spell a leak marker (an answer may echo it).
fn printable(rng: &mut StdRng, len: usize) -> String {
    loop {
        let s: String = (0..len).map(|_| rng.gen_range(0x21u8..0x7f) as char).collect();
        if leak(&s).is_none() {
            return s;
        }
    }
}

fn pick(rng: &mut StdRng, list: &[&str]) -> String {
    list.choose(rng).unwrap().to_string()
}

/// Hostile values for one field, one of each kind (which one, the seed decides).
fn hostile_values(rng: &mut StdRng) -> Vec<(&'static str, Part)> {
    let whitespace: String = (0..rng.gen_range(1..8))
        .map(|_| *[' ', ' ', '\u{A0}', '\u{3000}', '\u{2003}', '\t', '\n'].choose(rng).unwrap())
        .collect();
    let long = match rng.gen_range(0..3) {
        0 => printable(rng, 5000),
        1 => "é".repeat(1500),
        _ => "😀".repeat(600),
    };
    let control = *[1u32, 7, 8, 0x1b, 0x1f, 0x7f, 0x85, 0x9b].choose(rng).unwrap();
    let control = format!("a{}b", char::from_u32(control).unwrap());
    let garbage_id = match rng.gen_range(0..8) {
        0 => random_uuid(rng).to_string(),
        1 => "00000000-0000-0000-0000-000000000000".into(),
        2 => "00000000-0000-0000-0000-00000000000g".into(),
        3 => format!("{{{}}}", random_uuid(rng)),
        4 => format!("urn:uuid:{}", random_uuid(rng)),
        5 => hex(rng, 65),
        6 => "-".repeat(36),
        _ => {
            let len = rng.gen_range(1..64);
            printable(rng, len)
        }
    };
    vec![
        ("empty", text("")),
        ("whitespace only", text(whitespace)),
        ("long (8 KB)", text(long)),
        ("over the body limit (100 KB)", text("a".repeat(100_000))),
        ("NUL", text(pick(rng, &["\0", "a\0b", "\0\0\0\0"]))),
        ("control character", text(control)),
        (
            "bidi override / zero-width",
            text(pick(
                rng,
                &["\u{202E}txt.exe", "ad\u{200B}min", "\u{FEFF}x", "\u{2066}x\u{2069}", "a\u{200F}", "\u{E0041}"],
            )),
        ),
        (
            "invalid UTF-8",
            Part::Raw(pick(rng, &["%FF%FE", "a%C0%AFb", "%ED%A0%80", "%E2%82", "%F8%88%80%80%80", "%FE%FF%00a"])),
        ),
        ("broken percent-encoding", Part::Raw(pick(rng, &["%", "%Z", "%%%", "%0", "%u0041", "abc%", "%%2F"]))),
        (
            "SQL-ish",
            text(pick(
                rng,
                &[
                    "' OR 1=1 --",
                    "'; DROP TABLE users; --",
                    "\" OR \"\"=\"",
                    "1) UNION SELECT null, null --",
                    "$1",
                    "\\'; --",
                    "' || pg_sleep(10) || '",
                ],
            )),
        ),
        (
            "HTML/script",
            text(pick(
                rng,
                &[
                    "<script>alert(1)</script>",
                    "\"><img src=x onerror=alert(1)>",
                    "</textarea><svg onload=alert(1)>",
                    "&lt;b&gt;&#0;",
                ],
            )),
        ),
        (
            "path traversal",
            text(pick(
                rng,
                &["../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/w/../../api/logout", "..\\..\\boot.ini", "./."],
            )),
        ),
        (
            "huge number",
            text(pick(
                rng,
                &[
                    "9223372036854775807",
                    "9223372036854775808",
                    "99999999999999999999999999999999999999",
                    "1e309",
                    "340282366920938463463374607431768211456",
                ],
            )),
        ),
        ("negative number", text(pick(rng, &["-1", "-0", "-9223372036854775808", "-9223372036854775809", "-1e309"]))),
        ("not a number", text(pick(rng, &["NaN", "Infinity", "0x10", "1_000", "１２３", "1.5", "12 34", "٣"]))),
        (
            "date-like",
            text(pick(
                rng,
                &[
                    "9999-12-31",
                    "0000-00-00",
                    "-2024-01-01",
                    "2024-02-30",
                    "+10000-01-01",
                    "2024-13-45T25:61:61Z",
                    "1970-01-01",
                ],
            )),
        ),
        ("garbage identifier", text(garbage_id)),
        (
            "JSON in a field",
            text(pick(rng, &["{\"$ne\":null}", "[1,2,3]", "null", "true", "{\"__proto__\":{\"admin\":true}}"])),
        ),
        (
            "format string / template",
            text(pick(rng, &["%s%s%s%n", "{{7*7}}", "${jndi:ldap://example.invalid/a}", "{0:99999999}", "%00"])),
        ),
        (
            "email-like",
            text(pick(
                rng,
                &[
                    "a@b",
                    "@",
                    "a@@b",
                    "\"a b\"@example.test",
                    "x@[127.0.0.1]",
                    "A@EXAMPLE.TEST",
                    "a@xn--bcher-kva.example",
                    "user+tag@example.test",
                ],
            )),
        ),
        (
            "unicode oddities",
            text(pick(
                rng,
                &["👩‍👩‍👧", &"e\u{301}".repeat(30), "İ", "ß", "ǅ", "مرحبا", "\u{FFFD}", "\u{10FFFF}", "\u{FDD0}"],
            )),
        ),
        (
            "line-break injection",
            text(pick(rng, &["x\r\nSet-Cookie: a=b", "x\nLocation: //evil.example", "a\u{2028}b"])),
        ),
        ("plus signs and spaces", Part::Raw(pick(rng, &["+++", "a+b%20c", "%20%20", "+"]))),
        (
            "URL / redirect target",
            text(pick(
                rng,
                &["//evil.example", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "/%2F%2Fevil"],
            )),
        ),
    ]
}

/// The cases for one function and caller.
fn cases(function: &str, args: &[Arg], caller: Caller, world: &World, rng: &mut StdRng) -> Vec<Case> {
    let mut out = Vec::new();
    let base = baseline(args, world, rng);
    out.push(Case::form("plausible values", &base));
    out.push(Case::form("plausible values", &base).plain_form());

    for arg in args {
        let name = arg.name.as_str();
        let base = baseline(args, world, rng);
        for (kind, value) in hostile_values(rng) {
            let what = format!("{name} = {kind}: {}", value.describe());
            let case = Case { field_value: true, ..Case::form(what, &with_field(base.clone(), name, value)) };
            // A quarter as plain form posts: their errors go through the flash instead.
            out.push(if rng.gen_bool(0.25) { case.plain_form() } else { case });
        }
        out.push(Case::form(format!("{name} missing"), &without_field(&base, name)));
        let (hostile_kind, hostile) = hostile_values(rng).swap_remove(rng.gen_range(5..20));
        let mut twice = vec![(text(name), text(plausible(name, world, rng))), (text(name), hostile)];
        twice.shuffle(rng);
        let mut pairs = without_field(&base, name);
        pairs.extend(twice);
        out.push(Case::form(format!("{name} given twice (once {hostile_kind})"), &pairs));
        let shapes: [&[(&str, &str)]; 4] =
            [&[("[]", "1"), ("[]", "2")], &[("[0]", "1")], &[("[a][b]", "c")], &[("[]", "")]];
        let shape = *shapes.choose(rng).unwrap();
        let mut pairs = without_field(&base, name);
        pairs.extend(shape.iter().map(|(suffix, v)| (text(format!("{name}{suffix}")), text(*v))));
        out.push(Case::form(format!("{name} as an array or map ({shape:?})"), &pairs));
    }

    let base = baseline(args, world, rng);
    out.push(Case::bytes("empty body", Some(FORM), Vec::new()));
    let empties: Pairs = args.iter().map(|a| (text(&a.name), text(""))).collect();
    out.push(Case::form("every field empty", &empties));
    let extra: Pairs = match rng.gen_range(0..5) {
        0 => vec![(text("zzz"), text("1"))],
        1 => vec![(text("__proto__[admin]"), text("true"))],
        2 => vec![(text(""), text("x"))],
        3 => vec![(text("n".repeat(4000)), text("x"))],
        _ => vec![(Part::Raw("%FF%FE".into()), text("x"))],
    };
    let described = extra[0].0.describe();
    let mut pairs = base.clone();
    pairs.extend(extra);
    out.push(Case::form(format!("unknown extra field {described}"), &pairs));
    let mut many = base.clone();
    many.extend((0..1500).map(|i| (text(format!("f{i}")), text("1"))));
    out.push(Case::form("1500 unknown fields", &many));
    let upper: Pairs = base.iter().map(|(k, v)| (Part::Raw(k.encoded().to_uppercase()), v.clone())).collect();
    out.push(Case::form("field names in capitals", &upper));
    let encoded = encode_pairs(&base);
    let garbage: Vec<u8> = (0..rng.gen_range(64..512)).map(|_| rng.gen()).collect();
    let (what, body) = match rng.gen_range(0..7) {
        0 => ("random bytes", garbage),
        1 => ("%%%\\0", b"%%%\0".to_vec()),
        2 => ("&&&===&", b"&&&===&".to_vec()),
        3 => ("XML", b"<?xml version=\"1.0\"?><a>&x;</a>".to_vec()),
        4 => ("byte-order mark first", [b"\xEF\xBB\xBF".as_slice(), &encoded].concat()),
        5 => ("UTF-16", String::from_utf8_lossy(&encoded).encode_utf16().flat_map(u16::to_le_bytes).collect()),
        _ => ("trailing NUL bytes", [encoded.as_slice(), b"\0\0\0"].concat()),
    };
    out.push(Case::bytes(format!("body not form-encoded: {what}"), Some(FORM), body));
    let (what, json) = json_body(args, world, rng);
    out.push(Case::bytes(format!("JSON body: {what}"), Some("application/json"), json.into_bytes()));
    let content_type = pick(
        rng,
        &[
            "",
            "text/plain",
            "application/json",
            "multipart/form-data",
            "application/x-www-form-urlencoded; charset=utf-16",
            "application/cbor",
            "application/octet-stream",
            "text/html; charset=utf-8",
            "application/xml",
            "a/b/c;;;=;",
            "application/x-www-form-urlencoded, application/json",
        ],
    );
    let ct = (!content_type.is_empty()).then_some(content_type.as_str());
    out.push(Case::bytes(format!("form body as content type {content_type:?}"), ct, encoded.clone()));
    let boundary = "----fuzz";
    let multipart: String = base
        .iter()
        .map(|(k, v)| {
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{}\r\n",
                k.encoded(),
                v.encoded()
            )
        })
        .chain([format!("--{boundary}--\r\n")])
        .collect();
    out.push(Case::bytes(
        "multipart body",
        Some(format!("multipart/form-data; boundary={boundary}").as_str()),
        multipart.into_bytes(),
    ));
    out.push(Case::bytes(
        "content type 4 KB long",
        Some(format!("{FORM}; x={}", "a".repeat(4000)).as_str()),
        encoded.clone(),
    ));
    let method = [Method::GET, Method::PUT, Method::DELETE, Method::PATCH].choose(rng).unwrap().clone();
    let mut case = Case::bytes(format!("method {method}"), Some(FORM), encoded.clone());
    case.method = method;
    out.push(case);
    out.push(Case::form("over the body limit (1 MB)", &vec![(text("x"), text("a".repeat(1024 * 1024)))]));
    let mut case = Case::form("plain form, hostile Referer", &base).plain_form();
    case.referer = Some(pick(
        rng,
        &["https://evil.example/", "javascript:alert(1)", "/\\\\evil.example", "not a url", &"r".repeat(8000)],
    ));
    case.what =
        format!("{} {:?}", case.what, case.referer.as_deref().unwrap_or_default().chars().take(40).collect::<String>());
    out.push(case);
    let mut case = Case::form("odd Accept header", &base);
    case.accept = pick(rng, &["*/*", "text/html", "application/json, text/html;q=0.1", "", "x/y;q=abc"]);
    case.what = format!("{} {:?}", case.what, case.accept);
    out.push(case);
    let query = String::from_utf8_lossy(&encoded).into_owned();
    let (path, body) = match rng.gen_range(0..7) {
        0 => (format!("/api/{function}?{query}"), Vec::new()),
        1 => (format!("/api/{function}?x=%FF%FE&slug[]=1"), encoded.clone()),
        2 => (format!("/api/{function}/"), encoded.clone()),
        3 => (format!("/api//{function}"), encoded.clone()),
        4 => (format!("/api/{}", function.to_uppercase()), encoded.clone()),
        5 => (format!("/api/{function}%00"), encoded.clone()),
        _ => (format!("/api/{function}/..%2F..%2Fhealthz"), encoded.clone()),
    };
    let shown: String = path.chars().take(60).collect();
    out.push(Case { path: Some(path), ..Case::bytes(format!("odd path {shown:?}"), Some(FORM), body) });
    if caller == Caller::SignedOut {
        let mut garbage = || match rng.gen_range(0..5) {
            0 => String::new(),
            1 => "x".into(),
            2 => "A".repeat(2000),
            3 => random_uuid(rng).to_string(),
            _ => printable(rng, 40).replace([';', ','], "x"),
        };
        // The session cookie, the browser's device cookie and a plain form's flash.
        let cookie = format!(
            "{}={}; {}={}; __Host-fluxi_flash={}",
            common::COOKIE_NAME,
            garbage(),
            fluxi_core::accounts::familiar::DEVICE_COOKIE,
            garbage(),
            garbage()
        );
        let shown: String = cookie.chars().take(120).collect();
        out.push(Case { cookie: Some(cookie), ..Case::form(format!("made-up cookies {shown:?}"), &base) });
    }
    out
}

/// A JSON body: well-formed with odd types, or not JSON at all.
fn json_body(args: &[Arg], world: &World, rng: &mut StdRng) -> (&'static str, String) {
    use serde_json::{json, Map, Value};
    let object = |rng: &mut StdRng, value: &dyn Fn(&mut StdRng, &str) -> Value| {
        let map: Map<String, Value> = args.iter().map(|a| (a.name.clone(), value(rng, &a.name))).collect();
        Value::Object(map).to_string()
    };
    match rng.gen_range(0..9) {
        0 => ("strings", object(rng, &|rng, name| json!(plausible(name, world, rng)))),
        1 => ("numbers", object(rng, &|_, _| json!(1e300))),
        2 => ("nested objects", object(rng, &|_, _| json!({"a": {"b": []}}))),
        3 => ("arrays", object(rng, &|rng, name| json!([plausible(name, world, rng)]))),
        4 => ("nulls", object(rng, &|_, _| Value::Null)),
        5 => ("an array", "[]".into()),
        6 => ("truncated", "{\"slug\":".into()),
        7 => ("deeply nested", format!("{}{}", "[".repeat(5000), "]".repeat(5000))),
        _ => ("duplicate keys", "{\"slug\":\"a\",\"slug\":\"b\"}".into()),
    }
}

// ---------------------------------------------------------------------------------------
// Judging answers

/// What in `body` reveals internals, if anything.
fn leak(body: &str) -> Option<String> {
    let lower = body.to_lowercase();
    if let Some(word) = LEAKS_ANY_CASE.iter().find(|w| lower.contains(*w)) {
        return Some((*word).to_string());
    }
    if let Some(word) = LEAKS_EXACT.iter().find(|w| body.contains(*w)) {
        return Some((*word).to_string());
    }
    // `crate::Item`: the identifier before each `::`, if it names a crate of ours or Rust's.
    for (at, _) in body.match_indices("::") {
        let before = &body[..at];
        let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let root = &before[start..];
        let next = body[at + 2..].chars().next().unwrap_or(' ');
        if CRATE_ROOTS.contains(&root) && (next.is_ascii_alphabetic() || next == '_' || next == '<') {
            return Some(format!("{root}::"));
        }
    }
    None
}

/// The error a server function's reply carries (the server-function error header marks
/// one), `Err` when it is not an `AppError`. A plain form post is redirected back to its
/// page whatever went wrong, so its status alone would hide a server-side error.
fn carried_error(reply: &common::Reply) -> Option<Result<AppError, String>> {
    reply.headers.get(leptos::server_fn::error::SERVER_FN_ERROR_HEADER)?;
    Some(serde_json::from_str::<AppError>(&reply.body).map_err(|e| e.to_string()))
}

/// What is wrong with `reply`, if anything.
fn judge(reply: &common::Reply) -> Option<String> {
    let carried = carried_error(reply);
    if let Some(Ok(error)) = &carried {
        if error.status() >= 500 {
            return Some(format!("{} carrying {error:?} (status {})", reply.status, error.status()));
        }
    }
    if reply.status.is_server_error() {
        return Some(reply.status.to_string());
    }
    if let Some(Err(e)) = carried {
        return Some(format!("{} carrying an error that is not an AppError ({e})", reply.status));
    }
    leak(&reply.body).map(|word| format!("{} revealing {word:?}", reply.status))
}

/// The status to count `reply` under: that of the error it carries, if any.
fn effective_status(reply: &common::Reply) -> u16 {
    match carried_error(reply) {
        Some(Ok(error)) => error.status(),
        _ => reply.status.as_u16(),
    }
}

struct Failure {
    function: String,
    caller: Caller,
    what: String,
    status: String,
    body: String,
}

/// What one function and caller got: the failures, how many answers had each status, and
/// the status of the plausible call.
struct Outcome {
    failures: Vec<Failure>,
    statuses: BTreeMap<u16, usize>,
    plausible: Option<u16>,
}

/// Sends the cases (the first is the plausible call; when that is answered "please sign
/// in", only a quarter of the one-field cases follow).
async fn run(
    app: &TestApp,
    function: &str,
    caller: Caller,
    mut client: Client,
    cases: Vec<Case>,
    rng: &mut StdRng,
) -> Outcome {
    let mut out = Outcome { failures: Vec::new(), statuses: BTreeMap::new(), plausible: None };
    for (i, case) in cases.into_iter().enumerate() {
        if out.plausible == Some(401) && case.field_value && !rng.gen_bool(0.25) {
            continue;
        }
        let mut visitor;
        let sender = match &case.cookie {
            Some(_) => {
                visitor = app.client();
                &mut visitor
            }
            None => &mut client,
        };
        let path = case.path.clone().unwrap_or_else(|| format!("/api/{function}"));
        let mut req = sender.http().request(case.method.clone(), sender.url(&path)).header(ACCEPT, &case.accept);
        if let Some(cookie) = &case.cookie {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        if let Some(content_type) = &case.content_type {
            req = req.header(CONTENT_TYPE, content_type);
        }
        if let Some(referer) = &case.referer {
            let referer = if referer.starts_with('/') && !referer.starts_with("/\\") {
                sender.url(referer)
            } else {
                referer.clone()
            };
            req = req.header(REFERER, referer);
        }
        let req = req.body(case.body.clone());
        // A request that gets no answer at all (connection closed) is a failure too, not a
        // panic that would hide the other results.
        let reply = std::panic::AssertUnwindSafe(sender.raw(req)).catch_unwind().await;
        let problem = match &reply {
            Err(_) => Some(("no answer".to_string(), String::new())),
            Ok(reply) => {
                let status = effective_status(reply);
                *out.statuses.entry(status).or_insert(0) += 1;
                if i == 0 {
                    out.plausible = Some(status);
                }
                judge(reply).map(|problem| (problem, reply.body.chars().take(200).collect()))
            }
        };
        if let Some((status, body)) = problem {
            out.failures.push(Failure { function: function.to_string(), caller, what: case.what, status, body });
        }
    }
    out
}

/// A fresh session of the owner: each function gets its own, so that one that signs out
/// (`logout`) or switches accounts (`signup`) does not change who calls the others.
async fn owner_session(app: &TestApp, email: &str) -> Client {
    let mut client = app.client();
    let res = client.call("login", &[("email", email), ("password", common::PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "owner sign-in: {}", res.body);
    client
}

fn seed_for(function: &str, caller: Caller) -> u64 {
    // FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
    let hash = function.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    SEED ^ hash ^ (caller as u64 + 1)
}

#[test]
fn answers_are_judged_and_inputs_carry_no_marker() {
    // An answer echoing our own input must not count as a leak: no input carries a marker.
    let mut rng = StdRng::seed_from_u64(SEED);
    for _ in 0..50 {
        for (kind, value) in hostile_values(&mut rng) {
            let (Part::Text(v) | Part::Raw(v)) = &value;
            assert_eq!(leak(v), None, "{kind}: {v:?}");
        }
    }
    assert_eq!(leak("{\"Internal\":\"ref\"}"), None);
    assert_eq!(leak("called `Result::unwrap()` on an `Err` value: diesel::result::Error"), Some("diesel".into()));
    assert_eq!(leak("at fluxi_core::workspaces::members"), Some("fluxi_core::".into()));
    assert_eq!(leak("Database(DatabaseError { .. })"), Some("Error {".into()));
    assert_eq!(leak("SqlState"), Some("sqlstate".into()));

    let reply = |status: u16, marked: bool, body: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        if marked {
            headers.insert(leptos::server_fn::error::SERVER_FN_ERROR_HEADER, "/api/login".parse().unwrap());
        }
        common::Reply { status: StatusCode::from_u16(status).unwrap(), headers, body: body.into() }
    };
    assert_eq!(judge(&reply(422, true, r#"{"Invalid":[]}"#)), None);
    assert_eq!(judge(&reply(302, true, r#"{"Rejected":"No."}"#)), None);
    assert_eq!(effective_status(&reply(302, true, r#"{"Rejected":"No."}"#)), 409);
    assert!(judge(&reply(302, true, r#"{"Internal":"3f2a"}"#)).unwrap().contains("status 500"));
    assert!(judge(&reply(302, true, "oops")).unwrap().contains("not an AppError"));
    assert!(judge(&reply(503, false, "busy")).is_some());
    assert_eq!(judge(&reply(413, false, "The submitted data is too large.")), None);
}

#[test]
fn server_function_arguments_are_read_from_their_definitions() {
    let declared = declared_server_functions();
    let signup: Vec<_> = declared["signup"].iter().map(|a| (a.name.as_str(), a.optional)).collect();
    assert_eq!(signup, [("display_name", false), ("email", false), ("password", false), ("next", true)]);
    let verify: Vec<_> = declared["verify_sign_in"].iter().map(|a| (a.name.as_str(), a.optional)).collect();
    assert_eq!(verify, [("code", true), ("recovery_code", true)]);
    assert!(declared["logout"].is_empty());
}

#[tokio::test]
async fn no_server_function_answers_hostile_input_with_a_server_error_or_internals() {
    let started = std::time::Instant::now();
    // Tight sign-in and sign-up limits: past them, attempts are refused before any password
    // is hashed, which bounds the Argon2 work of this test (a 429 is a fine answer).
    let tight = fluxi_core::accounts::SignInThrottle { max_failures: 5, ..Default::default() };
    let app = TestApp::spawn_with(common::Options {
        pool_size: 16,
        client_sign_in_throttle: tight,
        elsewhere_sign_in_throttle: tight,
        sign_up_limits: fluxi_core::accounts::SignUpLimits {
            per_network: fluxi_core::rate_limit::RateLimit::per_hour(5),
            overall: fluxi_core::rate_limit::RateLimit::per_hour(5),
        },
        ..Default::default()
    })
    .await;

    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Fuzzed").await;
    let member = app.person("Member").await;
    app.add_member(&slug, &member, "member").await;
    let invitee = "invitee@example.test";
    let res = owner.client.call("invite_member", &[("slug", &slug), ("email", invitee), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let token = common::token_from(&common::outbox_body_for(&app, invitee).await);
    let page = owner.client.call("members_page", &[("slug", &slug)]).await;
    let page: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    let invitation_id = page["invitations"][0]["id"].as_str().unwrap().to_string();
    let world = World {
        slug,
        owner_id: owner.user.id.to_string(),
        member_id: member.user.id.to_string(),
        invitation_id,
        token,
    };

    let registered: Vec<String> = {
        let mut names: Vec<String> = leptos::server_fn::axum::server_fn_paths()
            .map(|(path, _)| path.trim_start_matches("/api/").to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let declared = declared_server_functions();
    let mut failures = Vec::new();
    let mut jobs = Vec::new();
    for function in &registered {
        let args = declared.get(function).cloned().unwrap_or_else(|| {
            failures.push(Failure {
                function: function.clone(),
                caller: Caller::SignedOut,
                what: "its #[server] definition was not found in app/src: arguments unknown".into(),
                status: "-".into(),
                body: String::new(),
            });
            Vec::new()
        });
        for caller in [Caller::SignedOut, Caller::Owner] {
            let mut rng = StdRng::seed_from_u64(seed_for(function, caller));
            let cases = cases(function, &args, caller, &world, &mut rng);
            jobs.push((function.clone(), caller, cases, rng));
        }
    }
    // Signed in before the fuzzing starts: failed attempts below may block sign-in.
    let mut sessions: Vec<Client> = futures::stream::iter(0..registered.len())
        .map(|_| owner_session(&app, &owner.user.email))
        .buffered(4)
        .collect()
        .await;

    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|(function, caller, cases, rng)| {
            let client = match caller {
                Caller::SignedOut => app.client(),
                Caller::Owner => sessions.pop().unwrap(),
            };
            (function, caller, client, cases, rng)
        })
        .collect();
    let results: Vec<_> = futures::stream::iter(jobs.into_iter().map(|(function, caller, client, cases, mut rng)| {
        let app = &app;
        async move {
            let outcome = run(app, &function, caller, client, cases, &mut rng).await;
            (function, caller, outcome)
        }
    }))
    .buffer_unordered(4)
    .collect()
    .await;

    let mut statuses: BTreeMap<(Caller, u16), usize> = BTreeMap::new();
    // The owner's plausible calls to the functions that take a workspace's slug.
    let mut in_workspace = BTreeMap::new();
    for (function, caller, outcome) in results {
        failures.extend(outcome.failures);
        for (status, n) in outcome.statuses {
            *statuses.entry((caller, status)).or_insert(0) += n;
        }
        let takes_slug = declared.get(&function).is_some_and(|args| args.iter().any(|a| a.name == "slug"));
        if caller == Caller::Owner && takes_slug {
            in_workspace.insert(function, outcome.plausible);
        }
    }
    let unanswered = failures.iter().filter(|f| f.status == "no answer").count();
    let requests = statuses.values().sum::<usize>() + unanswered;
    eprintln!(
        "fuzzed {} server functions with {requests} requests in {:.1?}; answers by caller and status: {statuses:?}",
        registered.len(),
        started.elapsed()
    );
    // The fuzzing reached past the first checks: the owner's sessions held and the real
    // slug opened the workspace, fields were judged, and oversized bodies were refused.
    assert!(
        in_workspace.values().all(|s| *s != Some(401)) && in_workspace.values().any(|s| *s == Some(200)),
        "the owner's plausible calls in the workspace: {in_workspace:?}"
    );
    let seen = |caller, status| statuses.get(&(caller, status)).copied().unwrap_or(0);
    assert!(seen(Caller::Owner, 422) > 0 && seen(Caller::SignedOut, 422) > 0, "{statuses:?}");
    assert!(seen(Caller::SignedOut, 413) > 0, "{statuses:?}");

    failures.sort_by(|a, b| (&a.function, a.caller as u8).cmp(&(&b.function, b.caller as u8)));
    let report: Vec<String> = failures
        .iter()
        .map(|f| format!("{} ({:?}) — {} → {}: {:?}", f.function, f.caller, f.what, f.status, f.body))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {requests} hostile requests were answered with a server error or internals:\n{}",
        failures.len(),
        report.join("\n")
    );
}
