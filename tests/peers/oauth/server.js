// A real OAuth 2.0 authorization server for Strongroom's tests: npm's oidc-provider, unchanged, on loopback.
//
// - Clients `app` (client_secret_basic) and `post` (client_secret_post) may use the authorization-code and
//   refresh-token grants; `brief` (client_secret_basic) gets access tokens that live BRIEF_TTL seconds, shorter
//   than Strongroom's refresh margin, so every use of one of its credentials refreshes.
// - Refresh tokens rotate on every use; a used one is refused (and, as oidc-provider does, revokes its grant).
// - The interaction (login and consent) completes itself for the account `tester`, so a script can run the real
//   authorization-code flow with plain HTTP redirects and get a refresh token.
// - GET /test/counts answers how many refresh-token grants succeeded and failed, per client: the tests count
//   refreshes here, at the provider.
//
// Usage: node server.js PORT SECRET_APP SECRET_POST SECRET_BRIEF   (prints "listening" once it accepts requests)
import Provider from 'oidc-provider';

const [port, secretApp, secretPost, secretBrief] = process.argv.slice(2);
const BRIEF_TTL = 5;
const issuer = `http://127.0.0.1:${port}`;
const redirect = 'http://127.0.0.1/callback';
const client = (id, secret, method) => ({
  client_id: id,
  client_secret: secret,
  redirect_uris: [redirect],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: method,
});

const provider = new Provider(issuer, {
  clients: [
    client('app', secretApp, 'client_secret_basic'),
    client('post', secretPost, 'client_secret_post'),
    client('brief', secretBrief, 'client_secret_basic'),
  ],
  features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: (ctx, token, c) => (c && c.clientId === 'brief' ? BRIEF_TTL : 600),
    AuthorizationCode: 60,
    Grant: 86400,
    IdToken: 600,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 86400,
  },
  cookies: { keys: ['strongroom-test-peer'] },
});
provider.proxy = false;

const counts = {};
const count = (ctx, outcome) => {
  if (ctx.oidc && ctx.oidc.params && ctx.oidc.params.grant_type === 'refresh_token') {
    const id = (ctx.oidc.client && ctx.oidc.client.clientId) || 'unknown';
    counts[id] ||= { success: 0, error: 0 };
    counts[id][outcome] += 1;
  }
};
provider.on('grant.success', (ctx) => count(ctx, 'success'));
provider.on('grant.error', (ctx) => count(ctx, 'error'));

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/test/counts') {
    ctx.body = counts;
    return;
  }
  const match = ctx.method === 'GET' && ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!match) {
    await next();
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === 'login') {
    result = { login: { accountId: 'tester' } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    result = { consent: { grantId: await grant.save() } };
  }
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true }));
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log('listening');
});
