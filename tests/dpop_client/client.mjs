// oauth4webapi as a DPoP client (RFC 9449), driven by tests/test_dpop.py: discovery, the
// code exchange with a DPoP proof, MCP requests with `Authorization: DPoP` and proofs,
// a refresh with a proof of the same key, and requests with the refreshed token.
// The person's login and consent happened before (the test's browser): the callback URL
// comes in. Prints one JSON line with what each step gave.
//
//   node client.mjs '{"issuer": …, "client_id": …, "callback": …, "state": …,
//                     "verifier": …, "redirect_uri": …, "urls": [...], "alg": "ES256"}'
// MCP_OAUTH_TEST_HOST=name resolves that name to 127.0.0.1 (the TLS proxy's test name).
import dns from "node:dns";
import * as oauth from "oauth4webapi";

const testHost = process.env.MCP_OAUTH_TEST_HOST;
if (testHost) {
  const lookup = dns.lookup;
  dns.lookup = (host, options, callback) => {
    if (typeof options === "function") [callback, options] = [options, {}];
    return lookup(host === testHost ? "127.0.0.1" : host, options, callback);
  };
}

const input = JSON.parse(process.argv[2]);
const issuer = new URL(input.issuer);
const insecure = issuer.protocol === "http:" ? { [oauth.allowInsecureRequests]: true } : {};

const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: "oauth2", ...insecure }));
const client = { client_id: input.client_id };
const keyPair = await oauth.generateKeyPair(input.alg, { extractable: true });
const DPoP = oauth.DPoP(client, keyPair);

async function call(token) {
  const answers = [];
  for (const url of input.urls) {
    try {
      const response = await oauth.protectedResourceRequest(
        token, "POST", new URL(url), new Headers({ "content-type": "application/json" }), "{}",
        { DPoP, ...insecure },
      );
      answers.push({ status: response.status, body: await response.json() });
    } catch (error) {
      answers.push({ status: error.status ?? 0, error: String(error), challenge: error.response?.headers.get("www-authenticate") });
    }
  }
  return answers;
}

const params = oauth.validateAuthResponse(as, client, new URL(input.callback), input.state);
const exchanged = await oauth.processAuthorizationCodeResponse(
  as, client,
  await oauth.authorizationCodeGrantRequest(
    as, client, oauth.None(), params, input.redirect_uri, input.verifier, { DPoP, ...insecure },
  ),
);
const first = await call(exchanged.access_token);
const refreshed = await oauth.processRefreshTokenResponse(
  as, client,
  await oauth.refreshTokenGrantRequest(as, client, oauth.None(), exchanged.refresh_token, { DPoP, ...insecure }),
);
const second = await call(refreshed.access_token);

console.log(JSON.stringify({
  metadata_algs: as.dpop_signing_alg_values_supported,
  jwk: await crypto.subtle.exportKey("jwk", keyPair.publicKey),
  exchanged: { token_type: exchanged.token_type, access_token: exchanged.access_token },
  refreshed: { token_type: refreshed.token_type, access_token: refreshed.access_token },
  first,
  second,
}));
