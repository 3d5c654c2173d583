#!/usr/bin/env node
// A person at a real (headless) Chromium, driven by playwright-core: the `$BROWSER` of
// a client that opens the sign-in page (chromium.sh runs this with the URL). It clicks
// what a person clicks until the browser is sent to the client's redirect URI:
//
//   sidecar consent page → Approve → fake Google account chooser → $DEMO_EMAIL
//   → (refusal page → "Return to the application") → the client's loopback callback
//
// and takes a screenshot of each page on the way into $DEMO_SHOTS (consent.png,
// account-chooser.png, refusal.png), when set. Exit 0 when the client's callback page
// loaded, non-zero otherwise (the reason on stderr).
import { createRequire } from "node:module";

const require = createRequire(process.env.NPM_DIR + "/package.json");
const { chromium } = require("playwright-core");

const DEADLINE_MS = Number(process.env.DEMO_BROWSER_DEADLINE_MS || 60000);
const url = process.argv[2];
const email = process.env.DEMO_EMAIL;
const shots = process.env.DEMO_SHOTS;
const log = (...a) => console.error(`[chromium ${new Date().toISOString()}]`, ...a);

if (!url || !email) {
  log("usage: DEMO_EMAIL=… NPM_DIR=… chromium_signin.mjs AUTHORIZE_URL");
  process.exit(2);
}
const redirectUri = new URL(url).searchParams.get("redirect_uri");
const atClient = (u) => redirectUri && u.startsWith(redirectUri.split("?")[0]);

async function shot(page, name) {
  if (!shots) return;
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  log(`screenshot ${name}.png`);
}

// What the page shows now: one of the steps, or null while it loads.
async function step(page) {
  if (atClient(page.url())) return "client";
  if (await page.locator("button[value=approve]").count()) return "consent";
  if (await page.locator(`button[data-email]`).count()) return "chooser";
  if (await page.getByText("Access refused").count()) return "refused";
  return null;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let code = 1;
try {
  const page = await (await browser.newContext({ viewport: { width: 900, height: 760 } })).newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  await page.goto(url);
  const end = Date.now() + DEADLINE_MS;
  const seen = [];
  while (Date.now() < end) {
    await page.waitForLoadState("load");
    const s = await step(page);
    if (s === null) {
      await page.waitForTimeout(100); // poll, bounded by the deadline above
      continue;
    }
    seen.push(s);
    const before = page.url();
    const away = (u) => u.href !== before;
    log(`${s}: ${page.url().split("?")[0]}`);
    if (s === "client") {
      code = 0;
      break;
    } else if (s === "consent") {
      await shot(page, "consent");
      await Promise.all([page.waitForURL(away), page.click("button[value=approve]")]);
    } else if (s === "chooser") {
      await page.waitForSelector(`button[data-email="${email}"]`);
      await shot(page, "account-chooser");
      await Promise.all([page.waitForURL(away), page.click(`button[data-email="${email}"]`)]);
    } else if (s === "refused") {
      await shot(page, "refusal");
      await Promise.all([page.waitForURL(away), page.click("text=Return to the application")]);
    }
  }
  if (code !== 0) log(`no redirect to the client within ${DEADLINE_MS} ms; steps: ${seen.join(" → ")}`);
  else log(`steps: ${seen.join(" → ")}`);
} catch (e) {
  log(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(code);
