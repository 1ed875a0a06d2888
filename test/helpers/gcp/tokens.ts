// The token authority shared by the fake metadata server and the edge's token endpoint: it mints
// a distinct access token per service account, verifies key-signed JWT assertions against the
// public key registered for the account, exchanges the refresh token of a user login (an
// authorized_user ADC file, as `gcloud auth application-default login` writes) for a token of
// that user, and answers which account a token was minted for.
import crypto from 'node:crypto';

export interface ServiceAccount {
  email: string;
  /** PEM public key of the account's registered key (verifies JWT assertions). */
  publicKey: string;
}

export interface MintedToken {
  token: string;
  email: string;
  /** metadata: the metadata server (ADC, Workload Identity); key: a JWT signed with a key file; user: a user login's refresh token. */
  via: 'metadata' | 'key' | 'user';
}

/** A user's login: the OAuth client and refresh token of an authorized_user file. */
export interface UserLogin {
  email: string;
  clientId: string;
  clientSecret: string;
  refreshToken: string;
}

export class TokenAuthority {
  private readonly accounts = new Map<string, ServiceAccount>();
  private readonly users = new Map<string, UserLogin>();
  private readonly tokens = new Map<string, MintedToken>();

  register(sa: ServiceAccount): void {
    this.accounts.set(sa.email, sa);
  }

  registerUser(login: UserLogin): void {
    this.users.set(login.refreshToken, login);
  }

  /** Forgets a login's refresh token, as `gcloud auth application-default revoke` would. */
  revokeUser(refreshToken: string): void {
    this.users.delete(refreshToken);
  }

  mint(email: string, via: MintedToken['via']): MintedToken {
    if (!this.accounts.has(email) && ![...this.users.values()].some((u) => u.email === email)) throw new Error(`unknown account ${email}`);
    // ya29.-prefixed like Google's; the account is not readable from the token itself.
    const t: MintedToken = { token: `ya29.test-${crypto.randomBytes(24).toString('base64url')}`, email, via };
    this.tokens.set(t.token, t);
    return t;
  }

  whose(token: string | undefined): MintedToken | undefined {
    return token ? this.tokens.get(token) : undefined;
  }

  allTokens(): string[] {
    return [...this.tokens.keys()];
  }

  /**
   * The urn:ietf:params:oauth:grant-type:jwt-bearer grant: the assertion's issuer must be a
   * registered account and its RS256 signature must verify with that account's key.
   */
  exchangeJwt(assertion: string): { ok: true; minted: MintedToken } | { ok: false; error: string; description: string } {
    const parts = assertion.split('.');
    if (parts.length !== 3) return { ok: false, error: 'invalid_request', description: 'Invalid JWT: malformed.' };
    let claims: { iss?: string; aud?: string; exp?: number };
    try {
      claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    } catch {
      return { ok: false, error: 'invalid_request', description: 'Invalid JWT: claims are not JSON.' };
    }
    const sa = claims.iss ? this.accounts.get(claims.iss) : undefined;
    if (!sa) return { ok: false, error: 'invalid_grant', description: 'Invalid grant: account not found' };
    const ok = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), sa.publicKey, Buffer.from(parts[2]!, 'base64url'));
    if (!ok) return { ok: false, error: 'invalid_grant', description: 'Invalid JWT Signature.' };
    return { ok: true, minted: this.mint(sa.email, 'key') };
  }

  /** The refresh_token grant: the OAuth client must be the login's and the refresh token current. */
  exchangeRefreshToken(form: URLSearchParams): { ok: true; minted: MintedToken } | { ok: false; status: number; error: string; description: string } {
    const login = this.users.get(form.get('refresh_token') ?? '');
    if (!login) return { ok: false, status: 400, error: 'invalid_grant', description: 'Token has been expired or revoked.' };
    if (form.get('client_id') !== login.clientId || form.get('client_secret') !== login.clientSecret) {
      return { ok: false, status: 401, error: 'invalid_client', description: 'Unauthorized' };
    }
    return { ok: true, minted: this.mint(login.email, 'user') };
  }
}

/** A new login of a user and the authorized_user file `gcloud auth application-default login` would write for it. */
export function newUserLogin(email: string): { login: UserLogin; json: string } {
  const login: UserLogin = {
    email,
    clientId: `${crypto.randomInt(1e9)}-test.apps.googleusercontent.com`,
    clientSecret: `GOCSPX-${crypto.randomBytes(18).toString('base64url')}`,
    refreshToken: `1//0e-test-${crypto.randomBytes(36).toString('base64url')}`,
  };
  const json = JSON.stringify({ account: '', client_id: login.clientId, client_secret: login.clientSecret, refresh_token: login.refreshToken, type: 'authorized_user', universe_domain: 'googleapis.com' }, null, 2);
  return { login, json };
}

/** A new RSA key pair and the service-account JSON key file text Google would issue for it. */
export function newServiceAccountKey(email: string, project: string, tokenUri: string): { publicKey: string; json: string } {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const json = JSON.stringify({
    type: 'service_account',
    project_id: project,
    private_key_id: crypto.randomBytes(20).toString('hex'),
    private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    client_email: email,
    client_id: String(100000000000000000000n + BigInt(crypto.randomInt(1e9))),
    auth_uri: 'https://accounts.google.com/o/oauth2/auth',
    token_uri: tokenUri,
    auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
    client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(email)}`,
  }, null, 2);
  return { publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(), json };
}
