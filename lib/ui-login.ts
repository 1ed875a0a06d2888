// The web UI's login with Digdag's basic auth on. Digdag's 401 carries no WWW-Authenticate, so a
// browser never prompts; digdag-ui instead shows a login form when its config.js lists auth items,
// and sends what headers() returns. This is that config.js, served ahead of the jar's from a
// directory put first on the classpath (lib/digdag.ts digdagArgv). SECURITY-NOTES.md §2.
import path from 'node:path';
import fs from 'node:fs';
import type { Config } from './config.ts';
import { ensureDir } from './state.ts';

/** Where the server's class loader finds it: UiResource serves /config.js as public/config.js. */
export const uiOverlayDir = (config: Config) => path.join(config.stateDir, 'ui-overlay');
export const UI_CONFIG_RESOURCE = path.join('public', 'config.js');

/**
 * digdag-ui's config (the format of digdag-ui/config/config.js at v0.10.5.1) with:
 * - auth.items user and password, each with validate and scrub (LoginPage calls item.scrub, and
 *   its fallback reads a variable before it is initialised, so every item needs its own);
 * - headers() building `Authorization: Basic …` from the stored credentials;
 * - a window.fetch wrapper that adds the same header to same-origin /api/ requests that lack one:
 *   task-log downloads (Model.fetchArrayBuffer) send no headers(). Never to other origins (the
 *   UI's "direct" log URLs, e.g. pre-signed storage links);
 * - on a 401 from the API with stored credentials (wrong or changed password): forget them and
 *   reload, which shows the login form again.
 * No secret is in it: the credentials live in the browser (localStorage, until Logout).
 */
export function uiConfigJs(): string {
  return `// digdag-ha: Digdag UI config with a login form for Digdag's basic authenticator (generated; see lib/ui-login.ts).
(function () {
  'use strict';
  var STORAGE = 'digdag.credentials';
  function basic (c) {
    if (!c || !c.username) return null;
    return 'Basic ' + window.btoa(unescape(encodeURIComponent(c.username + ':' + (c.password || ''))));
  }
  function stored () {
    try { return JSON.parse(window.localStorage.getItem(STORAGE) || 'null'); } catch (e) { return null; }
  }
  function required (args) {
    if (args.value) args.valid(args.key); else args.invalid(args.key);
  }
  window.DIGDAG_CONFIG = {
    url: '/api/',
    td: {
      useTD: false,
      apiV4: 'https://api-console.treasuredata.com/v4',
      connectorUrl: function (connectorName) { return 'https://console.treasuredata.com/app/connections/data-transfers' },
      queryUrl: function (queryId) { return 'https://console.treasuredata.com/app/queries/' + queryId },
      jobUrl: function (jobId) { return 'https://console.treasuredata.com/app/jobs/' + jobId }
    },
    logoutUrl: '/',
    navbar: {
      logo: '/images/logo.png',
      brand: 'Digdag',
      className: 'navbar-inverse',
      style: { backgroundColor: '#2B353F' }
    },
    auth: {
      title: 'Log in to Digdag',
      items: [
        { key: 'username', name: 'User', type: 'text', validate: required, scrub: function (args) { return String(args.value || '').trim() } },
        { key: 'password', name: 'Password', type: 'password', validate: required, scrub: function (args) { return String(args.value || '') } }
      ]
    },
    headers: function (args) {
      var h = basic(args && args.credentials);
      return h ? { Authorization: h } : {};
    }
  };
  var origin = window.location.origin;
  var fetch0 = window.fetch;
  var reloading = false;
  if (typeof fetch0 !== 'function') return;
  window.fetch = function (input, init) {
    var url = new URL(typeof input === 'string' ? input : (input && input.url) || String(input), window.location.href);
    var api = url.origin === origin && url.pathname.indexOf('/api/') === 0;
    var creds = api ? stored() : null;
    var h = basic(creds);
    if (h) {
      var headers = new Headers((init && init.headers) || (typeof input === 'object' && input.headers) || undefined);
      if (!headers.has('Authorization')) headers.set('Authorization', h);
      init = Object.assign({}, init, { headers: headers });
    }
    return fetch0.call(window, input, init).then(function (res) {
      if (res.status === 401 && creds && !reloading) {
        reloading = true;
        window.localStorage.removeItem(STORAGE);
        window.location.reload();
      }
      return res;
    });
  };
})();
`;
}

/** Writes the overlay directory (not secret: no credentials in it); returns it for the classpath. */
export function writeUiOverlay(config: Config): string {
  const dir = uiOverlayDir(config);
  const file = path.join(dir, UI_CONFIG_RESOURCE);
  ensureDir(path.dirname(file));
  fs.writeFileSync(file, uiConfigJs());
  return dir;
}
