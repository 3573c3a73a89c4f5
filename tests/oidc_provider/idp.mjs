// node-oidc-provider as the upstream identity provider of tests/test_oidc_provider.py.
//
//   node idp.mjs PORT ISSUER_PATH CLIENT_ID CLIENT_SECRET REDIRECT_URI CLAIMS_JSON [userinfo]
//
// ISSUER_PATH is "" (Google: discovery at the root) or "/<tenant>/v2.0" (Entra ID: the
// provider mounted under it). CLAIMS_JSON are the claims of every account besides
// `sub` (the login typed at the provider's own login page). Claims go into the ID
// token, as Google and Entra ID put them there; with `userinfo`, the scopes' claims
// are only at the userinfo endpoint (as Authelia and Zitadel do by default). PKCE is
// required of every client. The `groups` scope has the `groups` claim.
import http from 'node:http';
import Provider from 'oidc-provider';

const [port, issuerPath, clientId, clientSecret, redirectUri, claimsJson, where] = process.argv.slice(2);
const extraClaims = JSON.parse(claimsJson);
const issuer = `http://127.0.0.1:${port}${issuerPath}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: {
    openid: ['sub', 'tid', 'oid'],
    email: ['email', 'email_verified', 'hd'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  conformIdTokenClaims: where === 'userinfo',
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, ...extraClaims }; } };
  },
});
provider.on('server_error', (ctx, error) => console.error('server_error', error));

const callback = provider.callback();
http.createServer((req, res) => {
  if (!req.url.startsWith(issuerPath + '/') && req.url !== issuerPath) {
    res.writeHead(404).end();
    return;
  }
  req.originalUrl = req.url; // the mount path is what originalUrl has beyond url
  req.url = req.url.slice(issuerPath.length) || '/';
  callback(req, res);
}).listen(Number(port), '127.0.0.1', () => console.log(`listening ${issuer}`));
