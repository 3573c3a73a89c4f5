// The official MCP TypeScript SDK client against our server: discover, register, log in
// (the person is played with fetch and a cookie), call two tools.
// node client.mjs MCP_URL USERNAME PASSWORD  -> prints one JSON line
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const [serverUrl, username, password] = process.argv.slice(2);
const REDIRECT = "http://localhost:8090/callback";

class Provider {
  get redirectUrl() { return REDIRECT; }
  get clientMetadata() {
    return { client_name: "TS SDK test", redirect_uris: [REDIRECT], grant_types: ["authorization_code", "refresh_token"],
             response_types: ["code"], token_endpoint_auth_method: "none" };
  }
  clientInformation() { return this.info; }
  saveClientInformation(info) { this.info = info; }
  tokens() { return this.tok; }
  saveTokens(t) { this.tok = t; }
  redirectToAuthorization(url) { this.authUrl = url; }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
}

let cookie = "";
async function go(url, init = {}) {
  const res = await fetch(url, { ...init, redirect: "manual", headers: { ...(init.headers || {}), cookie } });
  for (const c of res.headers.getSetCookie()) cookie = c.split(";")[0];
  return res;
}
const csrf = (html) => html.match(/name="csrf_token" value="([^"]+)"/)[1];

async function personApproves(authUrl) {
  let res = await go(authUrl.toString());
  let loc = new URL(res.headers.get("location"), authUrl);
  const requestId = loc.searchParams.get("request_id");
  const login = await (await go(loc)).text();
  res = await go(new URL("/login", loc), { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrf_token: csrf(login), username, password, request_id: requestId }) });
  loc = new URL(res.headers.get("location"), loc);
  const consent = await (await go(loc)).text();
  res = await go(new URL("/consent", loc), { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrf_token: csrf(consent), request_id: requestId, decision: "approve",
      shown: consent.match(/name="shown" value="([^"]+)"/)[1] }) });
  const back = new URL(res.headers.get("location"));
  return back.searchParams.get("code");
}

const provider = new Provider();
async function connect() {
  const client = new Client({ name: "ts-sdk-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
  try {
    await client.connect(transport);
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    const code = await personApproves(provider.authUrl);
    await transport.finishAuth(code);
    return connect();
  }
  return client;
}
const client = await connect();
const result = await client.callTool({ name: "add", arguments: { a: 2, b: 40 } });
const who = await client.callTool({ name: "whoami", arguments: {} });
console.log(JSON.stringify({ add: result.content[0].text, who: JSON.parse(who.content[0].text), registered: provider.info.client_id }));
await client.close();
