//! Integration-test harness: a real server on a loopback port, over a database of its
//! own, with a clock the test controls; and a small HTTP client that keeps cookies
//! the way a browser would (including `Secure` ones, since we talk to loopback).
#![allow(dead_code)]

use std::sync::Arc;

use app::error::AppError;
use app::ssr::{AppServices, AppState};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::accounts::{PasswordHasher, PasswordHasherConfig};
use fluxi_core::clock::ManualClock;
use fluxi_core::schema::{memberships, outbox_emails, workspaces};
use fluxi_core::sessions::SessionPolicy;
use fluxi_core::testing::TestDb;
use leptos::config::LeptosOptions;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, REFERER, SET_COOKIE};
use reqwest::{redirect, StatusCode};
use time::OffsetDateTime;

pub const COOKIE_NAME: &str = "__Host-fluxi_session";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    pub db: TestDb,
    pub clock: ManualClock,
    pub state: AppState,
}

pub struct Options {
    pub hasher: PasswordHasherConfig,
    pub policy: SessionPolicy,
    pub sign_in_throttle: fluxi_core::accounts::SignInThrottle,
    pub client_sign_in_throttle: fluxi_core::accounts::SignInThrottle,
    pub elsewhere_sign_in_throttle: fluxi_core::accounts::SignInThrottle,
    /// Generous by default: tests sign up many accounts from one address.
    pub sign_up_limits: fluxi_core::accounts::SignUpLimits,
    pub trusted_proxies: usize,
    pub pool_size: usize,
    /// `FLUXI_ENV=production`: no development helpers.
    pub production: bool,
    pub request_timeout: std::time::Duration,
    pub workspaces_per_day: u32,
    pub keyring: fluxi_core::secrets::Keyring,
    pub connection_limits: server::listen::ConnectionLimits,
    /// Serve HTTPS with these files (the base URL is then `https://localhost:PORT`).
    pub tls: Option<server::listen::TlsFiles>,
    /// Base URL `http://localhost:PORT` instead of the address: WebAuthn needs a domain.
    pub named_host: bool,
    /// The local OAuth server the catalogue's `local-idp` provider points at (a closed
    /// port when none: connecting can start, nothing at the provider answers).
    pub oauth_url: Option<String>,
    /// The assistant's model and limits (none: not configured).
    pub assistant: Option<fluxi_core::assistant::AssistantConfig>,
}

impl Default for Options {
    fn default() -> Self {
        // Tests run in parallel on two cores and create many accounts: a generous wait for
        // a hashing permit, so that only the tests about "busy" ever see it.
        let hasher =
            PasswordHasherConfig { max_wait: std::time::Duration::from_secs(60), ..PasswordHasherConfig::default() };
        // Longer than the hashing wait above, so only a request that is really stuck hits it
        // (and fails its test instead of hanging the suite).
        let request_timeout = std::time::Duration::from_secs(120);
        Self {
            hasher,
            policy: SessionPolicy::default(),
            sign_in_throttle: fluxi_core::accounts::SignInThrottle::default(),
            client_sign_in_throttle: fluxi_core::accounts::SignInThrottle::per_client_default(),
            elsewhere_sign_in_throttle: fluxi_core::accounts::SignInThrottle::elsewhere_default(),
            sign_up_limits: fluxi_core::accounts::SignUpLimits {
                per_network: fluxi_core::rate_limit::RateLimit::per_hour(10_000),
                overall: fluxi_core::rate_limit::RateLimit::per_hour(10_000),
            },
            trusted_proxies: 0,
            pool_size: 8,
            production: false,
            request_timeout,
            workspaces_per_day: fluxi_core::workspaces::DEFAULT_WORKSPACES_PER_DAY,
            keyring: fluxi_core::secrets::Keyring::single(fluxi_core::secrets::EncryptionKey::random()),
            connection_limits: server::listen::ConnectionLimits::default(),
            tls: None,
            named_host: false,
            oauth_url: None,
            assistant: None,
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> Self {
        let _ =
            tracing_subscriber::fmt().with_test_writer().with_env_filter("warn,tower_sessions_core=error").try_init();
        let mut db = TestDb::new().await;
        db.pool = fluxi_core::db::build_pool(&db.url, opts.pool_size).unwrap();
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = match &opts.tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None if opts.named_host => format!("http://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let site_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/site");
        let state = AppState::new(AppServices {
            pool: db.pool.clone(),
            hasher: PasswordHasher::new(opts.hasher),
            clock: Arc::new(clock.clone()),
            session_policy: opts.policy,
            sign_in_throttle: opts.sign_in_throttle,
            sign_up_limits: opts.sign_up_limits,
            elsewhere_sign_in_throttle: opts.elsewhere_sign_in_throttle,
            client_sign_in_throttle: opts.client_sign_in_throttle,
            trusted_proxies: opts.trusted_proxies,
            leptos_options: LeptosOptions::builder().output_name("fluxi").site_root(site_root).site_addr(addr).build(),
            base_url: base.clone(),
            security_txt: server::security_txt(
                &base,
                "mailto:security@example.test",
                OffsetDateTime::now_utc() + time::Duration::days(90),
            ),
            dev_mailbox: !opts.production,
            request_timeout: opts.request_timeout,
            workspaces_per_day: opts.workspaces_per_day,
            invitation_policy: Default::default(),
            pseudonyms: fluxi_core::pseudonym::PseudonymKeys::single(fluxi_core::pseudonym::Pseudonymizer::random()),
            audit_signer: fluxi_core::audit::AuditSigner::random(),
            audit_repeats: Default::default(),
            keyring: opts.keyring.clone(),
            integrations: fluxi_core::integrations::Integrations::new(
                test_catalogue(opts.oauth_url.as_deref().unwrap_or("http://127.0.0.1:9")),
                &base,
            )
            .unwrap(),
            assistant: opts.assistant.clone().unwrap_or_else(fluxi_core::assistant::AssistantConfig::not_configured),
        });
        let router = server::build_router(state.clone());
        let tls = opts.tls.as_ref().map(|files| files.acceptor().expect("test certificate"));
        let limits = opts.connection_limits;
        tokio::spawn(server::listen::serve(listener, router, limits, tls, std::future::pending()));
        Self { base, db, clock, state }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// A client that has signed up a fresh account through the whole flow — the form,
    /// the mailed link, the password again — and is signed in (returns it with the email used).
    pub async fn signed_up(&self, name: &str) -> (Client, String) {
        let mut c = self.client();
        let email = format!("{}-{}@example.test", name.to_lowercase(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let res = c.call("signup", &[("display_name", name), ("email", &email), ("password", PASSWORD)]).await;
        assert_eq!(res.status, StatusCode::OK, "signup failed: {:?}", res.body);
        let token = sign_up_token(self, &email, 0).await;
        let res = c.call("confirm_sign_up", &[("token", &token), ("password", PASSWORD)]).await;
        assert_eq!(res.status, StatusCode::OK, "confirm_sign_up failed: {:?}", res.body);
        (c, email)
    }
}

/// One HTTP response, read fully.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn error(&self) -> AppError {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not an AppError ({e}): {}", self.body))
    }
    pub fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }
}

/// A browser-like client with a one-cookie jar for the session cookie.
pub const FLASH_COOKIE: &str = "__Host-fluxi_flash";
pub const PASSKEY_COOKIE: &str = "__Host-fluxi_passkey";

pub struct Client {
    base: String,
    http: reqwest::Client,
    pub session_cookie: Option<String>,
    /// The device cookie a successful sign-in gave this browser, sent back like a browser does.
    pub device_cookie: Option<String>,
    /// A plain form's flash (`__Host-fluxi_flash`), until a page takes it.
    pub flash_cookie: Option<String>,
    /// Sent as `User-Agent` when set.
    pub user_agent: Option<String>,
    /// The passkey ceremony this browser started (`__Host-fluxi_passkey`).
    pub passkey_cookie: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        // Idle connections are dropped before the server's header-read limit (10 s) closes
        // them, so a request never goes out on a connection the server is closing.
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        Self {
            base: base.to_string(),
            http,
            session_cookie: None,
            device_cookie: None,
            flash_cookie: None,
            user_agent: None,
            passkey_cookie: None,
        }
    }

    fn absorb(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let first = v.split(';').next().unwrap();
            if let Some(value) = first.strip_prefix(&format!("{COOKIE_NAME}=")) {
                let removed = value.is_empty() || v.to_ascii_lowercase().contains("max-age=0");
                self.session_cookie = (!removed).then(|| value.to_string());
            }
            if let Some(value) = first.strip_prefix(&format!("{}=", fluxi_core::accounts::familiar::DEVICE_COOKIE)) {
                self.device_cookie = Some(value.to_string());
            }
            if let Some(value) = first.strip_prefix(&format!("{FLASH_COOKIE}=")) {
                let removed = value.is_empty() || v.to_ascii_lowercase().contains("max-age=0");
                self.flash_cookie = (!removed).then(|| value.to_string());
            }
            if let Some(value) = first.strip_prefix(&format!("{PASSKEY_COOKIE}=")) {
                let removed = value.is_empty() || v.to_ascii_lowercase().contains("max-age=0");
                self.passkey_cookie = (!removed).then(|| value.to_string());
            }
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Reply {
        let mut cookies = Vec::new();
        if let Some(v) = &self.session_cookie {
            cookies.push(format!("{COOKIE_NAME}={v}"));
        }
        if let Some(v) = &self.device_cookie {
            cookies.push(format!("{}={v}", fluxi_core::accounts::familiar::DEVICE_COOKIE));
        }
        if let Some(v) = &self.flash_cookie {
            cookies.push(format!("{FLASH_COOKIE}={v}"));
        }
        if let Some(v) = &self.passkey_cookie {
            cookies.push(format!("{PASSKEY_COOKIE}={v}"));
        }
        let req = if cookies.is_empty() { req } else { req.header(COOKIE, cookies.join("; ")) };
        let req = match &self.user_agent {
            Some(agent) => req.header(reqwest::header::USER_AGENT, agent),
            None => req,
        };
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.text().await.unwrap_or_default();
        self.absorb(&headers);
        Reply { status, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let req = self.http.get(format!("{}{path}", self.base)).header(ACCEPT, "text/html");
        self.send(req).await
    }

    /// Calls a server function the way the hydrated app does (fetch, JSON reply).
    pub async fn call(&mut self, name: &str, form: &[(&str, &str)]) -> Reply {
        let req = self
            .http
            .post(format!("{}/api/{name}", self.base))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(encode(form));
        self.send(req).await
    }

    /// Submits a form the way a browser without JavaScript does (redirect reply).
    pub async fn post_form(&mut self, name: &str, referer_path: &str, form: &[(&str, &str)]) -> Reply {
        let req = self
            .http
            .post(format!("{}/api/{name}", self.base))
            .header(ACCEPT, "text/html,application/xhtml+xml")
            .header(REFERER, format!("{}{referer_path}", self.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(encode(form));
        self.send(req).await
    }

    pub async fn raw(&mut self, req: reqwest::RequestBuilder) -> Reply {
        self.send(req).await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub fn encode(form: &[(&str, &str)]) -> String {
    form.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&")
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A signed-in person created directly in the database (fixture builder) and signed in
/// over HTTP.
pub struct Person {
    pub client: Client,
    pub user: fluxi_core::accounts::User,
}

impl TestApp {
    pub async fn person(&self, name: &str) -> Person {
        let email = format!(
            "{}-{}@example.test",
            name.to_lowercase().replace(' ', "-"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let user = fluxi_core::testing::UserBuilder::new()
            .display_name(name)
            .email(&email)
            .password(PASSWORD)
            .create(&self.db.pool, &self.state.hasher)
            .await;
        // As if they had signed up from here: their first sign-in is no news (no notice).
        {
            use fluxi_core::accounts::familiar;
            use fluxi_core::clock::Clock;
            let network = familiar::network_pseudonym(self.state.pseudonyms.current(), "127.0.0.1");
            let mut conn = self.db.conn().await;
            familiar::remember(&mut conn, user.id, None, Some(&network), self.clock.now()).await.unwrap();
        }
        let mut client = self.client();
        let res = client.call("login", &[("email", &email), ("password", PASSWORD)]).await;
        assert_eq!(res.status, StatusCode::OK, "login failed: {}", res.body);
        Person { client, user }
    }

    /// Creates a workspace owned by `owner` through the server function; returns its slug.
    pub async fn workspace(&self, owner: &mut Person, name: &str) -> String {
        let res = owner.client.call("create_workspace", &[("name", name)]).await;
        assert_eq!(res.status, StatusCode::OK, "create_workspace: {}", res.body);
        res.location().unwrap().strip_prefix("/w/").unwrap().to_string()
    }

    /// Adds `person` to the workspace with `role` directly (fixture, not under test).
    pub async fn add_member(&self, slug: &str, person: &Person, role: &str) {
        let role = fluxi_core::workspaces::Role::parse(role).expect("a role");
        fluxi_core::testing::add_member(&self.db.pool, slug, person.user.id, role).await;
    }

    pub async fn access(&self, slug: &str, person: &Person) -> fluxi_core::workspaces::WorkspaceAccess {
        let mut conn = self.db.conn().await;
        fluxi_core::workspaces::authorize(
            &mut conn,
            &fluxi_core::testing::audit(),
            person.user.id,
            fluxi_core::sessions::SignedInWith::PasswordOnly,
            slug,
        )
        .await
        .unwrap()
    }
}

/// The invitation token in a mail body.
pub fn token_from(body: &str) -> String {
    let start = body.find("/invite/").expect("invitation link in mail") + "/invite/".len();
    body[start..].chars().take_while(|c| c.is_ascii_hexdigit()).collect()
}

/// Waits (up to 10 s) for the `after`-th mail to `email` with `subject` — some are
/// queued after the answer — and returns its body.
pub async fn mailed_body(app: &TestApp, email: &str, subject: &str, after: usize) -> String {
    for _ in 0..500 {
        let mut conn = app.db.conn().await;
        let bodies: Vec<String> = outbox_emails::table
            .filter(outbox_emails::recipient.eq(email))
            .filter(outbox_emails::subject.eq(subject))
            .order(outbox_emails::created_at.asc())
            .select(outbox_emails::body)
            .load(&mut conn)
            .await
            .unwrap();
        if let Some(body) = bodies.into_iter().nth(after) {
            return body;
        }
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no mail \"{subject}\" to {email}");
}

/// The token of the link to `path` (like "/reset-password/") in the `after`-th mail to
/// `email` with `subject`.
pub async fn mailed_token(app: &TestApp, email: &str, subject: &str, path: &str, after: usize) -> String {
    let body = mailed_body(app, email, subject, after).await;
    let start = body.find(path).expect("link") + path.len();
    body[start..start + 64].to_string()
}

/// The token of the `after`-th link mailed to `email` to finish a sign-up.
pub async fn sign_up_token(app: &TestApp, email: &str, after: usize) -> String {
    mailed_token(app, email, "Finish creating your Fluxi account", "/confirm-sign-up/", after).await
}

/// Finishes the sign-up of `email` with the first link mailed to it, from `c`.
pub async fn finish_sign_up(app: &TestApp, c: &mut Client, email: &str, password: &str) -> Reply {
    let token = sign_up_token(app, email, 0).await;
    c.call("confirm_sign_up", &[("token", &token), ("password", password)]).await
}

/// The newest mail to `email` in the outbox.
pub async fn outbox_body_for(app: &TestApp, email: &str) -> String {
    let mut conn = app.db.conn().await;
    outbox_emails::table
        .filter(outbox_emails::recipient.eq(email))
        .order(outbox_emails::created_at.desc())
        .select(outbox_emails::body)
        .first(&mut conn)
        .await
        .unwrap()
}

/// The role of `user` in the workspace `slug`, if a member.
pub async fn role_of(app: &TestApp, slug: &str, user: uuid::Uuid) -> Option<String> {
    let mut conn = app.db.conn().await;
    memberships::table
        .inner_join(workspaces::table)
        .filter(workspaces::slug.eq(slug))
        .filter(memberships::user_id.eq(user))
        .select(memberships::role)
        .first(&mut conn)
        .await
        .optional()
        .unwrap()
}

/// The message of a "too many" error, `None` for any other error.
pub fn too_many_message(error: &AppError) -> Option<String> {
    match error {
        AppError::TooMany { message, .. } => Some(message.clone()),
        _ => None,
    }
}

/// Every stored audit event of `action`, by chain and position.
pub async fn recorded(app: &TestApp, action: fluxi_core::audit::Action) -> Vec<fluxi_core::audit::query::StoredEvent> {
    use diesel::SelectableHelper;
    use fluxi_core::audit::query::{audit_events, StoredEvent};
    let mut conn = app.db.conn().await;
    // What a reader of the trail sees: every committed event, chained.
    fluxi_core::audit::seal_all(&mut conn).await.unwrap();
    audit_events::table
        .filter(audit_events::action.eq(action.name()))
        .order((audit_events::chain_id, audit_events::seq))
        .select(StoredEvent::as_select())
        .load(&mut conn)
        .await
        .unwrap()
}

/// The built-in catalogue plus `local-idp` (`end2end/oauth-catalogue.toml`, as the
/// end-to-end server gets it), a provider at `oauth_url` with its test client configured.
pub fn test_catalogue(oauth_url: &str) -> fluxi_core::integrations::Catalogue {
    use fluxi_core::integrations::catalogue::{ClientCredentials, Transport, BUILT_IN};
    let local = include_str!("../../../end2end/oauth-catalogue.toml").replace("@OAUTH_URL@", oauth_url);
    fluxi_core::integrations::Catalogue::parse(&format!("{BUILT_IN}\n{local}"), Transport::AllowLoopbackHttp, |id| {
        (id.as_str() == "local-idp").then(|| ClientCredentials {
            client_id: "fluxi-test".into(),
            client_secret: zeroize::Zeroizing::new("fluxi-test-secret".into()),
        })
    })
    .unwrap()
}
