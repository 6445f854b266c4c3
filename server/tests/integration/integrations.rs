//! Integrations against a real OAuth 2.0 authorization server: `oidc-provider` (node,
//! `end2end/oauth-provider.cjs`), one instance per test so counters and outages are the
//! test's own. Connect (PKCE, state), refresh under concurrency, disconnect with RFC 7009
//! revocation, a provider outage, refusals, API keys, sealing and rotation.

use std::collections::HashMap;

use diesel_async::RunQueryDsl;
use fluxi_core::audit::Action;
use fluxi_core::clock::Clock;
use reqwest::StatusCode;

use crate::common::{self, recorded, Person, TestApp};

/// A running `oidc-provider` on a free loopback port, stopped when dropped.
pub struct OauthServer {
    child: std::process::Child,
    pub url: String,
    http: reqwest::Client,
}

impl Drop for OauthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OauthServer {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let child = std::process::Command::new("node")
            .arg("end2end/oauth-provider.cjs")
            .arg(port.to_string())
            .current_dir(root)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("node runs end2end/oauth-provider.cjs (scripts/lib.sh installs oidc-provider)");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let server = Self { child, url: format!("http://127.0.0.1:{port}"), http };
        let ready = format!("{}/.well-known/openid-configuration", server.url);
        for _ in 0..300 {
            if server.http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the OAuth test server did not start");
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.http.get(format!("{}/__test/stats", self.url)).send().await.unwrap().json().await.unwrap()
    }

    pub async fn outage(&self, down: bool) {
        let res = self
            .http
            .post(format!("{}/__test/outage", self.url))
            .json(&serde_json::json!({ "down": down }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }

    /// RFC 7662 introspection: whether the provider holds `token` active.
    pub async fn active(&self, token: &str) -> bool {
        let res: serde_json::Value = self
            .http
            .post(format!("{}/token/introspection", self.url))
            .basic_auth("fluxi-test", Some("fluxi-test-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        res["active"].as_bool().unwrap()
    }

    /// Signs in as `login` at the provider and consents, as a person in a browser would
    /// (its real login and consent forms); returns where the provider sends the browser.
    pub async fn consent(&self, authorize_url: &str, login: &str) -> String {
        let mut jar: HashMap<String, String> = HashMap::new();
        let mut next = authorize_url.to_string();
        for _ in 0..10 {
            let url = if next.starts_with('/') { format!("{}{next}", self.url) } else { next.clone() };
            if !url.starts_with(&self.url) {
                return url;
            }
            let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            let req = if url.contains("/interaction/") {
                let body = if jar.keys().any(|k| k == "_session") {
                    "prompt=consent".to_string()
                } else {
                    format!("prompt=login&login={login}&password=x")
                };
                self.http.post(&url).header("content-type", "application/x-www-form-urlencoded").body(body)
            } else {
                self.http.get(&url)
            };
            let res = req.header("cookie", cookie).send().await.unwrap();
            for v in res.headers().get_all("set-cookie") {
                let first = v.to_str().unwrap().split(';').next().unwrap();
                if let Some((k, v)) = first.split_once('=') {
                    jar.insert(k.to_string(), v.to_string());
                }
            }
            assert!(res.status().is_redirection(), "at {url}: {}", res.text().await.unwrap_or_default());
            next = res.headers()["location"].to_str().unwrap().to_string();
        }
        panic!("the provider's sign-in did not come back");
    }
}

pub async fn app_with_provider() -> (TestApp, OauthServer) {
    let oauth = OauthServer::start().await;
    let app = TestApp::spawn_with(common::Options { oauth_url: Some(oauth.url.clone()), ..Default::default() }).await;
    (app, oauth)
}

fn page(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap()
}

fn card<'a>(page: &'a serde_json::Value, provider: &str) -> &'a serde_json::Value {
    page["providers"].as_array().unwrap().iter().find(|c| c["id"] == provider).unwrap()
}

/// Starts connecting `local-idp` and returns the provider's authorization URL.
async fn start_connect(person: &mut Person, slug: &str) -> String {
    let res = person
        .client
        .post_form(
            "connect_integration",
            &format!("/w/{slug}/integrations"),
            &[("slug", slug), ("provider", "local-idp")],
        )
        .await;
    assert!(res.status.is_redirection(), "{} {}", res.status, res.body);
    res.location().unwrap().to_string()
}

/// The full flow: Connect, the provider's login and consent, the callback.
pub async fn connect(person: &mut Person, slug: &str, oauth: &OauthServer, login: &str) -> common::Reply {
    let authorize = start_connect(person, slug).await;
    let back = oauth.consent(&authorize, login).await;
    let path = back.split_once("://").map(|(_, rest)| &rest[rest.find('/').unwrap()..]).unwrap().to_string();
    person.client.get(&path).await
}

/// A plain form post of `function` (`check_integration`, `disconnect_integration`) for
/// one connection, from the integrations page.
async fn on_connection(person: &mut Person, function: &str, slug: &str, id: uuid::Uuid) -> common::Reply {
    let id = id.to_string();
    person.client.post_form(function, &format!("/w/{slug}/integrations"), &[("slug", slug), ("connection", &id)]).await
}

/// One pass of the background revocation job.
async fn revocation_pass(app: &TestApp) -> usize {
    let mut conn = app.db.conn().await;
    let audit = fluxi_core::audit::Audit::system(fluxi_core::audit::SystemJob::IntegrationRevoker, &app.clock);
    let (keyring, integrations) = (&app.state.keyring, &app.state.integrations);
    fluxi_core::integrations::revocations::run_due(&mut conn, &audit, keyring, integrations, app.clock.now(), 10)
        .await
        .unwrap()
}

/// The stored (sealed) tokens of a connection, opened with the app's keyring.
async fn tokens(app: &TestApp, slug: &str, person: &Person) -> (uuid::Uuid, String, Option<String>) {
    let access = app.access(slug, person).await;
    let mut conn = app.db.conn().await;
    let list = fluxi_core::integrations::list_connections(&mut conn, &access, &app.state.keyring).await.unwrap();
    let id = list.iter().find(|c| c.provider == "local-idp").unwrap().id;
    let schema = format!("ws_{}", access.workspace_id().simple());
    let row = as_tenant(&mut conn, &schema, move |c| {
        Box::pin(async move {
            diesel::sql_query(
                "SELECT key_version, access_token, refresh_token FROM integration_connections WHERE id = $1",
            )
            .bind::<diesel::sql_types::Uuid, _>(id)
            .get_result::<SealedRow>(c)
            .await
        })
    })
    .await;
    let row = (row.key_version, row.access_token, row.refresh_token);
    let parts = [access.workspace_id(), person.user.id, id];
    let parts: Vec<&[u8]> = parts.iter().map(|u| u.as_bytes().as_slice()).collect();
    let open = |purpose, bytes: Vec<u8>| {
        let plain = app
            .state
            .keyring
            .open(purpose, &parts, &fluxi_core::secrets::Sealed { key_version: row.0, bytes })
            .unwrap();
        String::from_utf8(plain.to_vec()).unwrap()
    };
    let access_token = open(fluxi_core::secrets::Purpose::IntegrationAccessToken, row.1.clone().unwrap());
    let refresh_token = row.2.clone().map(|b| open(fluxi_core::secrets::Purpose::IntegrationRefreshToken, b));
    (id, access_token, refresh_token)
}

/// Runs `work` as the workspace's own role (the login role reaches a tenant schema only
/// through it), in a transaction.
async fn as_tenant<T, F>(conn: &mut diesel_async::AsyncPgConnection, schema: &str, work: F) -> T
where
    T: Send + 'static,
    F: for<'c> FnOnce(
            &'c mut diesel_async::AsyncPgConnection,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = diesel::QueryResult<T>> + Send + 'c>>
        + Send
        + 'static,
{
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let schema = schema.to_string();
    conn.transaction::<T, diesel::result::Error, _>(move |c| {
        Box::pin(async move {
            c.batch_execute(&format!("SET LOCAL ROLE {schema}; SET LOCAL search_path = {schema};")).await?;
            work(c).await
        })
    })
    .await
    .unwrap()
}

#[derive(diesel::QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    key_version: i32,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bytea>)]
    access_token: Option<Vec<u8>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bytea>)]
    refresh_token: Option<Vec<u8>>,
}

#[tokio::test]
async fn connecting_through_the_providers_consent_stores_a_sealed_connection_and_disconnect_revokes_it() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Vault").await;
    let authorize = start_connect(&mut ada, &slug).await;
    // PKCE S256, the exact redirect URI and every catalogue scope are asked for.
    let url = url::Url::parse(&authorize).unwrap();
    let q: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], format!("{}/integrations/callback", app.base));
    assert_eq!(q["scope"], "openid email notes:read");
    assert_eq!(q["state"].len(), 64);
    let back = oauth.consent(&authorize, "ada").await;
    let path = &back[back.find("/integrations/callback").unwrap()..];
    let res = ada.client.get(path).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?connected=1&provider=local-idp#local-idp").as_str())
    );
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    let mine = &card(&p, "local-idp")["mine"];
    assert_eq!(mine["account"], "ada@example.test");
    assert_eq!(mine["scopes"].as_array().unwrap().len(), 3);
    assert!(!p.to_string().contains("eyJ") && !p.to_string().contains("access_token"));
    assert_eq!(recorded(&app, Action::IntegrationConnected).await.len(), 1);
    let (id, access_token, refresh_token) = tokens(&app, &slug, &ada).await;
    assert!(oauth.active(&access_token).await);
    // The same callback again: the state worked once.
    let again = ada.client.get(path).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(!recorded(&app, Action::IntegrationConnectRefused).await.is_empty());

    // "Check connection" uses it and records when.
    let res = on_connection(&mut ada, "check_integration", &slug, id).await;
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?checked=ok&provider=local-idp#local-idp").as_str())
    );

    let res = on_connection(&mut ada, "disconnect_integration", &slug, id).await;
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?disconnected=revoked&provider=local-idp#local-idp").as_str())
    );
    assert!(!oauth.active(&access_token).await, "revoked at the provider");
    assert!(!oauth.active(refresh_token.as_deref().unwrap()).await);
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert!(card(&p, "local-idp")["mine"].is_null());
    assert_eq!(recorded(&app, Action::IntegrationRevoked).await.len(), 1);
    assert_eq!(recorded(&app, Action::IntegrationDisconnected).await.len(), 1);
    let mut conn = app.db.conn().await;
    let queued: i64 = fluxi_core::schema::integration_revocations::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(queued, 0, "nothing kept once revoked");
}

use diesel::QueryDsl;

#[tokio::test]
async fn a_state_is_refused_when_expired_or_brought_back_by_another_session() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "States").await;
    let mut eve = app.person("Eve").await;
    app.add_member(&slug, &eve, "member").await;

    // Eve's browser brings back Ada's callback (say, a link she was sent): refused.
    let authorize = start_connect(&mut ada, &slug).await;
    let back = oauth.consent(&authorize, "ada").await;
    let path = back[back.find("/integrations/callback").unwrap()..].to_string();
    let res = eve.client.get(&path).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    // ...and the state is gone for Ada too (single use), nothing stored.
    assert_eq!(ada.client.get(&path).await.status, StatusCode::BAD_REQUEST);

    // Ten minutes and a second later: expired.
    let authorize = start_connect(&mut ada, &slug).await;
    let back = oauth.consent(&authorize, "ada").await;
    app.clock.advance(time::Duration::minutes(10) + time::Duration::seconds(1));
    let res = ada.client.get(&back[back.find("/integrations/callback").unwrap()..]).await;
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?refused=expired&provider=local-idp#local-idp").as_str())
    );

    // The person declines at the provider.
    let res = ada.client.get("/integrations/callback?error=access_denied&state=0000000000000000000000000000000000000000000000000000000000000000").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "an unknown state");
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert!(card(&p, "local-idp")["mine"].is_null(), "nothing stored");
    let refusals = recorded(&app, Action::IntegrationConnectRefused).await;
    assert!(refusals.iter().any(|e| e.detail["reason"] == "other_session"));
    assert!(refusals.iter().any(|e| e.detail["reason"] == "expired"));
}

#[tokio::test]
async fn scopes_beyond_those_requested_are_refused_and_nothing_is_stored() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Scopes").await;
    let authorize = start_connect(&mut ada, &slug).await;
    // As if Fluxi had asked for less than the provider then granted: the stored request
    // lacks `notes:read`, which the provider grants.
    let mut conn = app.db.conn().await;
    diesel::sql_query("UPDATE integration_authorizations SET scopes = ARRAY['openid', 'email']")
        .execute(&mut conn)
        .await
        .unwrap();
    let back = oauth.consent(&authorize, "ada").await;
    let res = ada.client.get(&back[back.find("/integrations/callback").unwrap()..]).await;
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?refused=scope_escalation&provider=local-idp#local-idp").as_str())
    );
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert!(card(&p, "local-idp")["mine"].is_null());
    assert_eq!(oauth.stats().await["revocation"], 2, "the tokens issued were revoked at once");
}

#[tokio::test]
async fn twenty_concurrent_uses_of_an_expiring_connection_refresh_it_exactly_once() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Refresh").await;
    connect(&mut ada, &slug, &oauth, "ada").await;
    let (id, old_access, _) = tokens(&app, &slug, &ada).await;
    // Within a minute of expiry (the provider's tokens live an hour).
    app.clock.advance(time::Duration::minutes(59) + time::Duration::seconds(30));
    let access = app.access(&slug, &ada).await;
    let now = app.clock.now();
    let uses = (0..20).map(|_| {
        let (app, access) = (&app, access.clone());
        async move {
            let mut conn = app.db.pool.get().await.unwrap();
            let audit = fluxi_core::testing::audit();
            fluxi_core::integrations::access_token(
                &mut conn,
                &audit,
                &access,
                &app.state.keyring,
                &app.state.integrations,
                id,
                now,
            )
            .await
            .map(|t| t.to_string())
        }
    });
    let results = futures::future::join_all(uses).await;
    let tokens_seen: std::collections::HashSet<String> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(tokens_seen.len(), 1, "every use got the one refreshed token");
    assert!(!tokens_seen.contains(&old_access));
    assert_eq!(oauth.stats().await["refresh_token"], 1, "exactly one refresh at the provider");
    let (_, stored, _) = tokens(&app, &slug, &ada).await;
    assert!(oauth.active(&stored).await, "the stored token is the live one");
}

#[tokio::test]
async fn a_refresh_the_provider_refuses_marks_the_connection_and_tells_its_owner() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Refused").await;
    connect(&mut ada, &slug, &oauth, "ada").await;
    let (id, access_token, _) = tokens(&app, &slug, &ada).await;
    // Revoked at the provider behind Fluxi's back.
    let res = reqwest::Client::new()
        .post(format!("{}/token/revocation", oauth.url))
        .basic_auth("fluxi-test", Some("fluxi-test-secret"))
        .form(&[("token", access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    // Its access token due for a refresh (the session would not outlive an hour's wait).
    let schema = format!("ws_{}", app.access(&slug, &ada).await.workspace_id().simple());
    let mut conn = app.db.conn().await;
    as_tenant(&mut conn, &schema, |c| {
        Box::pin(async move {
            diesel::sql_query("UPDATE integration_connections SET access_expires_at = now() - interval '1 hour'")
                .execute(c)
                .await
        })
    })
    .await;
    let res = on_connection(&mut ada, "check_integration", &slug, id).await;
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?checked=needs-reconnecting&provider=local-idp#local-idp").as_str())
    );
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert_eq!(card(&p, "local-idp")["mine"]["needs_reconnect"], true);
    assert_eq!(recorded(&app, Action::IntegrationRefreshFailed).await.len(), 1);
    let body = common::outbox_body_for(&app, &ada.user.email).await;
    assert!(body.contains("reconnect it"), "{body}");
}

#[tokio::test]
async fn a_disconnect_while_the_provider_is_down_deletes_locally_and_the_job_revokes_later() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Outage").await;
    connect(&mut ada, &slug, &oauth, "ada").await;
    let (id, access_token, _) = tokens(&app, &slug, &ada).await;
    oauth.outage(true).await;
    let res = on_connection(&mut ada, "disconnect_integration", &slug, id).await;
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?disconnected=revocation-failed&provider=local-idp#local-idp").as_str())
    );
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert!(card(&p, "local-idp")["mine"].is_null(), "gone here at once");
    assert_eq!(recorded(&app, Action::IntegrationRevocationFailed).await.len(), 1);
    oauth.outage(false).await;
    assert!(oauth.active(&access_token).await, "still live at the provider");
    // The background job's pass, once the backoff has passed.
    app.clock.advance(time::Duration::minutes(2));
    assert_eq!(revocation_pass(&app).await, 1);
    let mut conn = app.db.conn().await;
    assert!(!oauth.active(&access_token).await, "revoked by the retry");
    assert_eq!(recorded(&app, Action::IntegrationRevoked).await.len(), 1);
    let queued: i64 = fluxi_core::schema::integration_revocations::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(queued, 0, "the ciphertext is gone after success");
}

#[tokio::test]
async fn leaving_the_workspace_or_its_deletion_queues_revocation_of_the_connections() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Leavers").await;
    let mut bob = app.person("Bob").await;
    app.add_member(&slug, &bob, "member").await;
    connect(&mut bob, &slug, &oauth, "bob").await;
    let (_, bob_token, _) = tokens(&app, &slug, &bob).await;
    let res = ada.client.call("remove_member", &[("slug", &slug), ("user_id", &bob.user.id.to_string())]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(revocation_pass(&app).await, 1);
    assert!(!oauth.active(&bob_token).await);

    connect(&mut ada, &slug, &oauth, "ada").await;
    let (_, ada_token, _) = tokens(&app, &slug, &ada).await;
    let res = ada.client.call("delete_workspace", &[("slug", &slug), ("password", common::PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(revocation_pass(&app).await, 1, "revoked after the schema is gone");
    assert!(!oauth.active(&ada_token).await);
}

const OPENAI_KEY: &str = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH";

#[tokio::test]
async fn api_keys_are_saved_masked_replaced_deleted_and_never_shown() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Keys").await;
    let save =
        |key: &'static str| [("slug", slug.clone()), ("provider", "openai".to_string()), ("api_key", key.to_string())];
    let res = ada
        .client
        .call("save_api_key", &save("not a key").iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(res.body.contains("does not look like an API key"));
    let res = ada
        .client
        .call("save_api_key", &save(OPENAI_KEY).iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let body = ada.client.call("integrations_page", &[("slug", &slug)]).await.body;
    assert!(!body.contains("abcdefghijklmnop"), "the key never comes back");
    let p = page(&body);
    assert_eq!(card(&p, "openai")["mine"]["masked_key"], "••••EFGH");
    let replacement = "sk-proj-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvuts";
    let res =
        ada.client.call("save_api_key", &[("slug", &slug), ("provider", "openai"), ("api_key", replacement)]).await;
    assert_eq!(res.status, StatusCode::OK);
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    let mine = &card(&p, "openai")["mine"];
    assert_eq!(mine["masked_key"], "••••vuts");
    // A viewer sees the catalogue, no connections, and the server refuses the calls.
    let mut vic = app.person("Vic").await;
    app.add_member(&slug, &vic, "viewer").await;
    let vp = page(&vic.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert_eq!(vp["can_connect"], false);
    assert!(card(&vp, "openai")["mine"].is_null() && card(&vp, "openai")["others"].as_array().unwrap().is_empty());
    let res =
        vic.client.call("save_api_key", &[("slug", &slug), ("provider", "openai"), ("api_key", OPENAI_KEY)]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let id = mine["id"].as_str().unwrap().to_string();
    assert_eq!(
        vic.client.call("disconnect_integration", &[("slug", &slug), ("connection", &id)]).await.status,
        StatusCode::FORBIDDEN
    );
    // Another workspace's member with this id: not found there.
    let mut eve = app.person("Eve").await;
    let other = app.workspace(&mut eve, "Elsewhere").await;
    let res = eve.client.call("disconnect_integration", &[("slug", &other), ("connection", &id)]).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    // A member sees only their own; an admin sees (and may delete) everyone's.
    let mut mo = app.person("Mo").await;
    app.add_member(&slug, &mo, "member").await;
    let mp = page(&mo.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert!(card(&mp, "openai")["others"].as_array().unwrap().is_empty());
    assert_eq!(
        mo.client.call("disconnect_integration", &[("slug", &slug), ("connection", &id)]).await.status,
        StatusCode::NOT_FOUND
    );
    let mut al = app.person("Al").await;
    app.add_member(&slug, &al, "admin").await;
    let ap = page(&al.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert_eq!(card(&ap, "openai")["others"][0]["owner"], "Ada");
    let res = al.client.call("disconnect_integration", &[("slug", &slug), ("connection", &id)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(recorded(&app, Action::IntegrationKeySaved).await.len(), 1);
    assert_eq!(recorded(&app, Action::IntegrationKeyReplaced).await.len(), 1);
    assert_eq!(recorded(&app, Action::IntegrationKeyDeleted).await.len(), 1);
}

#[tokio::test]
async fn a_sealed_key_moved_to_another_row_does_not_open_and_rotation_moves_every_secret() {
    use fluxi_core::secrets::{EncryptionKey, Keyring};
    let v1 = EncryptionKey::random();
    let app = TestApp::spawn_with(common::Options { keyring: Keyring::single(v1.clone()), ..Default::default() }).await;
    let (mut ada, mut bob) = (app.person("Ada").await, app.person("Bob").await);
    let slug = app.workspace(&mut ada, "Sealed").await;
    app.add_member(&slug, &bob, "member").await;
    for p in [&mut ada, &mut bob] {
        let res =
            p.client.call("save_api_key", &[("slug", &slug), ("provider", "openai"), ("api_key", OPENAI_KEY)]).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    }
    let schema = format!("ws_{}", app.access(&slug, &ada).await.workspace_id().simple());
    let mut conn = app.db.conn().await;
    // Bob's ciphertext copied over Ada's: it does not open as hers.
    let (bob_id, ada_id) = (bob.user.id, ada.user.id);
    as_tenant(&mut conn, &schema, move |c| {
        Box::pin(async move {
            diesel::sql_query(
                "UPDATE integration_connections SET api_key = (SELECT api_key FROM integration_connections WHERE owner_id = $1) WHERE owner_id = $2",
            )
            .bind::<diesel::sql_types::Uuid, _>(bob_id)
            .bind::<diesel::sql_types::Uuid, _>(ada_id)
            .execute(c)
            .await
        })
    })
    .await;
    let v2 = Keyring::new(2, EncryptionKey::random(), vec![(1, v1)]);
    let report = fluxi_core::secrets::rotate(&mut conn, &v2, 10, &app.clock).await.unwrap();
    assert_eq!((report.resealed, report.failed), (1, 1), "Bob's moves; the copied one does not open");
    let counts = fluxi_core::secrets::count_by_version(&mut conn).await.unwrap();
    assert!(counts.iter().any(|c| c.kind == "integration connections" && c.key_version == 2 && c.count == 1));
    let rotations = recorded(&app, Action::SecretsRotated).await;
    assert_eq!(rotations[0].outcome, "failed");
}

#[tokio::test]
async fn a_revocation_still_failing_after_seven_days_is_given_up_and_its_tokens_destroyed() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Give up").await;
    connect(&mut ada, &slug, &oauth, "ada").await;
    let (id, _, _) = tokens(&app, &slug, &ada).await;
    oauth.outage(true).await;
    let res = on_connection(&mut ada, "disconnect_integration", &slug, id).await;
    assert!(res.location().unwrap().contains("disconnected=revocation-failed"));
    app.clock.advance(fluxi_core::integrations::revocations::RETRY_PERIOD + time::Duration::minutes(1));
    assert_eq!(revocation_pass(&app).await, 1);
    let mut conn = app.db.conn().await;
    assert_eq!(recorded(&app, Action::IntegrationRevocationGivenUp).await.len(), 1);
    let queued: i64 = fluxi_core::schema::integration_revocations::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(queued, 0, "no ciphertext kept past the retry period");
}

#[tokio::test]
async fn a_connection_sealed_under_an_older_key_moves_to_the_current_one_by_rotation_or_refresh() {
    use fluxi_core::secrets::{EncryptionKey, Keyring, Purpose, Sealed};
    let (k1, k2) = (EncryptionKey::random(), EncryptionKey::random());
    let oauth = OauthServer::start().await;
    let ring = Keyring::new(2, k2, vec![(1, k1.clone())]);
    let app = TestApp::spawn_with(common::Options {
        oauth_url: Some(oauth.url.clone()),
        keyring: ring.clone(),
        ..Default::default()
    })
    .await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Old key").await;
    connect(&mut ada, &slug, &oauth, "ada").await;
    let (id, ..) = tokens(&app, &slug, &ada).await;
    let workspace = app.access(&slug, &ada).await.workspace_id();
    let parts = [workspace, ada.user.id, id];
    let parts: Vec<&[u8]> = parts.iter().map(|u| u.as_bytes().as_slice()).collect();
    let old = Keyring::single(k1);
    let schema = format!("ws_{}", workspace.simple());
    let mut conn = app.db.conn().await;
    // Twice, the row as a server that had only key 1 would have sealed it: first moved by
    // `server keys rotate` (and used without a refresh), then due for a refresh instead.
    for (round, rotate) in [(0, true), (1, false)] {
        let sealed: (i32, Vec<u8>, Vec<u8>, Vec<u8>) = as_tenant(&mut conn, &schema, move |c| {
            Box::pin(async move {
                diesel::sql_query(
                    "SELECT key_version, account, access_token, refresh_token FROM integration_connections WHERE id = $1",
                )
                .bind::<diesel::sql_types::Uuid, _>(id)
                .get_result::<FullRow>(c)
                .await
                .map(|r| (r.key_version, r.account, r.access_token, r.refresh_token))
            })
        })
        .await;
        let reseal = |purpose, bytes: Vec<u8>| {
            let plain = ring.open(purpose, &parts, &Sealed { key_version: sealed.0, bytes }).unwrap();
            old.seal(purpose, &parts, &plain).bytes
        };
        let (account, access_token, refresh_token) = (
            reseal(Purpose::IntegrationAccount, sealed.1.clone()),
            reseal(Purpose::IntegrationAccessToken, sealed.2.clone()),
            reseal(Purpose::IntegrationRefreshToken, sealed.3.clone()),
        );
        let expires = if rotate { "now() + interval '1 hour'" } else { "now() - interval '1 minute'" };
        as_tenant(&mut conn, &schema, move |c| {
            Box::pin(async move {
                diesel::sql_query(format!(
                    "UPDATE integration_connections SET key_version = 1, account = $1, access_token = $2, \
                     refresh_token = $3, access_expires_at = {expires} WHERE id = $4"
                ))
                .bind::<diesel::sql_types::Bytea, _>(account)
                .bind::<diesel::sql_types::Bytea, _>(access_token)
                .bind::<diesel::sql_types::Bytea, _>(refresh_token)
                .bind::<diesel::sql_types::Uuid, _>(id)
                .execute(c)
                .await
            })
        })
        .await;
        if rotate {
            let report = fluxi_core::secrets::rotate(&mut conn, &ring, 10, &app.clock).await.unwrap();
            assert_eq!((report.resealed, report.failed), (1, 0));
        }
        let res = on_connection(&mut ada, "check_integration", &slug, id).await;
        assert!(res.location().unwrap().contains("checked=ok"), "{:?}", res.location());
        assert_eq!(oauth.stats().await["refresh_token"], round, "a refresh only when due");
        let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
        assert_eq!(card(&p, "local-idp")["mine"]["account"], "ada@example.test", "every secret opens under key 2");
        let counts = fluxi_core::secrets::count_by_version(&mut conn).await.unwrap();
        assert!(counts.iter().all(|c| c.kind != "integration connections" || c.key_version == 2), "{counts:?}");
    }
}

#[derive(diesel::QueryableByName)]
struct FullRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    key_version: i32,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    account: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    access_token: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    refresh_token: Vec<u8>,
}

#[tokio::test]
async fn reconnecting_the_same_account_keeps_the_grant_and_a_demotion_to_viewer_disconnects() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Again").await;
    let mut bob = app.person("Bob").await;
    app.add_member(&slug, &bob, "member").await;
    connect(&mut bob, &slug, &oauth, "bob").await;
    let (first, ..) = tokens(&app, &slug, &bob).await;
    // Connecting again to the same account at the provider replaces the row; the grant at
    // the provider is the same one, so nothing is revoked.
    connect(&mut bob, &slug, &oauth, "bob").await;
    let (second, token, _) = tokens(&app, &slug, &bob).await;
    assert_ne!(first, second);
    assert!(oauth.active(&token).await);
    assert_eq!(oauth.stats().await["revocation"], 0);
    // Made a viewer: a role that keeps no connections.
    let res = ada
        .client
        .call("change_member_role", &[("slug", &slug), ("user_id", &bob.user.id.to_string()), ("role", "viewer")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert!(card(&p, "local-idp")["others"].as_array().unwrap().is_empty());
    assert_eq!(revocation_pass(&app).await, 1);
    assert!(!oauth.active(&token).await);
}

/// A full dump of the database after connecting, saving a key and starting another
/// connection holds none of the secrets — in clear or hex-encoded (how a dump writes
/// bytea).
#[tokio::test]
async fn a_database_dump_holds_no_token_key_or_state_in_clear() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Dump").await;
    connect(&mut ada, &slug, &oauth, "canary").await;
    let (_, access_token, refresh_token) = tokens(&app, &slug, &ada).await;
    let res =
        ada.client.call("save_api_key", &[("slug", &slug), ("provider", "openai"), ("api_key", OPENAI_KEY)]).await;
    assert_eq!(res.status, StatusCode::OK);
    // An attempt under way: its state and PKCE verifier wait in the database.
    let authorize = start_connect(&mut ada, &slug).await;
    let state = url::Url::parse(&authorize).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
    let dump =
        std::process::Command::new("pg_dump").arg("--no-owner").arg(&app.db.admin_url).output().expect("pg_dump");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout).to_lowercase();
    assert!(dump.contains("integration_connections"), "the dump covers the workspace's schema");
    let canaries =
        [access_token, refresh_token.unwrap(), OPENAI_KEY.to_string(), state, "fluxi-test-secret".to_string()];
    for canary in canaries {
        assert!(!dump.contains(&canary.to_lowercase()), "in clear: {}…", &canary[..8]);
        assert!(!dump.contains(&hex::encode(canary.as_bytes())), "hex-encoded: {}…", &canary[..8]);
    }
}

/// At a provider where revoking ends the person's whole authorization of Fluxi (Google;
/// the test provider is configured so), disconnecting in one workspace leaves the same
/// account's connection in another working; the last one is revoked.
#[tokio::test]
async fn a_grant_shared_with_another_workspace_is_revoked_only_with_the_last_connection() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let first = app.workspace(&mut ada, "First").await;
    let second = app.workspace(&mut ada, "Second").await;
    connect(&mut ada, &first, &oauth, "ada").await;
    connect(&mut ada, &second, &oauth, "ada").await;
    let (id_first, token_first, _) = tokens(&app, &first, &ada).await;
    let (id_second, token_second, _) = tokens(&app, &second, &ada).await;
    let res = on_connection(&mut ada, "disconnect_integration", &first, id_first).await;
    assert!(res.location().unwrap().contains("disconnected=shared"), "{:?}", res.location());
    assert!(oauth.active(&token_second).await, "the other workspace's connection still works");
    assert_eq!(recorded(&app, Action::IntegrationRevocationSkipped).await.len(), 1);
    let res = on_connection(&mut ada, "disconnect_integration", &second, id_second).await;
    assert!(res.location().unwrap().contains("disconnected=revoked"), "{:?}", res.location());
    assert!(!oauth.active(&token_second).await);
    let _ = token_first;
}

/// A refresh while the provider is down is tried again with a pause, then reported as
/// unavailable with the lease released (the next use does not wait for it), and nothing is
/// lost: once the provider is back, the same refresh token works. Someone else's
/// connection is "not found" to a member, whatever they try.
#[tokio::test]
async fn a_refresh_during_an_outage_is_retried_then_left_for_the_next_use() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Down").await;
    connect(&mut ada, &slug, &oauth, "ada").await;
    let (id, ..) = tokens(&app, &slug, &ada).await;
    let mut mo = app.person("Mo").await;
    app.add_member(&slug, &mo, "member").await;
    for function in ["check_integration", "disconnect_integration"] {
        let res = mo.client.call(function, &[("slug", &slug), ("connection", &id.to_string())]).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{function}: {}", res.body);
    }
    app.clock.advance(time::Duration::minutes(59) + time::Duration::seconds(30));
    oauth.outage(true).await;
    let access = app.access(&slug, &ada).await;
    let use_it = || async {
        let mut conn = app.db.pool.get().await.unwrap();
        let audit = fluxi_core::testing::audit();
        let (keyring, integrations) = (&app.state.keyring, &app.state.integrations);
        fluxi_core::integrations::access_token(&mut conn, &audit, &access, keyring, integrations, id, app.clock.now())
            .await
    };
    let started = std::time::Instant::now();
    assert!(matches!(use_it().await, Err(fluxi_core::integrations::IntegrationError::ProviderUnavailable)));
    assert!(matches!(use_it().await, Err(fluxi_core::integrations::IntegrationError::ProviderUnavailable)));
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the lease was released, not waited out");
    oauth.outage(false).await;
    assert!(use_it().await.is_ok());
    assert_eq!(oauth.stats().await["refresh_token"], 1);
    let mut conn = app.db.conn().await;
    let list = fluxi_core::integrations::list_connections(&mut conn, &access, &app.state.keyring).await.unwrap();
    let used = list[0].last_used_at.expect("its use is recorded");
    assert!((app.clock.now() - used).abs() < time::Duration::seconds(1), "recorded at the use");
}

/// The background refresher renews, ahead of expiry, the tokens of connections in use —
/// once — and leaves idle ones alone.
#[tokio::test]
async fn connections_in_use_are_refreshed_ahead_of_expiry_by_the_background_job() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Ahead").await;
    connect(&mut ada, &slug, &oauth, "ada").await;
    let (id, old, _) = tokens(&app, &slug, &ada).await;
    let audit = fluxi_core::audit::Audit::system(fluxi_core::audit::SystemJob::IntegrationRefresher, &app.clock);
    let (keyring, integrations) = (&app.state.keyring, &app.state.integrations);
    let mut conn = app.db.conn().await;
    // Four minutes before expiry, never used: left alone.
    app.clock.advance(time::Duration::minutes(56));
    let pass = fluxi_core::integrations::refresh_due(&mut conn, &audit, keyring, integrations, app.clock.now());
    assert_eq!(pass.await.unwrap(), 0);
    // Used: refreshed once, and not again on the next pass.
    let access = app.access(&slug, &ada).await;
    let audit_ada = fluxi_core::testing::audit();
    fluxi_core::integrations::access_token(
        &mut conn,
        &audit_ada,
        &access,
        keyring,
        integrations,
        id,
        app.clock.now() - time::Duration::minutes(2),
    )
    .await
    .unwrap();
    for expected in [1, 0] {
        let pass = fluxi_core::integrations::refresh_due(&mut conn, &audit, keyring, integrations, app.clock.now());
        assert_eq!(pass.await.unwrap(), expected);
    }
    assert_eq!(oauth.stats().await["refresh_token"], 1);
    let (_, new, _) = tokens(&app, &slug, &ada).await;
    assert_ne!(new, old);
    assert!(oauth.active(&new).await);
}

/// A code the provider issued to another application (same redirect URI, Fluxi's state)
/// is refused by the token endpoint when Fluxi redeems it: nothing is stored.
#[tokio::test]
async fn a_code_issued_to_another_client_is_refused() {
    let (app, oauth) = app_with_provider().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Other client").await;
    let authorize = start_connect(&mut ada, &slug).await.replace("client_id=fluxi-test", "client_id=another-app");
    let back = oauth.consent(&authorize, "ada").await;
    let res = ada.client.get(&back[back.find("/integrations/callback").unwrap()..]).await;
    assert_eq!(
        res.location(),
        Some(format!("/w/{slug}/integrations?refused=code_refused&provider=local-idp#local-idp").as_str())
    );
    let p = page(&ada.client.call("integrations_page", &[("slug", &slug)]).await.body);
    assert!(card(&p, "local-idp")["mine"].is_null());
    let refusals = recorded(&app, Action::IntegrationConnectRefused).await;
    assert!(refusals.iter().any(|e| e.detail["reason"] == "code_refused"));
}

/// Each connection attempt stores a row until its callback or expiry: one person gets 20
/// under way at once, however many they start in parallel.
#[tokio::test]
async fn a_person_has_at_most_twenty_connection_attempts_under_way() {
    let app = TestApp::spawn_with(common::Options { pool_size: 16, ..Default::default() }).await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Attempts").await;
    let access = app.access(&slug, &ada).await;
    let starts = (0..25).map(|i| {
        let (app, access) = (&app, access.clone());
        async move {
            let mut conn = app.db.pool.get().await.unwrap();
            let (keyring, integrations) = (&app.state.keyring, &app.state.integrations);
            let binding = format!("session-{i}");
            fluxi_core::integrations::connect::start(
                &mut conn,
                &access,
                keyring,
                integrations,
                "local-idp",
                binding.as_bytes(),
                app.clock.now(),
            )
            .await
        }
    });
    let results = futures::future::join_all(starts).await;
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(fluxi_core::integrations::IntegrationError::TooManyAttempts)))
        .count();
    assert_eq!((results.len() - refused, refused), (20, 5));
    // Through the server function: a clear 429.
    let res = ada.client.call("connect_integration", &[("slug", &slug), ("provider", "local-idp")]).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.body);
    // Expired attempts no longer count.
    app.clock.advance(fluxi_core::integrations::connect::STATE_LIFETIME + time::Duration::seconds(1));
    let res = ada.client.call("connect_integration", &[("slug", &slug), ("provider", "local-idp")]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}
