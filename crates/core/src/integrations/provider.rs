//! Every request Fluxi makes to a provider: only to the catalogue's URLs, with the one
//! HTTP client (timeouts, no redirects followed), through the `oauth2` crate where the
//! protocol is OAuth's. Tokens cross this module as `Zeroizing` strings and are never
//! logged; a provider's error answers are reduced to refused / unavailable.

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, RevocationUrl, StandardRevocableToken, TokenResponse, TokenUrl,
};
use time::Duration;
use zeroize::Zeroizing;

use super::catalogue::{OauthEndpoints, Provider, RevocationStyle};
use super::{IntegrationError, Integrations};

/// Why a provider request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The provider answered no for good (invalid_grant, invalid_client, 4xx).
    Refused,
    /// Not reached, timed out, 5xx, or an answer that made no sense: worth retrying.
    Unavailable,
}

/// Tokens from the token endpoint.
pub struct Tokens {
    pub access_token: Zeroizing<String>,
    pub refresh_token: Option<Zeroizing<String>>,
    pub expires_in: Option<Duration>,
    /// What the provider says it granted; `None` when it did not say (then, by RFC 6749
    /// §5.1, what was requested).
    pub scopes: Option<Vec<String>>,
}

type Client = oauth2::Client<
    oauth2::StandardErrorResponse<BasicErrorResponseType>,
    oauth2::basic::BasicTokenResponse,
    oauth2::StandardTokenIntrospectionResponse<oauth2::EmptyExtraTokenFields, oauth2::basic::BasicTokenType>,
    StandardRevocableToken,
    oauth2::StandardErrorResponse<oauth2::RevocationErrorResponseType>,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointMaybeSet,
    oauth2::EndpointSet,
>;

fn client(integrations: &Integrations, provider: &Provider) -> Result<(Client, OauthEndpoints), IntegrationError> {
    let endpoints = provider.oauth().ok_or(IntegrationError::WrongKind("an API key"))?.clone();
    let credentials = provider.credentials.as_ref().ok_or(IntegrationError::NotConfigured)?;
    let revocation_url = match endpoints.revocation {
        RevocationStyle::Rfc7009 => endpoints.revocation_url.clone().map(RevocationUrl::from_url),
        _ => None,
    };
    let client = BasicClient::new(ClientId::new(credentials.client_id.clone()))
        .set_client_secret(ClientSecret::new(credentials.client_secret.to_string()))
        .set_auth_uri(AuthUrl::from_url(endpoints.authorization_url.clone()))
        .set_token_uri(TokenUrl::from_url(endpoints.token_url.clone()))
        .set_redirect_uri(RedirectUrl::from_url(integrations.redirect_url.clone()))
        .set_revocation_url_option(revocation_url);
    Ok((client, endpoints))
}

/// The URL to send the person to, and the PKCE verifier to keep (`None` when the
/// provider does not support PKCE).
pub fn authorization_url(
    integrations: &Integrations,
    provider: &Provider,
    state: &str,
) -> Result<(url::Url, Option<Zeroizing<String>>), IntegrationError> {
    let (client, endpoints) = client(integrations, provider)?;
    let state = state.to_string();
    let mut request = client.authorize_url(move || CsrfToken::new(state));
    let scopes: Vec<String> = provider.scopes.iter().map(|s| s.name.clone()).collect();
    if !scopes.is_empty() {
        if endpoints.scope_separator == " " {
            request = request.add_scopes(scopes.into_iter().map(oauth2::Scope::new));
        } else {
            request = request.add_extra_param("scope", scopes.join(&endpoints.scope_separator));
        }
    }
    for (name, value) in &endpoints.extra_authorize_params {
        request = request.add_extra_param(name.clone(), value.clone());
    }
    let verifier = if endpoints.pkce {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        request = request.set_pkce_challenge(challenge);
        Some(Zeroizing::new(verifier.into_secret()))
    } else {
        None
    };
    let (url, _) = request.url();
    Ok((url, verifier))
}

/// Longest lifetime believed from a token answer (a huge `expires_in` must not overflow).
const MAX_EXPIRES_IN: Duration = Duration::days(365);

fn tokens_from(response: oauth2::basic::BasicTokenResponse) -> Tokens {
    Tokens {
        access_token: Zeroizing::new(response.access_token().secret().clone()),
        refresh_token: response.refresh_token().map(|r| Zeroizing::new(r.secret().clone())),
        expires_in: response.expires_in().map(|d| Duration::try_from(d).unwrap_or(MAX_EXPIRES_IN).min(MAX_EXPIRES_IN)),
        // Some providers (GitHub) list granted scopes with commas, not spaces.
        scopes: response.scopes().map(|s| {
            s.iter().flat_map(|x| x.split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from)).collect()
        }),
    }
}

/// A token-endpoint answer as a failure. For a refresh, only `invalid_grant` means the
/// provider refuses the connection for good (revoked there, expired); `invalid_client`
/// and the like mean Fluxi's client is misconfigured, which must not wipe everyone's
/// connections. For a code, any error answer refuses it.
fn failure<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
    refreshing: bool,
) -> Failure {
    match e {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => Failure::Refused,
            _ if refreshing => Failure::Unavailable,
            BasicErrorResponseType::Extension(x) if x == "temporarily_unavailable" || x == "server_error" => {
                Failure::Unavailable
            }
            _ => Failure::Refused,
        },
        RequestTokenError::Request(_) | RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
            Failure::Unavailable
        }
    }
}

/// Redeems an authorization code (with its PKCE verifier).
pub async fn exchange_code(
    integrations: &Integrations,
    provider: &Provider,
    code: &str,
    verifier: Option<Zeroizing<String>>,
) -> Result<Result<Tokens, Failure>, IntegrationError> {
    let (client, _) = client(integrations, provider)?;
    let mut request = client.exchange_code(AuthorizationCode::new(code.to_string()));
    if let Some(v) = verifier {
        request = request.set_pkce_verifier(PkceCodeVerifier::new(v.to_string()));
    }
    Ok(request.request_async(&integrations.http).await.map(tokens_from).map_err(|e| failure(e, false)))
}

/// Redeems a refresh token once.
pub async fn refresh(
    integrations: &Integrations,
    provider: &Provider,
    refresh_token: &Zeroizing<String>,
) -> Result<Tokens, Failure> {
    let (client, _) = client(integrations, provider).map_err(|_| Failure::Unavailable)?;
    let token = RefreshToken::new(refresh_token.to_string());
    client
        .exchange_refresh_token(&token)
        .request_async(&integrations.http)
        .await
        .map(tokens_from)
        .map_err(|e| failure(e, true))
}

/// Largest account answer read (the account lookup needs a few fields).
const ACCOUNT_BODY_LIMIT: usize = 64 * 1024;

/// The account the token reaches at the provider, as `account_field` of the answer of
/// `account_url` (a dotted path; numbers become text).
pub async fn account_name(
    integrations: &Integrations,
    provider: &Provider,
    access_token: &str,
) -> Result<String, Failure> {
    let endpoints = provider.oauth().ok_or(Failure::Refused)?;
    let mut response = integrations
        .http
        .get(endpoints.account_url.clone())
        .bearer_auth(access_token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|_| Failure::Unavailable)?;
    let status = response.status();
    if status.is_server_error() {
        return Err(Failure::Unavailable);
    }
    if !status.is_success() {
        return Err(Failure::Refused);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| Failure::Unavailable)? {
        body.extend_from_slice(&chunk);
        if body.len() > ACCOUNT_BODY_LIMIT {
            return Err(Failure::Unavailable);
        }
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| Failure::Unavailable)?;
    let value = endpoints.account_field.split('.').try_fold(&json, |v, key| v.get(key)).ok_or(Failure::Refused)?;
    let name = match value {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(Failure::Refused),
    };
    // Shown on a page: bounded, and no control characters.
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    if name.is_empty() {
        return Err(Failure::Refused);
    }
    Ok(name)
}

/// Revokes a connection's grant at the provider: the refresh token (which ends the grant
/// at most providers) and the access token. `Ok` when the provider confirmed.
pub async fn revoke(
    integrations: &Integrations,
    provider: &Provider,
    access_token: Option<&str>,
    refresh_token: Option<&str>,
) -> Result<(), Failure> {
    let endpoints = provider.oauth().ok_or(Failure::Refused)?;
    match endpoints.revocation {
        RevocationStyle::None => Err(Failure::Refused),
        // Sent here rather than through the `oauth2` crate, which refuses a plain-HTTP
        // revocation endpoint even on loopback (where the tests' provider runs).
        RevocationStyle::Rfc7009 => {
            let credentials = provider.credentials.as_ref().ok_or(Failure::Refused)?;
            let url = endpoints.revocation_url.clone().ok_or(Failure::Refused)?;
            let tokens = refresh_token
                .map(|r| (r, "refresh_token"))
                .into_iter()
                .chain(access_token.map(|a| (a, "access_token")));
            // A refresh token the provider does not know (revoked before, by an earlier try
            // or with the grant) is gone: the access token is still revoked after it.
            let mut grant_gone = false;
            for (token, hint) in tokens {
                // RFC 6749 §2.3.1: the credentials are form-encoded before Basic encoding.
                let response = integrations
                    .http
                    .post(url.clone())
                    .basic_auth(form_encode(&credentials.client_id), Some(form_encode(&credentials.client_secret)))
                    .form(&[("token", token), ("token_type_hint", hint)])
                    .send()
                    .await
                    .map_err(|_| Failure::Unavailable)?;
                match response.status() {
                    s if s.is_success() => grant_gone |= hint == "refresh_token",
                    // RFC 7009 §2.2.1: 400 is the provider's answer about this token (unknown,
                    // unsupported); anything else (401/403 for a misconfigured client, 429,
                    // 5xx, redirects) is worth trying again later.
                    reqwest::StatusCode::BAD_REQUEST if hint == "refresh_token" => grant_gone = true,
                    reqwest::StatusCode::BAD_REQUEST if grant_gone => {}
                    reqwest::StatusCode::BAD_REQUEST => return Err(Failure::Refused),
                    _ => return Err(Failure::Unavailable),
                }
            }
            Ok(())
        }
        RevocationStyle::GithubToken => {
            let credentials = provider.credentials.as_ref().ok_or(Failure::Refused)?;
            let Some(token) = access_token else { return Err(Failure::Refused) };
            let url = endpoints
                .revocation_url
                .as_ref()
                .ok_or(Failure::Refused)?
                .as_str()
                .replace("%7Bclient_id%7D", &percent_encode_segment(&credentials.client_id));
            let response = integrations
                .http
                .delete(url)
                .basic_auth(&credentials.client_id, Some(credentials.client_secret.as_str()))
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .json(&serde_json::json!({ "access_token": token }))
                .send()
                .await
                .map_err(|_| Failure::Unavailable)?;
            match response.status() {
                s if s.is_success() => Ok(()),
                // Already gone.
                reqwest::StatusCode::NOT_FOUND => Ok(()),
                reqwest::StatusCode::UNPROCESSABLE_ENTITY => Err(Failure::Refused),
                _ => Err(Failure::Unavailable),
            }
        }
    }
}

fn percent_encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').to_string()
}
