// Manual check, not part of npm test: log in to the Digdag web UI (AUTH=basic, login page from
// lib/ui-login.ts) in headless Chromium over CDP: a wrong password returns to the form, the right
// one shows the project list. Usage (Node 20): node --experimental-websocket test/manual/ui-login-browser.mjs <url> <user> <password> <screenshot.png>
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
const [url, user, password, shot] = process.argv.slice(2);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'chromium-'));
const port = 9333;
const chrome = spawn('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, `--remote-debugging-port=${port}`, 'about:blank'], { stdio: 'ignore' });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  let targets;
  for (let i = 0; i < 50 && !targets; i++) { await sleep(200); targets = await fetch(`http://127.0.0.1:${port}/json/list`).then((r) => r.json()).catch(() => undefined); }
  const page = targets.find((t) => t.type === 'page');
  const ws = new WebSocket(page.webSocketDebuggerUrl);
  await new Promise((r) => ws.addEventListener('open', r));
  let id = 0; const pending = new Map();
  ws.addEventListener('message', (e) => { const m = JSON.parse(e.data); if (m.id && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); } });
  const send = (method, params = {}) => new Promise((r) => { const i = ++id; pending.set(i, r); ws.send(JSON.stringify({ id: i, method, params })); });
  const evaluate = async (expr) => (await send('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true })).result?.result?.value;
  const waitText = async (re, ms = 20000) => { for (let t = 0; t < ms; t += 250) { const txt = await evaluate('document.body ? document.body.innerText : ""'); if (re.test(txt)) return txt; await sleep(250); } return await evaluate('document.body.innerText'); };
  await send('Page.enable');
  await send('Page.navigate', { url });
  const login = await waitText(/Log in to Digdag/);
  console.log('login page shown:', /Log in to Digdag/.test(login));
  const fill = (pw) => evaluate(`(() => {
    const inputs = document.querySelectorAll('form input');
    const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    set.call(inputs[0], ${JSON.stringify(user)}); inputs[0].dispatchEvent(new Event('input', { bubbles: true }));
    set.call(inputs[1], ${JSON.stringify(pw)}); inputs[1].dispatchEvent(new Event('input', { bubbles: true }));
    document.querySelector('form button[type=submit]').click();
    return inputs.length;
  })()`);
  // Wrong password first: back to the login form, credentials forgotten.
  console.log('inputs:', await fill('wrong-password'));
  await sleep(3000);
  const afterWrong = await waitText(/Log in to Digdag/);
  console.log('wrong password → login form again:', /Log in to Digdag/.test(afterWrong), 'stored:', await evaluate("localStorage.getItem('digdag.credentials')"));
  await fill(password);
  const list = await waitText(/ha-sample/);
  console.log('project list shows ha-sample:', /ha-sample/.test(list));
  const shotRes = await send('Page.captureScreenshot', { format: 'png' });
  fs.writeFileSync(shot, Buffer.from(shotRes.result.data, 'base64'));
  ws.close();
} finally {
  chrome.kill();
  fs.rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
}
