// A local OpenID provider for sessiongate's browser tests: oidc-provider
// (OpenID Certified) on a loopback port, configured from a JSON file named
// by the first argument:
//
//   {"port": 0, "issuer": "http://127.0.0.1:PORT",
//    "accessTokenTTL": 20,
//    "users": [{"username": "alice", "password": "…", "name": "…", "email": "…", "groups": ["…"]}],
//    "clients": [{"client_id": "…", "client_secret": "…" (absent: public, PKCE),
//                 "token_endpoint_auth_method": "…", "redirect_uris": [...],
//                 "post_logout_redirect_uris": [...], "backchannel_logout_uri": "…"}]}
//
// Redirect URIs on http://NAME.localhost match on any port (below).
//
// Besides the provider's own endpoints, test controls under /_test/:
//   GET  /_test/stats                    counts: logins, codes, refreshes, refresh errors
//   GET  /_test/tokens                   every token the token endpoint issued
//   POST /_test/ignore-prompt-login?on=1 drop prompt=login and max_age from
//                                        authorization requests (single sign-on
//                                        returns the old auth_time)
//   POST /_test/revoke?account=alice     revoke every grant of that account
//                                        (its refresh tokens then get invalid_grant)
// It prints "ready" on stdout once it listens, and stops on SIGTERM.
import { readFileSync } from 'node:fs';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = new Map(config.users.map((u) => [u.username, u]));
const stats = { logins: 0, codes: 0, refreshes: 0, refreshErrors: 0 };
const grantsByAccount = new Map();
const issued = []; // every token the token endpoint handed out
let ignorePromptLogin = false;

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const clients = config.clients.map((c) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  // Every ID token says when the user signed in (auth_time), as Keycloak's
  // do; oidc-provider otherwise sends it only when max_age was asked for.
  require_auth_time: true,
  token_endpoint_auth_method: c.client_secret ? 'client_secret_basic' : 'none',
  ...(c.backchannel_logout_uri ? { backchannel_logout_session_required: true } : {}),
  ...c,
}));

// A fresh signing key per run.
process.stderr.write('generating the signing key\n');
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig',
};

const provider = new Provider(config.issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'groups'],
    email: ['email', 'email_verified'],
  },
  // The relying party reads the identity from the ID token.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
  },
  ttl: {
    AccessToken: config.accessTokenTTL || 30,
    IdToken: 600,
    RefreshToken: 3600,
    Session: 3600,
    Grant: 3600,
    Interaction: 600,
  },
  // Refresh tokens for every client allowed the grant, offline_access or
  // not (the provider otherwise keeps offline_access only with
  // prompt=consent).
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const u = users.get(id);
    if (!u) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: u.name, email: u.email, email_verified: true, groups: u.groups || [] };
      },
    };
  },
  // Back-channel logout tokens go to the gate on loopback: the default
  // fetch refuses non-public addresses (SSRF guard).
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Provider error</title><h1>Provider error</h1><p id="error">${esc(out.error)}</p><p>${esc(out.error_description || '')}</p>`;
  },
});
provider.proxy = false;

// The tests' proxies listen on ports picked at run time: a registered
// http://NAME.localhost/… URI allows that host on any port (loopback only;
// never do this with a real provider).
const anyPort = (registered, value) => {
  let v;
  try { v = new URL(value); } catch { return false; }
  return registered.some((r) => {
    const u = new URL(r);
    return u.hostname.endsWith('.localhost') && u.protocol === v.protocol && u.hostname === v.hostname
      && u.pathname === v.pathname && v.search === '' && v.hash === '';
  });
};
const { redirectUriAllowed, postLogoutRedirectUriAllowed } = provider.Client.prototype;
provider.Client.prototype.redirectUriAllowed = function allowed(value) {
  return redirectUriAllowed.call(this, value) || anyPort(this.redirectUris, value);
};
provider.Client.prototype.postLogoutRedirectUriAllowed = function allowed(value) {
  return postLogoutRedirectUriAllowed.call(this, value) || anyPort(this.postLogoutRedirectUris || [], value);
};

provider.on('grant.success', (ctx) => {
  const gt = ctx.oidc.params?.grant_type;
  for (const kind of ['access_token', 'refresh_token', 'id_token']) {
    if (ctx.body?.[kind] && issued.length < 1000) issued.push(ctx.body[kind]);
  }
  if (gt === 'refresh_token') stats.refreshes += 1;
  if (gt === 'authorization_code') stats.codes += 1;
});
provider.on('server_error', (ctx, err) => {
  process.stderr.write(`server_error ${ctx.method} ${ctx.path}: ${err && err.stack}\n`);
});
provider.on('grant.error', (ctx) => {
  if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refreshErrors += 1;
});

function loginPage(uid, params, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Sign in</title></head><body>
<h1>Sign in</h1>
<p>to ${esc(params.client_id)}</p>
${error ? `<p id="error">${esc(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label>Username <input id="username" name="username" required></label>
<label>Password <input id="password" name="password" type="password" required></label>
<button id="submit" type="submit">Sign in</button>
</form>
<p><a id="cancel" href="/interaction/${esc(uid)}/abort">Cancel</a></p>
</body></html>`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 8192) throw new Error('form too large');
    chunks.push(c);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// First-party clients: consent is given on the user's behalf.
async function grantConsent(details) {
  const { prompt: { details: missing }, params, session: { accountId } } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  const grantId = await grant.save();
  if (!grantsByAccount.has(accountId)) grantsByAccount.set(accountId, new Set());
  grantsByAccount.get(accountId).add(grantId);
  return grantId;
}

provider.use(async (ctx, next) => {
  const path = ctx.path;
  if (path === '/_test/stats') {
    ctx.body = stats;
    return;
  }
  if (path === '/_test/tokens') {
    ctx.body = issued;
    return;
  }
  if (path === '/_test/ignore-prompt-login' && ctx.method === 'POST') {
    ignorePromptLogin = ctx.query.on === '1';
    ctx.body = { ignorePromptLogin };
    return;
  }
  if (path === '/_test/revoke' && ctx.method === 'POST') {
    const ids = [...(grantsByAccount.get(ctx.query.account) || [])];
    for (const id of ids) {
      await Promise.all([provider.AccessToken.revokeByGrantId(id), provider.RefreshToken.revokeByGrantId(id)]);
      await provider.Grant.adapter.destroy(id);
    }
    grantsByAccount.delete(ctx.query.account);
    ctx.body = { revoked: ids.length };
    return;
  }
  if (path === '/auth' && ignorePromptLogin) {
    const q = new URLSearchParams(ctx.querystring);
    q.delete('prompt');
    q.delete('max_age');
    ctx.querystring = q.toString();
  }
  const m = path.match(/^\/interaction\/([^/]+)(\/login|\/abort)?$/);
  if (!m) {
    await next();
    return;
  }
  ctx.set('cache-control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (m[2] === '/abort') {
    await provider.interactionFinished(ctx.req, ctx.res,
      { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
    return;
  }
  if (m[2] === '/login' && ctx.method === 'POST') {
    const form = await readForm(ctx.req);
    const u = users.get(form.get('username') || '');
    if (!u || u.password !== form.get('password')) {
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, details.params, 'Wrong username or password.');
      return;
    }
    stats.logins += 1;
    await provider.interactionFinished(ctx.req, ctx.res,
      { login: { accountId: u.username } }, { mergeWithLastSubmission: false });
    return;
  }
  if (details.prompt.name === 'login') {
    ctx.type = 'html';
    ctx.body = loginPage(details.uid, details.params);
    return;
  }
  if (details.prompt.name === 'consent') {
    const grantId = await grantConsent(details);
    await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  ctx.status = 400;
  ctx.body = `unexpected prompt ${details.prompt.name}`;
});

process.stderr.write(`listening on 127.0.0.1:${config.port}\n`);
const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
