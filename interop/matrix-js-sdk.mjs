// A Matrix client written with matrix-js-sdk, the library Element Web uses
// and nobody on the devicegrant team wrote, against a homeserver that
// delegates its auth to devicegrantd (the Go test runs fakesynapse in
// front of us, as Synapse with matrix_authentication_service). Everything
// OAuth goes through the SDK's own API (src/oauth in v43):
//
//  1. discovery: AutoDiscovery.fromDiscoveryConfig checks the homeserver,
//     then MatrixClient.getAuthMetadata fetches /_matrix/client/v1/auth_metadata
//     and validates it (isValidAuthMetadata);
//  2. OAuth2.registerClient registers a public web client (RFC 7591);
//  3. authorization code grant with PKCE S256: the Go test opens the URL the
//     SDK made on a phone, signs in, approves and hands back code and state;
//     OAuth2.completeAuthorizationCodeGrant exchanges them;
//  4. a MatrixClient with those tokens calls whoami; once the access token
//     has expired the homeserver answers M_UNKNOWN_TOKEN and the SDK's
//     token manager refreshes (TokenRefresher) and retries;
//  5. a second MatrixClient holding the rotated-out tokens, as a thief
//     would, tries the same: the SDK must take our answer as a logout;
//  6. the device authorization grant (OAuth2.startDeviceAuthorizationGrant,
//     waitForDeviceAuthorizationGrant), then MatrixClient.logout, which
//     revokes both tokens (RFC 7009); then a device the person denies.
//
// Usage: node matrix-js-sdk.mjs HOMESERVER_URL ISSUER
// It prints one JSON line per step on stdout and reads the Go side's
// answers as JSON lines on stdin (after "authorize" and "refreshed"); it
// approves "device" and denies "device_to_deny" on a phone.
//
// No browser polyfills: v43 dropped oidc-client-ts (which wanted window,
// sessionStorage and localStorage); the SDK's OAuth code needs only
// fetch, crypto.getRandomValues and crypto.subtle.digest, which Node ≥ 20
// has as globals. Should a later SDK need more, it fails in step 1 with a
// ReferenceError naming the global.
import * as readline from 'node:readline';
import * as sdk from 'matrix-js-sdk';

const [homeserver, issuer] = process.argv.slice(2);
const say = (step, data) => process.stdout.write(JSON.stringify({ step, ...data }) + '\n');
// The SDK logs with loglevel, whose debug and info go to console.log,
// that is to stdout: keep stdout for the JSON lines.
console.log = console.info = console.debug = console.trace = (...args) => console.error(...args);

const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function answer() {
  const { value, done } = await input.next();
  if (done) throw new Error('the Go side closed stdin');
  return JSON.parse(value);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// JSON with object keys sorted, to compare documents whatever their order.
const canonical = (v) => JSON.stringify(v, (_, x) =>
  x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort()) : x);

// What Element Web registers: a web client whose client_uri is the
// project's site and whose redirect URI is the app itself, on a subdomain
// of it (https://element.io/, https://app.element.io/), with its logo,
// terms and policy on the site.
const siteURL = 'https://interop.example.org/';
const appURL = 'https://app.interop.example.org/';

try {
  // 1. Discovery, as Element does it from a homeserver URL.
  const discovered = await sdk.AutoDiscovery.fromDiscoveryConfig({ 'm.homeserver': { base_url: homeserver } });
  const hs = discovered['m.homeserver'];
  if (hs.state !== sdk.AutoDiscovery.SUCCESS) throw new Error(`homeserver discovery: ${JSON.stringify(hs)}`);
  const anonymous = sdk.createClient({ baseUrl: hs.base_url });
  const metadata = await anonymous.getAuthMetadata(); // throws OAuth2Error.OpSupport unless valid
  // The same document from our own auth_metadata path, which a reverse
  // proxy on the homeserver's domain may route to us instead.
  const direct = await sdk.createClient({ baseUrl: issuer.replace(/\/$/, '') }).getAuthMetadata();
  say('discovered', {
    issuer: metadata.issuer,
    same_direct: canonical(direct) === canonical(metadata),
    device_authorization_endpoint: metadata.device_authorization_endpoint ?? null,
    account_management_uri: metadata.account_management_uri ?? null,
  });

  // 2. Registration with the SDK's defaults: a public client
  // (token_endpoint_auth_method none), response_types [code], and every
  // grant it can use that we advertise, the device grant included.
  const clientId = await sdk.OAuth2.registerClient(metadata, {
    client_name: 'matrix-js-sdk interop',
    client_uri: siteURL,
    logo_uri: `${siteURL}logo.png`,
    tos_uri: `${siteURL}terms`,
    policy_uri: `${siteURL}privacy`,
    application_type: 'web',
    redirect_uris: [appURL],
  });
  say('registered', { client_id: clientId });

  // 3. Authorization code grant. The SDK makes the device id, the scope
  // (api and device), the PKCE verifier and the S256 challenge; the
  // response mode is its default, fragment.
  const oauth = new sdk.OAuth2(metadata, { clientId });
  const deviceId = oauth.context.deviceId;
  const state = crypto.randomUUID();
  const url = await oauth.generateAuthorizationCodeGrantUrl(state, appURL);
  say('authorize', { url, device_id: deviceId, redirect_uri: appURL });
  const back = await answer();
  if (back.state !== state) throw new Error(`state: sent ${state}, got back ${back.state}`);
  const tokens = await oauth.completeAuthorizationCodeGrant(back.code, appURL);
  say('tokens', {
    access_token: tokens.access_token,
    token_type: tokens.token_type,
    expires_in: tokens.expires_in,
    has_refresh_token: typeof tokens.refresh_token === 'string',
    scope: tokens.scope,
  });

  // 4. A logged-in client, as Element builds it after the code exchange.
  const refreshes = [];
  const session = {
    baseUrl: hs.base_url,
    deviceId,
    oauthClientId: clientId,
  };
  const mx = sdk.createClient({
    ...session,
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    onTokenRefresh: (t) => { refreshes.push(t); },
  });
  const me = await mx.whoami();
  say('whoami', { user_id: me.user_id, device_id: me.device_id, refreshes: refreshes.length });

  // Let the access token expire: the homeserver then answers
  // M_UNKNOWN_TOKEN and the SDK refreshes and retries on its own.
  await sleep((tokens.expires_in + 1) * 1000);
  const again = await mx.whoami();
  const latest = refreshes.at(-1);
  say('refreshed', {
    user_id: again.user_id,
    device_id: again.device_id,
    refreshes: refreshes.length,
    access_token: latest?.accessToken,
    rotated: latest !== undefined && latest.refreshToken !== tokens.refresh_token,
  });
  await answer();

  // 5. Someone else holding the rotated-out pair (say, a copy of the
  // browser's storage) meets the expired access token and refreshes with
  // the old refresh token after the new pair was used.
  let loggedOut = null;
  const thief = sdk.createClient({ ...session, accessToken: tokens.access_token, refreshToken: tokens.refresh_token });
  thief.on(sdk.HttpApiEvent.SessionLoggedOut, (err) => { loggedOut = err.errcode; });
  try {
    await thief.whoami();
    say('reuse', { refused: false });
  } catch (err) {
    say('reuse', { refused: true, errcode: err.errcode ?? null, error: String(err), logged_out: loggedOut });
  }

  // 6. Device authorization grant with the same client, for a second
  // device, then a logout.
  const tv = new sdk.OAuth2(metadata, { clientId });
  const da = await tv.startDeviceAuthorizationGrant();
  say('device', {
    device_id: tv.context.deviceId,
    user_code: da.user_code,
    verification_uri_complete: da.verification_uri_complete ?? null,
    interval: da.interval ?? null,
  });
  const dt = await tv.waitForDeviceAuthorizationGrant(da);
  if (!('access_token' in dt)) throw new Error(`device grant: ${JSON.stringify(dt)}`);
  const mx2 = sdk.createClient({
    baseUrl: hs.base_url,
    deviceId: tv.context.deviceId,
    oauthClientId: clientId,
    accessToken: dt.access_token,
    refreshToken: dt.refresh_token,
  });
  const me2 = await mx2.whoami();
  say('device_tokens', { access_token: dt.access_token, user_id: me2.user_id, device_id: me2.device_id });
  await mx2.logout(true);
  say('logged_out', {});

  // A third device the person refuses: the SDK's poll must end with
  // access_denied rather than wait for the code to expire.
  const refused = new sdk.OAuth2(metadata, { clientId });
  const rda = await refused.startDeviceAuthorizationGrant();
  say('device_to_deny', { verification_uri_complete: rda.verification_uri_complete ?? null });
  const rdt = await refused.waitForDeviceAuthorizationGrant(rda);
  say('denied', { error: rdt.error ?? null, has_token: 'access_token' in rdt });
} catch (err) {
  say('error', { error: String(err), name: err?.name, cause: err?.cause ? String(err.cause) : undefined, stack: err?.stack });
  process.exitCode = 1;
} finally {
  process.stdin.destroy();
}
