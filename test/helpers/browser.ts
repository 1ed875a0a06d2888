// A real browser for the web UI: headless Chromium (Debian's `chromium`) driven over the Chrome
// DevTools Protocol on a pipe (--remote-debugging-pipe: fd 3 in, fd 4 out, NUL-separated JSON),
// so no debugging port is opened and nothing listens. Used by the tests that log in to the UI.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { waitFor } from '../../lib/processes.ts';

const CANDIDATES = ['chromium', 'chromium-browser', 'google-chrome'];

/** The browser binary, or undefined when none is installed (the caller skips, saying so). */
export function chromiumBin(): string | undefined {
  return CANDIDATES.find((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0);
}

interface Message {
  id?: number;
  method?: string;
  sessionId?: string;
  result?: Record<string, unknown>;
  error?: { message: string };
  params?: Record<string, unknown>;
}

export class Browser {
  private seq = 0;
  private readonly pending = new Map<number, (m: Message) => void>();
  private readonly listeners: ((m: Message) => void)[] = [];
  private buffer = '';

  private constructor(private readonly proc: ChildProcess, private readonly profile: string) {
    const out = proc.stdio[4] as Readable;
    out.setEncoding('utf8');
    out.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nul: number;
      while ((nul = this.buffer.indexOf('\0')) >= 0) {
        const m = JSON.parse(this.buffer.slice(0, nul)) as Message;
        this.buffer = this.buffer.slice(nul + 1);
        if (m.id !== undefined) this.pending.get(m.id)?.(m);
        else if (m.method) for (const l of this.listeners) l(m);
      }
    });
  }

  /** `extraArgs`: e.g. --host-resolver-rules for a test host name, --ignore-certificate-errors-spki-list for its certificate. */
  static launch(bin: string, extraArgs: readonly string[] = []): Browser {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dh-chromium-'));
    const proc = spawn(bin, ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--remote-debugging-pipe', ...extraArgs, 'about:blank'], { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'] });
    return new Browser(proc, profile);
  }

  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`CDP ${method}: no answer within 30 s`)), 30_000);
      this.pending.set(id, (m) => {
        clearTimeout(timer);
        this.pending.delete(id);
        if (m.error) reject(new Error(`CDP ${method}: ${m.error.message}`));
        else resolve(m.result ?? {});
      });
      (this.proc.stdio[3] as Writable).write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  }

  /** Calls `fn` with every event (a message with a method and no id). */
  onEvent(fn: (m: Message) => void): void {
    this.listeners.push(fn);
  }

  async newPage(): Promise<Page> {
    const { targetId } = (await this.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
    const { sessionId } = (await this.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
    const page = new Page(this, sessionId);
    await page.send('Page.enable');
    await page.send('Runtime.enable');
    return page;
  }

  async close(): Promise<void> {
    await this.send('Browser.close').catch(() => undefined);
    if (this.proc.exitCode === null) {
      const exited = await waitFor(async () => this.proc.exitCode !== null || this.proc.signalCode !== null, 10_000, 100);
      if (!exited) this.proc.kill('SIGKILL');
    }
    fs.rmSync(this.profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  }
}

export class Page {
  constructor(private readonly browser: Browser, private readonly sessionId: string) {}

  send(method: string, params: Record<string, unknown> = {}) {
    return this.browser.send(method, params, this.sessionId);
  }

  /**
   * Answers HTTP authentication challenges (a server's 401 with WWW-Authenticate, which a person
   * would see as the browser's prompt) with these credentials, or cancels them (null): the page
   * then shows the 401's body.
   */
  async answerAuth(credentials: { user: string; password: string } | null): Promise<void> {
    this.browser.onEvent((m) => {
      if (m.sessionId !== this.sessionId) return;
      const requestId = m.params?.requestId;
      if (m.method === 'Fetch.requestPaused') void this.send('Fetch.continueRequest', { requestId }).catch(() => undefined);
      if (m.method === 'Fetch.authRequired') {
        const authChallengeResponse = credentials ? { response: 'ProvideCredentials', username: credentials.user, password: credentials.password } : { response: 'CancelAuth' };
        void this.send('Fetch.continueWithAuth', { requestId, authChallengeResponse }).catch(() => undefined);
      }
    });
    await this.send('Fetch.enable', { handleAuthRequests: true, patterns: [{ urlPattern: '*' }] });
  }

  async navigate(url: string): Promise<void> {
    await this.send('Page.navigate', { url });
  }

  async evaluate<T>(expression: string): Promise<T> {
    const r = (await this.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true })) as { result: { value: T }; exceptionDetails?: { text: string } };
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.text}`);
    return r.result.value;
  }

  text(): Promise<string> {
    return this.evaluate<string>('document.body ? document.body.innerText : ""');
  }

  /** Waits until the page's text matches; returns it (or the last text seen, for the message). */
  async waitText(re: RegExp, timeoutMs = 30_000): Promise<{ ok: boolean; text: string }> {
    let text = '';
    const ok = await waitFor(async () => re.test((text = await this.text().catch(() => ''))), timeoutMs, 250);
    return { ok, text };
  }

  async screenshot(file: string): Promise<void> {
    const { data } = (await this.send('Page.captureScreenshot', { format: 'png' })) as { data: string };
    fs.writeFileSync(file, Buffer.from(data, 'base64'));
  }
}

export interface UiLoginResult {
  loginFormShown: boolean;
  /** After a wrong password: the form again, nothing stored. */
  wrongBackToForm: boolean;
  wrongStored: string | null;
  /** After the right password: the project list naming the project. */
  projectListShown: boolean;
  /** Status of a same-origin fetch of /api/projects without headers from the logged-in page
   * (what the UI's task-log download does): 200 when config.js adds the credentials. */
  bareFetchStatus: number;
  /** The page's text at the end, for assertion messages. */
  text: string;
}

/**
 * Logs in to the Digdag web UI at `url` the way a person would: the login form (lib/ui-login.ts),
 * a wrong password first, then the right one, expecting `project` in the project list.
 */
export async function uiLogin(bin: string, url: string, user: string, password: string, project: string, wrongPassword: string, screenshot?: string): Promise<UiLoginResult> {
  const browser = Browser.launch(bin);
  try {
    const page = await browser.newPage();
    await page.navigate(url);
    const form = await page.waitText(/Log in to Digdag/);
    const fill = (pw: string) =>
      page.evaluate<number>(`(() => {
        const inputs = document.querySelectorAll('form input');
        const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
        set.call(inputs[0], ${JSON.stringify(user)}); inputs[0].dispatchEvent(new Event('input', { bubbles: true }));
        set.call(inputs[1], ${JSON.stringify(pw)}); inputs[1].dispatchEvent(new Event('input', { bubbles: true }));
        document.querySelector('form button[type=submit]').click();
        return inputs.length;
      })()`);
    // A marker the reload clears: the UI stores the credentials, the first API call answers 401,
    // config.js forgets them and reloads the page, which shows the form again.
    await page.evaluate('window.__dhBeforeLogin = true');
    await fill(wrongPassword);
    await waitFor(async () => (await page.evaluate<boolean>('window.__dhBeforeLogin !== true').catch(() => false)), 30_000, 250);
    const again = await page.waitText(/Log in to Digdag/);
    const wrongStored = await page.evaluate<string | null>("localStorage.getItem('digdag.credentials')");
    await fill(password);
    const list = await page.waitText(new RegExp(project));
    if (screenshot) await page.screenshot(screenshot);
    const bareFetchStatus = await page.evaluate<number>("fetch('/api/projects').then((r) => r.status)");
    return { loginFormShown: form.ok, wrongBackToForm: again.ok, wrongStored, projectListShown: list.ok && !/Log in to Digdag/.test(list.text), bareFetchStatus, text: list.text };
  } finally {
    await browser.close();
  }
}
