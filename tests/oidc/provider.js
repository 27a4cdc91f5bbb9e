// A real OpenID provider for the sign-in tests (npm's oidc-provider with its
// development login and consent pages). Configured from the environment:
//   PORT           where to listen (127.0.0.1); 0 lets the system choose
//   REDIRECT_URIS  the portal's callback addresses, comma-separated
//   USERS_FILE     JSON {login: {claims}}, read at each sign-in so a test can
//                  change someone's groups between two sign-ins
// Prints "listening <issuer>" once discovery is served.
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

export const CLIENT_ID = 'jitportal';
export const CLIENT_SECRET = 'jitportal-test-client-secret-0123456789';

function users() {
  return JSON.parse(readFileSync(process.env.USERS_FILE, 'utf8'));
}

const server = http.createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: process.env.REDIRECT_URIS.split(','),
      response_types: ['code'],
      grant_types: ['authorization_code'],
    }],
    scopes: ['openid', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'given_name', 'family_name', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    // Every client must prove possession of its code (PKCE), as the portal always does.
    pkce: { required: () => true },
    async findAccount(ctx, id) {
      const claims = users()[id];
      if (!claims) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...users()[id] }; } };
    },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  console.log(`listening ${issuer}`);
});
