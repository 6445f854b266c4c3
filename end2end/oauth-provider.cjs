// A local OAuth 2.0 / OpenID Connect authorization server for tests: the real, certified
// `oidc-provider` package (in-memory storage, dev login/consent pages), plus a small
// test-control API.
//   node end2end/oauth-provider.cjs PORT        -> issuer http://127.0.0.1:PORT
// Env: OAUTH_TEST_CLIENT_ID (fluxi-test), OAUTH_TEST_CLIENT_SECRET (fluxi-test-secret),
//   OAUTH_TEST_REDIRECT_URIS (comma separated; default http://localhost/integrations/callback,
//   http://127.0.0.1/integrations/callback), OAUTH_TEST_ACCESS_TTL (seconds, default 3600).
// The client is a "native" client, so for http://localhost and http://127.0.0.1 redirect URIs
// ANY port matches (RFC 8252 loopback rule); path and query must match exactly.
// Endpoints (also in /.well-known/openid-configuration): GET /auth, POST /token,
//   GET|POST /me (userinfo), POST /token/revocation (RFC 7009), POST /token/introspection
//   (RFC 7662), GET /jwks. Client auth: HTTP Basic (client_secret_basic) or client_id +
//   client_secret form fields (client_secret_post). PKCE S256 is required on every request.
// Scopes: openid profile email offline_access notes:read notes:write (unknown ones are dropped
//   silently; offline_access is dropped unless prompt=consent). A refresh token is issued on
//   every authorization_code grant (offline_access / prompt=consent not needed) and
//   rotated on every use: the old one then answers invalid_grant AND presenting it revokes the
//   whole grant (reuse detection). Revoking either token (RFC 7009) revokes the whole grant.
//
// Non-browser sign-in (e.g. reqwest with a cookie store and redirects DISABLED; a Location
// may be relative, resolve it against the issuer). A fresh cookie jar per sign-in is simplest.
//  1. GET /auth?response_type=code&client_id=ID&redirect_uri=URI&scope=openid%20email%20notes:read
//       &state=S&code_challenge=BASE64URL(SHA256(verifier))&code_challenge_method=S256
//     -> 303, Location: /interaction/UID1 (relative); Set-Cookie `_interaction` (+ `.sig`,
//        Path=/interaction/UID1) and `_interaction_resume` (+ `.sig`, Path=/auth/UID1).
//     Bad client_id / unregistered redirect_uri -> 400 HTML page (error JSON inside <pre>);
//     other errors (e.g. no PKCE) -> 303 to URI?error=invalid_request&error_description=..&state=S&iss=..
//  2. (optional) GET /interaction/UID1 with cookies -> 200 HTML login form, fields prompt, login,
//     password, posted back to /interaction/UID1.
//  3. POST /interaction/UID1 with cookies, form-urlencoded `prompt=login&login=alice&password=x`
//     (any non-empty login; the password is ignored) -> 303, Location: http://127.0.0.1:PORT/auth/UID1
//  4. GET /auth/UID1 with cookies -> 303, Location: /interaction/UID2 (a NEW uid); sets new
//     `_interaction*` cookies for UID2 and the `_session` (+ `.sig`, Path=/) cookie.
//  5. (optional) GET /interaction/UID2 -> 200 HTML consent page (hidden field prompt=consent).
//     POST /interaction/UID2 with cookies, form `prompt=consent` -> 303, Location: .../auth/UID2
//  6. GET /auth/UID2 with cookies -> 303, Location: URI?code=CODE&state=S&iss=http%3A%2F%2F127.0.0.1%3APORT
//     Consent (steps 5-6) is asked on EVERY authorization (native client). If the `_session`
//     cookie is sent in step 1, login is skipped: step 1 redirects straight to the consent page.
//  7. POST /token, no cookies, `Authorization: Basic base64(ID:SECRET)`, form
//       grant_type=authorization_code&code=CODE&redirect_uri=URI&code_verifier=VERIFIER
//     -> 200 {access_token, expires_in, refresh_token, scope, token_type: "Bearer",
//        id_token (only when scope has openid)}. Codes live 60 s and are single-use.
//  8. POST /token, form grant_type=refresh_token&refresh_token=RT -> 200, same shape, NEW
//     refresh_token (keep the old scope; an optional `scope` may only narrow it).
// Token endpoint errors: wrong secret / unknown client -> 401 {"error":"invalid_client"}; unknown
// or expired code, wrong verifier or redirect_uri, used/revoked refresh token -> 400
// {"error":"invalid_grant"}. Redeeming a code twice also revokes the tokens issued for it.
// Expiry is exact (clockTolerance 0): an expired access token gets 401 at /me and
// {"active": false} from introspection.
// Userinfo: GET /me with `Authorization: Bearer AT` (without scope openid: 403
//   insufficient_scope) ->
//   {sub, email, email_verified, name} (email/name need scopes email/profile); login ALICE ->
//   sub "ALICE", email "ALICE@example.test".
// Test control (plain JSON, not OAuth):
//   GET  /__test/stats  -> {"authorization_code": n, "refresh_token": n, "revocation": n}
//        (successful token grants by grant type; 200 answers of the revocation endpoint,
//        which per RFC 7009 include unknown tokens)
//   POST /__test/outage {"down": true|false} -> while down, /token, /token/revocation,
//        /token/introspection and /me answer 503 {"error":"temporarily_unavailable"}
//   POST /__test/reset  -> zeroes the counters (and ends the outage)
const crypto = require('crypto');

const port = Number(process.argv[2] || 4455);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OAUTH_TEST_CLIENT_ID || 'fluxi-test';
const clientSecret = process.env.OAUTH_TEST_CLIENT_SECRET || 'fluxi-test-secret';
const redirectUris = (
  process.env.OAUTH_TEST_REDIRECT_URIS
  || 'http://localhost/integrations/callback,http://127.0.0.1/integrations/callback'
).split(',').map((s) => s.trim()).filter(Boolean);
const accessTtl = Number(process.env.OAUTH_TEST_ACCESS_TTL || 3600);

const OUTAGE_PATHS = new Set(['/token', '/token/revocation', '/token/introspection', '/me']);
let stats;
let down = false;
const resetStats = () => (stats = { authorization_code: 0, refresh_token: 0, revocation: 0 });
resetStats();

// oidc-provider prints one-off "you SHOULD change this default" notices meant for production
// setups; drop those lines only (errors still go to stderr, see server_error below).
for (const level of ['info', 'warn']) {
  const original = console[level];
  console[level] = (first, ...rest) => {
    if (typeof first === 'string' && /^(\x1b\[[\d;]*m)?oidc-provider (NOTICE|WARNING)/.test(first)) return;
    original(first, ...rest);
  };
}

async function readJson(req) {
  let data = '';
  for await (const chunk of req) data += chunk;
  return data ? JSON.parse(data) : {};
}

async function main() {
  const { default: Provider } = await import('oidc-provider');
  const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      application_type: 'native', // loopback redirect URIs match on any port
      token_endpoint_auth_method: 'client_secret_basic', // client_secret_post is accepted too
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: redirectUris,
    }, {
      // Another application registered with the same redirect URIs: a code issued to it
      // must be refused when Fluxi's client redeems it.
      client_id: 'another-app',
      client_secret: 'another-app-secret',
      application_type: 'native',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: redirectUris,
    }],
    responseTypes: ['code'],
    clockTolerance: 0, // expired tokens are refused at once (default tolerance: 15 s)
    jwks: { keys: [{ ...signingKey.export({ format: 'jwk' }), use: 'sig', kid: 'test' }] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    scopes: ['openid', 'profile', 'email', 'offline_access', 'notes:read', 'notes:write'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: `${id}@example.test`, email_verified: true, name: `Test User ${id}` };
        },
      };
    },
    pkce: { required: () => true },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    rotateRefreshToken: true,
    ttl: {
      AccessToken: () => accessTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><title>error</title><pre>${JSON.stringify(out, null, 2).replace(/</g, '&lt;')}</pre>`;
    },
  });

  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type;
    if (type in stats) stats[type] += 1;
  });
  provider.on('server_error', (ctx, err) => console.error('oauth provider: server_error', err));

  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/__test/')) {
      const route = `${ctx.method} ${ctx.path}`;
      if (route === 'GET /__test/stats') {
        ctx.body = stats;
      } else if (route === 'POST /__test/outage') {
        down = Boolean((await readJson(ctx.req)).down);
        ctx.body = { down };
      } else if (route === 'POST /__test/reset') {
        resetStats();
        down = false;
        ctx.body = stats;
      } else {
        ctx.status = 404;
        ctx.body = { error: 'not_found' };
      }
      return;
    }
    if (down && OUTAGE_PATHS.has(ctx.path)) {
      ctx.status = 503;
      ctx.body = { error: 'temporarily_unavailable', error_description: 'test outage' };
      return;
    }
    await next();
    if (ctx.path === '/token/revocation' && ctx.method === 'POST' && ctx.status === 200) {
      stats.revocation += 1;
    }
  });

  provider.listen(port, '127.0.0.1', () => console.log(`oauth provider: ${issuer} (client ${clientId})`));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
