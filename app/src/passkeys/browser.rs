//! The browser's half of a WebAuthn ceremony: the server's options (JSON) through
//! `PublicKeyCredential.parse…OptionsFromJSON`, `navigator.credentials.create` or `get`,
//! and the answer back as JSON (`toJSON()`). Those JSON helpers are in every current
//! browser; without them the page says passkeys cannot be used here.

use js_sys::wasm_bindgen::{JsCast, JsValue};
use js_sys::{Function, Object, Promise, Reflect, JSON};

const UNSUPPORTED: &str = "This browser cannot use passkeys here. Use your password instead.";

/// Which ceremony.
#[derive(Clone, Copy)]
pub enum Ceremony {
    Create,
    Get,
}

fn get(target: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(target, &JsValue::from_str(key)).ok().filter(|v| !v.is_undefined() && !v.is_null())
}

fn function(target: &JsValue, key: &str) -> Option<Function> {
    get(target, key).and_then(|f| f.dyn_into::<Function>().ok())
}

/// Runs `ceremony` with the server's `options` and returns the authenticator's answer as
/// JSON, or a message for the person.
pub async fn run(ceremony: Ceremony, options: &str) -> Result<String, String> {
    let global = js_sys::global();
    let pkc = get(&global, "PublicKeyCredential").ok_or(UNSUPPORTED)?;
    let (parser, method) = match ceremony {
        Ceremony::Create => ("parseCreationOptionsFromJSON", "create"),
        Ceremony::Get => ("parseRequestOptionsFromJSON", "get"),
    };
    let parser = function(&pkc, parser).ok_or(UNSUPPORTED)?;
    let parsed = JSON::parse(options).map_err(|_| UNSUPPORTED.to_string())?;
    let public_key = get(&parsed, "publicKey").ok_or(UNSUPPORTED)?;
    let public_key = parser.call1(&pkc, &public_key).map_err(|_| UNSUPPORTED.to_string())?;
    let request = Object::new();
    Reflect::set(&request, &JsValue::from_str("publicKey"), &public_key).map_err(|_| UNSUPPORTED.to_string())?;
    let credentials = get(&global, "navigator").and_then(|n| get(&n, "credentials")).ok_or(UNSUPPORTED)?;
    let call = function(&credentials, method).ok_or(UNSUPPORTED)?;
    let promise =
        call.call1(&credentials, &request).ok().and_then(|p| p.dyn_into::<Promise>().ok()).ok_or(UNSUPPORTED)?;
    let credential = wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(|_| "The passkey prompt was closed or timed out. Try again.".to_string())?;
    let to_json = function(&credential, "toJSON").ok_or(UNSUPPORTED)?;
    let json = to_json.call0(&credential).map_err(|_| UNSUPPORTED.to_string())?;
    JSON::stringify(&json).map(String::from).map_err(|_| UNSUPPORTED.to_string())
}
