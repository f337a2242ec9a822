// A confidential device client written with openid-client (panva), a
// library nobody on the devicegrant team wrote. It registers itself
// (RFC 7591), runs the device grant (RFC 8628) with openid, refreshes,
// introspects (RFC 7662) and revokes (RFC 7009), authenticating with
// client_secret_basic, which openid-client form-encodes before Base64
// (RFC 6749 §2.3.1: "_" becomes "%5F").
//
// Usage: node openid-client.mjs ISSUER DEVICE_ID
// It prints one JSON line per step; after the "device" line the Go test
// approves the code on a phone.
import * as client from 'openid-client';

const [issuer, deviceID] = process.argv.slice(2);
const say = (step, data) => process.stdout.write(JSON.stringify({ step, ...data }) + '\n');

try {
  const insecure = { execute: [client.allowInsecureRequests] }; // loopback http in tests
  // ClientSecretBasic explicitly: by default openid-client sends
  // client_secret_post whatever was registered (the server takes both).
  const config = await client.dynamicClientRegistration(new URL(issuer), {
    client_name: 'openid-client interop',
    client_uri: 'https://interop.example.org/',
    application_type: 'native',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
  }, client.ClientSecretBasic(), insecure);
  const meta = config.clientMetadata();
  say('registered', { client_id: meta.client_id, has_secret: typeof meta.client_secret === 'string' });

  const scope = `openid urn:matrix:client:api:* urn:matrix:client:device:${deviceID}`;
  const da = await client.initiateDeviceAuthorization(config, { scope });
  say('device', { user_code: da.user_code, verification_uri_complete: da.verification_uri_complete, interval: da.interval });

  const tokens = await client.pollDeviceAuthorizationGrant(config, da);
  const claims = tokens.claims(); // openid-client has checked iss, aud, exp and iat
  say('tokens', { access_token: tokens.access_token, scope: tokens.scope, sub: claims?.sub, aud: claims?.aud, iss: claims?.iss });

  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  say('refreshed', { access_token: refreshed.access_token, rotated: refreshed.refresh_token !== tokens.refresh_token });

  const info = await client.tokenIntrospection(config, refreshed.access_token);
  say('introspected', { active: info.active, device_id: info.device_id, client_id: info.client_id });

  await client.tokenRevocation(config, refreshed.refresh_token);
  const after = await client.tokenIntrospection(config, refreshed.access_token);
  say('revoked', { active: after.active });
} catch (err) {
  say('error', { error: String(err), code: err.code, cause: err.cause ? JSON.stringify(err.cause) : undefined });
  process.exitCode = 1;
}
