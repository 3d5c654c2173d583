#!/usr/bin/env node
// A headless "browser" for mcp-remote: mcp-remote opens the authorization URL with the
// `open` package, which on Linux (no desktop) runs xdg-open, which runs $BROWSER URL.
// $BROWSER is browser.sh, which runs this with that URL. It signs in over plain HTTP
// the way a person would (cookies kept, redirects followed by hand):
//
//   sidecar /authorize → consent (Approve) → fake Google account chooser (the account
//   in $OAUTH_E2E_EMAIL) → sidecar /callback → [consent after sign-in] → the client's
//   redirect URI, i.e. mcp-remote's own localhost callback server, which gets the code.
//
// A refusal page is followed through its "Return to the application" link.
// Every hop is logged to stderr (browser.sh sends it to $OAUTH_E2E_BROWSER_LOG).
// Exit 0 when mcp-remote's callback answered 2xx/3xx, non-zero otherwise.

const DEADLINE_MS = Number(process.env.OAUTH_E2E_BROWSER_DEADLINE_MS || 30000);
const MAX_HOPS = 12;

const authorizeUrl = process.argv[2];
const email = process.env.OAUTH_E2E_EMAIL;
const log = (...a) => console.error(`[browser ${new Date().toISOString()}]`, ...a);

if (!authorizeUrl || !email) {
  log("usage: OAUTH_E2E_EMAIL=… browser.mjs AUTHORIZE_URL");
  process.exit(2);
}

const deadline = AbortSignal.timeout(DEADLINE_MS);
const jar = new Map(); // host -> Map(name -> value); cookies are per host, not per port

function storeCookies(url, res) {
  const host = new URL(url).hostname;
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(";");
    const i = pair.indexOf("=");
    if (i <= 0) continue;
    if (!jar.has(host)) jar.set(host, new Map());
    jar.get(host).set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
  }
}

function cookieHeader(url) {
  const m = jar.get(new URL(url).hostname);
  return m ? [...m].map(([k, v]) => `${k}=${v}`).join("; ") : undefined;
}

async function request(method, url, form) {
  const headers = { "user-agent": "oauth-e2e-browser/1" };
  const cookie = cookieHeader(url);
  if (cookie) headers.cookie = cookie;
  let body;
  if (form) {
    headers["content-type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(form).toString();
  }
  const res = await fetch(url, { method, headers, body, redirect: "manual", signal: deadline });
  storeCookies(url, res);
  const text = await res.text();
  log(`${method} ${url} -> ${res.status}`);
  return { status: res.status, location: res.headers.get("location"), text };
}

const decode = (s) =>
  s
    .replace(/&quot;/g, '"')
    .replace(/&#x27;|&#39;/g, "'")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");

function attrs(tag) {
  const out = {};
  for (const m of tag.matchAll(/([\w:-]+)="([^"]*)"/g)) out[m[1].toLowerCase()] = decode(m[2]);
  return out;
}

function forms(html) {
  return [...html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)].map((m) => {
    const a = attrs(m[1]);
    const inner = m[2];
    const fields = [...inner.matchAll(/<input\b([^>]*)>/gi)]
      .map((i) => attrs(i[1]))
      .filter((i) => i.type === "hidden" && i.name !== undefined)
      .map((i) => [i.name, i.value ?? ""]);
    const buttons = [...inner.matchAll(/<button\b([^>]*)>/gi)]
      .map((b) => attrs(b[1]))
      .filter((b) => (b.type ?? "submit") === "submit" && b.name !== undefined)
      .map((b) => [b.name, b.value ?? ""]);
    return { action: a.action ?? "", method: (a.method ?? "get").toLowerCase(), fields, buttons };
  });
}

function links(html) {
  return [...html.matchAll(/<a\b([^>]*)>/gi)].map((m) => attrs(m[1]).href).filter(Boolean);
}

async function main() {
  const redirectUri = new URL(authorizeUrl).searchParams.get("redirect_uri");
  if (!redirectUri) throw new Error(`no redirect_uri in ${authorizeUrl}`);
  log(`signing in ${email}; the client's redirect URI is ${redirectUri}`);
  let url = authorizeUrl;
  for (let hop = 0; hop < MAX_HOPS; hop++) {
    if (url.startsWith(redirectUri)) {
      const q = Object.fromEntries(new URL(url).searchParams);
      log(`at the client's redirect: ${JSON.stringify({ ...q, code: q.code ? "(a code)" : undefined })}`);
      // The last hop: mcp-remote's callback server (it listens on 127.0.0.1; the URL
      // says localhost, which fetch resolves trying every address).
      const r = await request("GET", url);
      if (r.status >= 400 && !q.error) throw new Error(`mcp-remote's callback answered ${r.status}: ${r.text}`);
      console.log(JSON.stringify({ landed: url, callback_status: r.status, error: q.error ?? null }));
      return 0; // the browser did its part, whatever the client was told
    }
    const r = await request("GET", url);
    if ([301, 302, 303, 307].includes(r.status)) {
      url = new URL(r.location, url).href;
      continue;
    }
    const fs = forms(r.text);
    const consent = fs.find((f) => f.buttons.some(([n, v]) => n === "action" && v === "approve"));
    if (r.status === 200 && consent) {
      const p = await request("POST", new URL(consent.action, url).href, [...consent.fields, ["action", "approve"]]);
      if (![302, 303].includes(p.status)) throw new Error(`consent answered ${p.status}: ${p.text.slice(0, 2000)}`);
      url = new URL(p.location, url).href;
      continue;
    }
    const chooser = fs.find((f) => f.buttons.some(([n]) => n === "email"));
    if (r.status === 200 && chooser) {
      const offered = chooser.buttons.filter(([n]) => n === "email").map(([, v]) => v);
      if (!offered.includes(email)) throw new Error(`${email} not offered by the chooser (${offered})`);
      const p = await request("POST", new URL(chooser.action, url).href, [...chooser.fields, ["email", email]]);
      if (![302, 303].includes(p.status)) throw new Error(`chooser answered ${p.status}: ${p.text.slice(0, 2000)}`);
      url = new URL(p.location, url).href;
      continue;
    }
    const back = links(r.text).find((h) => h.startsWith(redirectUri));
    if (r.text.includes("Access refused") && back) {
      log(`refused: ${(r.text.match(/<p class="bad">([\s\S]*?)<\/p>/) || [])[1] ?? "(no message)"}`);
      url = back;
      continue;
    }
    throw new Error(`sign-in stopped at HTTP ${r.status} ${url}: ${r.text.slice(0, 3000)}`);
  }
  throw new Error(`more than ${MAX_HOPS} hops`);
}

main().then(
  (code) => process.exit(code),
  (e) => {
    log(`FAILED: ${e.stack || e}`);
    process.exit(1);
  },
);
