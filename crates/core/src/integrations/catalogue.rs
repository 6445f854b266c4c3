//! The provider catalogue: which third-party tools can be connected, where their OAuth
//! endpoints are, which scopes are asked for (each with a plain sentence), and how an API
//! key of theirs looks. A TOML file (`integrations/catalogue.toml` is built in; operators
//! point `FLUXI_INTEGRATIONS_CATALOGUE` at their own). Client ids and secrets come from
//! the environment, never from the file.
//!
//! Every URL is checked once, here: HTTPS, or plain HTTP to a loopback address when the
//! operator allows it (development and tests). The vault only ever requests these URLs.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::Zeroizing;

/// The catalogue shipped with Fluxi.
pub const BUILT_IN: &str = include_str!("../../../../integrations/catalogue.toml");

/// A provider id: lowercase letters, digits and `-`, at most 40 characters. Only the
/// catalogue makes one, so it is configuration, never text someone typed (it may go into
/// audit details).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ProviderId(String);

impl ProviderId {
    pub const MAX_LEN: usize = 40;

    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ProviderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        ProviderId::parse(&raw).ok_or_else(|| serde::de::Error::custom("not a provider id"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Oauth2,
    ApiKey,
}

/// How a connection is revoked at the provider when it is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationStyle {
    /// RFC 7009: the token POSTed to the revocation endpoint.
    Rfc7009,
    /// GitHub: `DELETE /applications/{client_id}/token` with the client's credentials —
    /// that one token, not every token the person gave the app (the `/grant` endpoint
    /// would also end their connections in other workspaces).
    GithubToken,
    /// No API: the person removes the app at the provider (`revocation_help`).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyCharset {
    Base64url,
    Alphanumeric,
    Printable,
}

impl KeyCharset {
    fn admits(self, c: char) -> bool {
        match self {
            KeyCharset::Base64url => c.is_ascii_alphanumeric() || c == '-' || c == '_',
            KeyCharset::Alphanumeric => c.is_ascii_alphanumeric(),
            KeyCharset::Printable => c.is_ascii_graphic(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub name: String,
    /// What it lets Fluxi do, in one plain sentence to the person.
    pub means: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: ProviderId,
    name: String,
    kind: ProviderKind,
    description: String,
    authorization_url: Option<String>,
    token_url: Option<String>,
    revocation: Option<RevocationStyle>,
    revocation_url: Option<String>,
    revocation_help: Option<String>,
    revocation_ends_grant: Option<bool>,
    manage_url: Option<String>,
    pkce: Option<bool>,
    account_url: Option<String>,
    account_field: Option<String>,
    scope_separator: Option<String>,
    #[serde(default)]
    extra_authorize_params: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    scope: Vec<Scope>,
    key_help: Option<String>,
    key_prefix: Option<String>,
    key_min_length: Option<usize>,
    key_max_length: Option<usize>,
    key_charset: Option<KeyCharset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    provider: Vec<RawProvider>,
}

/// An OAuth 2.0 provider's endpoints and what is asked of it.
#[derive(Debug, Clone)]
pub struct OauthEndpoints {
    pub authorization_url: Url,
    pub token_url: Url,
    pub revocation: RevocationStyle,
    pub revocation_url: Option<Url>,
    /// Revoking one token ends the person's whole authorization of Fluxi's client (every
    /// connection of that account, in any workspace), as at Google.
    pub revocation_ends_grant: bool,
    pub pkce: bool,
    pub account_url: Url,
    pub account_field: String,
    pub scope_separator: String,
    pub extra_authorize_params: Vec<(String, String)>,
}

/// What an API key of this provider looks like.
#[derive(Debug, Clone)]
pub struct KeyFormat {
    pub help: String,
    pub prefix: String,
    pub min_length: usize,
    pub max_length: usize,
    pub charset: KeyCharset,
}

impl KeyFormat {
    /// Whether `key` (already trimmed) has this provider's form.
    pub fn admits(&self, key: &str) -> bool {
        let len = key.chars().count();
        key.starts_with(&self.prefix)
            && (self.min_length..=self.max_length).contains(&len)
            && key.chars().all(|c| self.charset.admits(c))
    }
}

#[derive(Debug, Clone)]
pub enum ProviderSpec {
    Oauth2(Box<OauthEndpoints>),
    ApiKey(KeyFormat),
}

/// The client credentials an operator configured for a provider.
#[derive(Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientCredentials {{ client_id: {:?}, client_secret: <redacted> }}", self.client_id)
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub id: ProviderId,
    pub name: String,
    pub description: String,
    pub scopes: Vec<Scope>,
    pub revocation_help: Option<String>,
    pub manage_url: Option<Url>,
    pub spec: ProviderSpec,
    /// `None` for an OAuth provider the operator has not configured.
    pub credentials: Option<ClientCredentials>,
}

impl Provider {
    pub fn kind(&self) -> ProviderKind {
        match self.spec {
            ProviderSpec::Oauth2(_) => ProviderKind::Oauth2,
            ProviderSpec::ApiKey(_) => ProviderKind::ApiKey,
        }
    }

    pub fn oauth(&self) -> Option<&OauthEndpoints> {
        match &self.spec {
            ProviderSpec::Oauth2(e) => Some(e),
            ProviderSpec::ApiKey(_) => None,
        }
    }

    pub fn key_format(&self) -> Option<&KeyFormat> {
        match &self.spec {
            ProviderSpec::ApiKey(f) => Some(f),
            ProviderSpec::Oauth2(_) => None,
        }
    }

    /// Usable: API-key providers always; OAuth providers once their client is configured.
    pub fn is_configured(&self) -> bool {
        self.kind() == ProviderKind::ApiKey || self.credentials.is_some()
    }

    /// The words for a scope the provider granted (its name when the catalogue has none).
    pub fn scope_words(&self, name: &str) -> String {
        self.scopes.iter().find(|s| s.name == name).map_or_else(|| name.to_string(), |s| s.means.clone())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogueError {
    #[error("the integrations catalogue is not valid TOML of the expected shape: {0}")]
    Syntax(String),
    #[error("provider {id}: {problem}")]
    Provider { id: String, problem: String },
}

/// Parameters of the authorization request that only Fluxi sets.
const RESERVED_PARAMS: &[&str] =
    &["state", "redirect_uri", "client_id", "response_type", "scope", "code_challenge", "code_challenge_method"];

/// Whether plain-HTTP loopback URLs are accepted (development and tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    HttpsOnly,
    AllowLoopbackHttp,
}

#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    providers: Vec<Provider>,
}

impl Catalogue {
    /// Parses and checks a catalogue; `credentials` looks up a provider's client id and
    /// secret by its id (from the environment in the server).
    pub fn parse(
        text: &str,
        transport: Transport,
        credentials: impl Fn(&ProviderId) -> Option<ClientCredentials>,
    ) -> Result<Self, CatalogueError> {
        let raw: RawCatalogue = toml::from_str(text).map_err(|e| CatalogueError::Syntax(e.message().to_string()))?;
        let mut seen = HashSet::new();
        let mut providers = Vec::with_capacity(raw.provider.len());
        for p in raw.provider {
            let id = p.id.clone();
            let fail =
                |problem: &str| CatalogueError::Provider { id: id.as_str().to_string(), problem: problem.into() };
            if !seen.insert(id.clone()) {
                return Err(fail("listed twice"));
            }
            let provider = check_provider(p, transport, &credentials).map_err(|problem| fail(&problem))?;
            providers.push(provider);
        }
        Ok(Self { providers })
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id.as_str() == id)
    }
}

fn check_provider(
    p: RawProvider,
    transport: Transport,
    credentials: &impl Fn(&ProviderId) -> Option<ClientCredentials>,
) -> Result<Provider, String> {
    let text_ok = |s: &str, max: usize| !s.trim().is_empty() && s.chars().count() <= max;
    if !text_ok(&p.name, 80) || !text_ok(&p.description, 300) {
        return Err("name (≤ 80 characters) and description (≤ 300) are required".into());
    }
    let url = |field: &str, value: &Option<String>| -> Result<Url, String> {
        let raw = value.as_deref().ok_or_else(|| format!("{field} is required"))?;
        checked_url(raw, transport).map_err(|problem| format!("{field}: {problem}"))
    };
    let manage_url = p.manage_url.as_ref().map(|_| url("manage_url", &p.manage_url)).transpose()?;
    let spec = match p.kind {
        ProviderKind::Oauth2 => {
            let revocation = p.revocation.ok_or("revocation is required")?;
            let revocation_url = match revocation {
                RevocationStyle::None => None,
                _ => Some(url("revocation_url", &p.revocation_url)?),
            };
            if let Some(reserved) = p.extra_authorize_params.keys().find(|k| RESERVED_PARAMS.contains(&k.as_str())) {
                return Err(format!("extra_authorize_params may not set {reserved}"));
            }
            // Shown whenever revoking did not happen or failed: how to finish it by hand.
            if p.revocation_help.as_deref().is_none_or(|h| h.trim().is_empty()) {
                return Err("revocation_help is required".into());
            }
            let account_field = p.account_field.clone().filter(|f| !f.is_empty()).ok_or("account_field is required")?;
            if p.scope
                .iter()
                .any(|s| s.name.is_empty() || s.name.chars().any(char::is_whitespace) || s.means.is_empty())
            {
                return Err("every scope needs a name without spaces and its meaning".into());
            }
            ProviderSpec::Oauth2(Box::new(OauthEndpoints {
                authorization_url: url("authorization_url", &p.authorization_url)?,
                token_url: url("token_url", &p.token_url)?,
                revocation,
                revocation_url,
                revocation_ends_grant: p.revocation_ends_grant.unwrap_or(false),
                pkce: p.pkce.unwrap_or(false),
                account_url: url("account_url", &p.account_url)?,
                account_field,
                scope_separator: p.scope_separator.clone().unwrap_or_else(|| " ".into()),
                extra_authorize_params: p.extra_authorize_params.clone().into_iter().collect(),
            }))
        }
        ProviderKind::ApiKey => {
            let (min_length, max_length) = (p.key_min_length.unwrap_or(16), p.key_max_length.unwrap_or(200));
            // The page shows a key's last 4 characters: short keys would be shown whole.
            if min_length < 12 || min_length > max_length || max_length > 1000 {
                return Err("key lengths must satisfy 12 ≤ key_min_length ≤ key_max_length ≤ 1000".into());
            }
            ProviderSpec::ApiKey(KeyFormat {
                help: p.key_help.clone().ok_or("key_help is required")?,
                prefix: p.key_prefix.clone().unwrap_or_default(),
                min_length,
                max_length,
                charset: p.key_charset.unwrap_or(KeyCharset::Printable),
            })
        }
    };
    let credentials = match p.kind {
        ProviderKind::Oauth2 => credentials(&p.id),
        ProviderKind::ApiKey => None,
    };
    Ok(Provider {
        id: p.id,
        name: p.name,
        description: p.description,
        scopes: p.scope,
        revocation_help: p.revocation_help,
        manage_url,
        spec,
        credentials,
    })
}

/// HTTPS, or HTTP to a loopback host when allowed; no credentials or fragment in it.
fn checked_url(raw: &str, transport: Transport) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| "not a URL".to_string())?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err("must not hold credentials or a fragment".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err("has no host".into()),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback && transport == Transport::AllowLoopbackHttp => Ok(url),
        "http" if loopback => {
            Err("plain HTTP is allowed only when FLUXI_INTEGRATIONS_ALLOW_LOOPBACK_HTTP is set".into())
        }
        _ => Err("must be https".into()),
    }
}

/// The environment variable names of a provider's client credentials.
pub fn credential_variables(id: &ProviderId) -> (String, String) {
    let stem = format!("FLUXI_INTEGRATION_{}", id.as_str().to_ascii_uppercase().replace('-', "_"));
    (format!("{stem}_CLIENT_ID"), format!("{stem}_CLIENT_SECRET"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &ProviderId) -> Option<ClientCredentials> {
        None
    }

    #[test]
    fn the_built_in_catalogue_is_valid_and_https_only() {
        let catalogue = Catalogue::parse(BUILT_IN, Transport::HttpsOnly, none).unwrap();
        assert!(catalogue.providers().len() >= 6);
        assert!(catalogue.providers().iter().any(|p| p.kind() == ProviderKind::ApiKey));
        for p in catalogue.providers() {
            assert_eq!(p.is_configured(), p.kind() == ProviderKind::ApiKey, "{}: no client configured", p.id.as_str());
        }
    }

    #[test]
    fn urls_must_be_https_unless_loopback_is_allowed() {
        let entry = |url: &str| {
            format!(
                "[[provider]]\nid = \"x\"\nname = \"X\"\nkind = \"oauth2\"\ndescription = \"d\"\n\
                 authorization_url = \"{url}/a\"\ntoken_url = \"{url}/t\"\nrevocation = \"rfc7009\"\n\
                 revocation_url = \"{url}/r\"\nrevocation_help = \"h\"\naccount_url = \"{url}/me\"\naccount_field = \"email\"\n"
            )
        };
        assert!(Catalogue::parse(&entry("https://idp.example"), Transport::HttpsOnly, none).is_ok());
        for bad in ["http://idp.example", "ftp://idp.example", "https://user:pw@idp.example", "http://127.0.0.1:9"] {
            assert!(Catalogue::parse(&entry(bad), Transport::HttpsOnly, none).is_err(), "{bad}");
        }
        assert!(Catalogue::parse(&entry("http://127.0.0.1:9"), Transport::AllowLoopbackHttp, none).is_ok());
        assert!(Catalogue::parse(&entry("http://10.0.0.1"), Transport::AllowLoopbackHttp, none).is_err());
        let twice = format!("{}{}", entry("https://a.example"), entry("https://b.example"));
        assert!(matches!(
            Catalogue::parse(&twice, Transport::HttpsOnly, none),
            Err(CatalogueError::Provider { problem, .. }) if problem == "listed twice"
        ));
        assert!(Catalogue::parse("[[provider]]\nid = \"Bad Id\"", Transport::HttpsOnly, none).is_err());
        let overriding = format!("{}extra_authorize_params = {{ state = \"x\" }}\n", entry("https://a.example"));
        assert!(Catalogue::parse(&overriding, Transport::HttpsOnly, none).is_err(), "Fluxi's own parameters");
    }

    #[test]
    fn key_formats_check_prefix_length_and_characters() {
        let f = KeyFormat {
            help: String::new(),
            prefix: "sk-".into(),
            min_length: 12,
            max_length: 20,
            charset: KeyCharset::Base64url,
        };
        assert!(f.admits("sk-abcdef_1234"));
        assert!(!f.admits("pk-abcdef_1234"), "prefix");
        assert!(!f.admits("sk-abc"), "short");
        assert!(!f.admits("sk-abcdefghijklmnopqrstu"), "long");
        assert!(!f.admits("sk-abc def1234"), "space");
        assert!(!f.admits("sk-abcdéf123456"), "non-ASCII");
    }

    #[test]
    fn credential_variables_are_named_after_the_id() {
        let id = ProviderId::parse("google-workspace").unwrap();
        assert_eq!(credential_variables(&id).0, "FLUXI_INTEGRATION_GOOGLE_WORKSPACE_CLIENT_ID");
    }
}
