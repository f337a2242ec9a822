// Shared by the browser scenarios: Debian's Chromium at a phone's size,
// a screenshot and a layout audit of every page visited, and the line
// protocol with e2e/browser_test.go.
//
// A scenario is run as `node e2e/<scenario>.mjs '<json args>'`. It prints
// one JSON object per line on stdout:
//   {"checkpoint":"name", ...}  then waits for one line on stdin (the Go
//                               test checks the server's side meanwhile);
//   {"done":true, "data":{...}, "pages":[...], "violations":[...], "notes":[...]}
//   or {"error":"...", "pages":[...], "violations":[...]} (exit status 1).
// Anything else goes to stderr.

import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const CHROMIUM = process.env.DEVICEGRANT_CHROMIUM || '/usr/bin/chromium';

// The phone: an iPhone 12–15 sized screen.
export const PHONE = { width: 390, height: 844, deviceScaleFactor: 3 };

// The thresholds the audit holds every page to.
export const LIMITS = {
  minBodyFontPx: 16, // readable without zoom
  minInputFontPx: 16, // phones zoom into smaller inputs on focus
  minTapPx: 44, // tap targets (Apple HIG 44 pt, Material 48 dp)
  minUserCodePx: 28, // the code a person compares with the device's screen
};

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Phone wraps the page: every navigation is audited and screenshotted.
export class Phone {
  constructor(page, dir) {
    this.page = page;
    this.dir = dir;
    this.pages = []; // {n, name, url, status, title}
    this.violations = []; // failures the Go test reports
    this.notes = []; // things worth a look that are not failures
    this.log = []; // console errors, failed requests, HTTP errors: why a step failed
    this.status = 0; // HTTP status of the last main-frame document
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') this.log.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('requestfailed', (r) => this.log.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) this.status = r.status();
      if (r.status() >= 400) this.log.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
    });
  }

  violation(msg) {
    this.violations.push(`${this.current()}: ${msg}`);
  }

  current() {
    const last = this.pages[this.pages.length - 1];
    return last ? `${String(last.n).padStart(2, '0')}-${last.name}` : 'start';
  }

  // open loads a URL; the caller records the page with visited once it
  // knows which page it is.
  async open(url) {
    await this.page.goto(url, { waitUntil: 'load' });
  }

  async goto(url, name, opts) {
    await this.open(url);
    return this.visited(name, opts);
  }

  // visited records the page now showing: layout audit, then a full-page
  // screenshot as artifacts/browser/<scenario>/NN-<name>.png.
  async visited(name, opts = {}) {
    const n = this.pages.length + 1;
    const rec = { n, name, url: this.page.url(), status: this.status, title: await this.page.title() };
    this.pages.push(rec);
    await this.audit(opts);
    await this.shot(name, n);
    return rec;
  }

  async shot(name, n = this.pages.length + 1) {
    const file = join(this.dir, `${String(n).padStart(2, '0')}-${name}.png`);
    await this.page.screenshot({ path: file, fullPage: true });
    return file;
  }

  async audit({ userCode } = {}) {
    const m = await this.page.evaluate((minTap) => {
      const px = (el) => parseFloat(getComputedStyle(el).fontSize);
      const visible = (el) => {
        const r = el.getBoundingClientRect();
        const s = getComputedStyle(el);
        return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
      };
      const describe = (el) => {
        const r = el.getBoundingClientRect();
        const text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().replace(/\s+/g, ' ');
        return { tag: el.tagName.toLowerCase(), text: text.slice(0, 60), height: Math.round(r.height * 10) / 10 };
      };
      return {
        innerWidth: window.innerWidth,
        scrollWidth: document.documentElement.scrollWidth,
        bodyFont: px(document.body),
        viewportMeta: document.querySelector('meta[name=viewport]')?.content || '',
        inputs: [...document.querySelectorAll('input:not([type=hidden]):not([type=checkbox]), textarea, select')]
          .filter(visible)
          .map((el) => ({ name: el.name || el.id, font: px(el) })),
        smallTargets: [...document.querySelectorAll('a[href], button, input[type=submit], input[type=checkbox]:not(label input), label:has(input[type=checkbox])')]
          .filter(visible)
          .map(describe)
          .filter((d) => d.height < minTap),
        codes: [...document.querySelectorAll('.code-big')].map((el) => ({ text: el.textContent.trim(), font: px(el) })),
      };
    }, LIMITS.minTapPx);
    if (m.innerWidth !== PHONE.width) this.violation(`viewport is ${m.innerWidth}px wide, want ${PHONE.width} (viewport meta "${m.viewportMeta}")`);
    if (m.scrollWidth > PHONE.width) this.violation(`scrolls sideways: document is ${m.scrollWidth}px wide at ${PHONE.width}px`);
    if (m.bodyFont < LIMITS.minBodyFontPx) this.violation(`body font-size ${m.bodyFont}px < ${LIMITS.minBodyFontPx}px`);
    for (const i of m.inputs) {
      if (i.font < LIMITS.minInputFontPx) this.violation(`input ${i.name} font-size ${i.font}px < ${LIMITS.minInputFontPx}px (the phone zooms in on focus)`);
    }
    for (const s of m.smallTargets) {
      this.notes.push(`${this.current()}: ${s.tag} "${s.text}" is ${s.height}px tall (< ${LIMITS.minTapPx}px; not used by the test)`);
    }
    if (userCode !== undefined) {
      if (m.codes.length !== 1) {
        this.violation(`want one .code-big user code, found ${m.codes.length}`);
      } else {
        const c = m.codes[0];
        if (c.text !== userCode) this.violation(`user code shows "${c.text}", want "${userCode}"`);
        if (c.font < LIMITS.minUserCodePx) this.violation(`user code font-size ${c.font}px < ${LIMITS.minUserCodePx}px`);
      }
    }
    return m;
  }

  // checkTarget holds a button or link the test is about to use to the
  // tap-target size.
  async checkTarget(loc, what) {
    await loc.waitFor({ state: 'visible', timeout: 5000 });
    const box = await loc.boundingBox();
    if (!box) throw new Error(`${what}: no bounding box`);
    if (box.height < LIMITS.minTapPx) this.violation(`${what} is ${box.height.toFixed(1)}px tall, want >= ${LIMITS.minTapPx}px`);
    return box;
  }

  // tap taps a button or link like a finger and waits for the page it
  // leads to.
  async tap(loc, what) {
    await this.checkTarget(loc, what);
    await Promise.all([this.page.waitForNavigation({ waitUntil: 'load', timeout: 15000 }), loc.tap()]);
  }

  // tapNoNavigation taps and asserts that no page load follows within ms.
  async tapNoNavigation(loc, what, ms = 1000) {
    await this.checkTarget(loc, what);
    let navigated = false;
    const onNav = (f) => {
      if (f === this.page.mainFrame()) navigated = true;
    };
    this.page.on('framenavigated', onNav);
    const requests = [];
    const onReq = (r) => requests.push(`${r.method()} ${r.url()}`);
    this.page.on('request', onReq);
    await loc.tap();
    await this.page.waitForTimeout(ms);
    this.page.off('framenavigated', onNav);
    this.page.off('request', onReq);
    return { navigated, requests };
  }

  async text(selector) {
    const loc = this.page.locator(selector);
    if ((await loc.count()) === 0) return '';
    return (await loc.first().innerText()).trim().replace(/\s+/g, ' ');
  }

  // signInIfAsked fills the sign-in form when the page shows it.
  async signInIfAsked(username, password) {
    if ((await this.page.locator('form[action$="/login"]').count()) === 0) return false;
    await this.visited('sign-in');
    await this.page.locator('input[name=username]').fill(username);
    await this.page.locator('input[name=password]').fill(password);
    await this.tap(this.page.getByRole('button', { name: 'Sign in' }), 'Sign in button');
    return true;
  }

  // checkpoint tells the Go test where the scenario is and waits for its
  // go-ahead line on stdin.
  async checkpoint(name, info = {}) {
    emit({ checkpoint: name, ...info });
    const line = await stdinLines.next();
    if (line.done || line.value.trim() !== 'continue') throw new Error(`checkpoint ${name}: Go test said ${JSON.stringify(line.value)}`);
  }
}

// run launches the browser, runs the scenario and prints its result line.
export async function run(fn) {
  const args = JSON.parse(process.argv[2] || '{}');
  if (!args.artifacts) throw new Error('args.artifacts (the screenshot folder) is required');
  mkdirSync(args.artifacts, { recursive: true });
  const userDataDir = mkdtempSync(join(tmpdir(), 'devicegrant-e2e-'));
  let ctx;
  let phone;
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: PHONE.width, height: PHONE.height },
      deviceScaleFactor: PHONE.deviceScaleFactor,
      isMobile: true,
      hasTouch: true,
      locale: 'en-GB',
      colorScheme: 'light',
      timeout: 30000,
    });
    ctx.setDefaultTimeout(15000);
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    phone = new Phone(page, args.artifacts);
    const data = await fn(phone, args);
    emit({ done: true, data: data ?? {}, pages: phone.pages, violations: phone.violations, notes: phone.notes, log: phone.log });
  } catch (err) {
    if (phone) await phone.shot('error').catch(() => {});
    emit({
      error: String(err?.stack || err),
      url: phone?.page.url(),
      log: phone?.log ?? [],
      pages: phone?.pages ?? [],
      violations: phone?.violations ?? [],
      notes: phone?.notes ?? [],
    });
    process.exitCode = 1;
  } finally {
    await ctx?.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
    // The readline on stdin would keep node alive.
    process.stdin.destroy();
  }
}
