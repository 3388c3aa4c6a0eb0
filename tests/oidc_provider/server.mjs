// An OpenID provider on loopback for the single sign-on tests: the certified `oidc-provider`
// package with its own development login and consent pages, one static client and a few
// accounts. Test-only: it keeps everything in memory and accepts any password.
//
//   node server.mjs    (settings from the environment, below)
//
// OIDC_TEST_PORT          port on 127.0.0.1 (0: a free one)
// OIDC_TEST_CLIENT_ID     the static client's id and secret
// OIDC_TEST_CLIENT_SECRET
// OIDC_TEST_REDIRECT_URI  the client's redirect URI (the app's /oidc/callback/)
// OIDC_TEST_LOGOUT_URI    the client's post-logout redirect URI
// OIDC_TEST_ADMIN_TOKEN   the bearer token of the test-only admin endpoint
//
// Prints "oidc-provider listening on http://127.0.0.1:<port>" once it answers.
//
// The admin endpoint (POST /test-admin/<action>, JSON body, Authorization: Bearer <token>):
//   accounts/<id>  {"groups": [...], "email": ..., "preferred_username": ..., "disabled": bool}
//                  changes (or creates) an account; a disabled account cannot sign in, and
//                  a silent re-check (prompt=none) of its session answers login_required
//   id-token-ttl   {"seconds": n} the lifetime of ID tokens issued from now on
import { timingSafeEqual } from 'node:crypto';

import Provider, { interactionPolicy } from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
};

const port = Number(process.env.OIDC_TEST_PORT || 0);
const adminToken = Buffer.from(env('OIDC_TEST_ADMIN_TOKEN'));

const accounts = new Map(
  [
    ['sub-alice', { preferred_username: 'alice', email: 'alice@example.test', given_name: 'Alice', family_name: 'Liddell', groups: ['researchers', 'staff-chat'] }],
    ['sub-bob', { preferred_username: 'bob', email: 'bob@example.test', given_name: 'Bob', family_name: 'Builder', groups: ['builders'] }],
    ['sub-carol', { preferred_username: 'carol', email: 'carol@example.test', given_name: 'Carol', family_name: 'Danvers', groups: [] }],
  ].map(([id, claims]) => [id, { ...claims, disabled: false }]),
);
let idTokenTtlSeconds = 3600;

async function findAccount(ctx, id) {
  const account = accounts.get(id);
  if (!account || account.disabled) {
    return undefined;
  }
  return {
    accountId: id,
    async claims() {
      const { disabled, ...claims } = account;
      return { sub: id, email_verified: true, ...claims };
    },
  };
}

// The login prompt asks again when the session's account was disabled since it signed in:
// with prompt=none that is the error login_required.
const policy = interactionPolicy.base();
policy.get('login').checks.add(
  new interactionPolicy.Check('account_disabled', 'the account is disabled', (ctx) => {
    const { accountId } = ctx.oidc.session;
    const account = accountId && accounts.get(accountId);
    return accountId && (!account || account.disabled)
      ? interactionPolicy.Check.REQUEST_PROMPT
      : interactionPolicy.Check.NO_NEED_TO_PROMPT;
  }),
);

const configuration = {
  clients: [
    {
      client_id: env('OIDC_TEST_CLIENT_ID'),
      client_secret: env('OIDC_TEST_CLIENT_SECRET'),
      redirect_uris: [env('OIDC_TEST_REDIRECT_URI')],
      post_logout_redirect_uris: [env('OIDC_TEST_LOGOUT_URI')],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  findAccount,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'given_name', 'family_name', 'name'],
    groups: ['groups', 'roles'],
  },
  interactions: { policy },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: {
    IdToken: () => idTokenTtlSeconds,
    Session: 3600,
    Interaction: 600,
    Grant: 3600,
    AccessToken: 3600,
    AuthorizationCode: 60,
  },
  cookies: { keys: ['test-only-cookie-key'] },
};

function authorised(req) {
  const given = Buffer.from((req.headers.authorization || '').replace(/^Bearer /, ''));
  return given.length === adminToken.length && timingSafeEqual(given, adminToken);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString() || '{}');
}

async function admin(req, res) {
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.method !== 'POST') return reply(405, { error: 'POST only' });
  if (!authorised(req)) return reply(403, { error: 'forbidden' });
  const body = await readJson(req);
  const path = new URL(req.url, 'http://127.0.0.1').pathname.replace('/test-admin/', '');
  if (path === 'id-token-ttl') {
    idTokenTtlSeconds = Number(body.seconds);
    return reply(200, { seconds: idTokenTtlSeconds });
  }
  if (path.startsWith('accounts/')) {
    const id = decodeURIComponent(path.slice('accounts/'.length));
    const account = { ...(accounts.get(id) || { groups: [], disabled: false }), ...body };
    accounts.set(id, account);
    return reply(200, { sub: id, ...account });
  }
  return reply(404, { error: 'no such action' });
}

const server = (await import('node:http')).createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/test-admin/')) {
      admin(req, res).catch((error) => {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: String(error) }));
      });
      return;
    }
    callback(req, res);
  });
  console.log(`oidc-provider listening on ${issuer}`);
});
