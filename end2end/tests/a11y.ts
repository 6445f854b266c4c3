// Accessibility checks (axe) of every page state a test reaches; used by the `test`
// fixture in helpers.ts, which fails the test at its end on any serious or critical
// violation.
//
// What is analysed, and when:
// - Without JavaScript a page's DOM is exactly the HTML the server sent. Every HTML
//   document the main frame receives (a `goto`, a link, a form post and the page its
//   redirect leads to, a reload) is taken from the network as it arrives, through the
//   DevTools protocol (Fetch domain, response stage), before the browser shows it.
// - With JavaScript the page reports its own states: a script added to every document
//   serialises the DOM once it has been quiet for QUIET_MS after any change (loading,
//   hydration, a client-side route change, a server-function result drawn into the
//   page), and at once when the page is about to be left (`beforeunload`), so a state
//   the test navigates away from is still recorded. The end of the test takes the last state.
//
// How: each state is kept as HTML and analysed, one after the other, in a page of a
// separate context, at the same URL and viewport, with the same stylesheet (fetched once
// per test), served with the page's own Content-Security-Policy plus `script-src 'none'`,
// so that none of the page's scripts run there (axe itself, evaluated through the
// DevTools protocol, is not subject to the policy; neither is the reporter script).
// Without JavaScript, `<noscript>` content is unwrapped there, as such a browser shows it.
// Identical states (the same address and markup, up to nonces and script contents) are
// analysed once per test.
//
// Limits: Chromium only (the DevTools protocol). A state that lasts less than QUIET_MS
// (a loading state the next change replaces at once) is not analysed. The reporter's
// `beforeunload` listener keeps pages out of the back/forward cache.
//
// Why not analyse the live page: axe runs asynchronously (timers, promises), which a page
// with JavaScript disabled never lets happen, and with JavaScript a test that keeps
// clicking changes or replaces the DOM under a running analysis. A serialised state is
// taken in one synchronous step (in the page, or from the network), so it is always a
// state the page really was in, and nothing waits on the test or holds it up.

import AxeBuilder from '@axe-core/playwright';
import type { Browser, BrowserContext, CDPSession, Page, TestInfo } from '@playwright/test';
import { createHash } from 'node:crypto';

/** Where the app under test runs (scripts/test sets BASE_URL, as the Playwright config reads it). */
const APP_ORIGIN = new URL(process.env.BASE_URL ?? 'http://localhost:3100').origin;

/** One serious or critical axe violation, as reported at the end of the test. */
interface Finding {
  url: string;
  rule: string;
  impact: string;
  help: string;
  helpUrl: string;
  targets: string[];
}

/** What a page showed at one moment, and what is needed to render it again. */
interface Snapshot {
  url: string;
  html: string;
  csp: string | null;
  viewport: { width: number; height: number };
}

const FAILING_IMPACTS = new Set(['serious', 'critical']);
/** How long the DOM must stay unchanged before a state counts as settled (with JavaScript). */
const QUIET_MS = 150;
/** A page that keeps changing is still recorded this often. */
const MAX_PENDING_MS = 1_000;
/** The page-side reporter's name (a Playwright binding). */
const BINDING = '__fluxiA11ySnapshot';
const DEFAULT_VIEWPORT = { width: 1280, height: 720 };

/** Runs in every document of a watched context (with JavaScript). Reports settled states. */
function pageReporter({ binding, quietMs, maxPendingMs }: { binding: string; quietMs: number; maxPendingMs: number }) {
  if (window !== window.top) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pendingSince = 0;
  let last = '';
  /** The current state (address and serialised DOM) if it differs from the last one taken. */
  const take = (): [string, string] | null => {
    clearTimeout(timer);
    timer = undefined;
    const html =
      (document.doctype ? new XMLSerializer().serializeToString(document.doctype) : '') +
      (document.documentElement ? document.documentElement.outerHTML : '');
    if (`${location.href}\n${html}` === last) return null;
    last = `${location.href}\n${html}`;
    return [location.href, html];
  };
  const report = () => {
    const state = take();
    const send = (window as unknown as Record<string, (url: string, html: string) => unknown>)[binding];
    if (state && send) void send(state[0], state[1]);
  };
  /** Something changed: report once nothing has changed for a while. */
  const changed = () => {
    const now = Date.now();
    if (timer === undefined) pendingSince = now;
    clearTimeout(timer);
    timer = setTimeout(report, now - pendingSince >= maxPendingMs ? 0 : quietMs);
  };
  /** The page is about to show another address: report what it showed until now. */
  const leaving = () => {
    if (timer !== undefined) report();
  };
  new MutationObserver(changed).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
  // Client-side route changes (the Navigation API sees history.pushState and the back
  // button): `navigate` comes while the old address is still shown.
  const navigation = (window as unknown as { navigation?: EventTarget }).navigation;
  navigation?.addEventListener('navigate', leaving);
  navigation?.addEventListener('navigatesuccess', changed);
  // Not `pagehide`: what a page reports while being unloaded no longer reaches the test.
  addEventListener('beforeunload', leaving);
  Object.defineProperty(window, `${binding}Flush`, { value: take });
}

function header(headers: { name: string; value: string }[], name: string): string | null {
  return headers.find((h) => h.name.toLowerCase() === name)?.value ?? null;
}

export class A11yWatch {
  private readonly findings = new Map<string, Finding>();
  private readonly problems: string[] = [];
  private readonly seen = new Set<string>();
  private readonly pages = new Map<Page, Promise<void>>();
  private readonly contexts = new Map<BrowserContext, Promise<void>>();
  private readonly csp = new WeakMap<Page, string | null>();
  private readonly captures = new Set<Promise<void>>();
  private analysis: Promise<void> = Promise.resolve();
  private analysed = 0;
  /** Set once the analyses are over: later reports are not analysed. */
  private finished = false;
  private visited = 0;
  private analysisPage: Page | undefined;
  private current: Snapshot | undefined;
  private readonly assets = new Map<string, { status: number; headers: Record<string, string>; body: Buffer }>();
  private readonly onContext = (context: BrowserContext) => void this.watchContext(context);

  private constructor(
    private readonly browser: Browser,
    private readonly analysisContext: BrowserContext,
    private readonly javaScript: boolean,
  ) {}

  /** Starts watching `context` and every context the test creates from now on. */
  static async start(browser: Browser, context: BrowserContext, javaScript: boolean): Promise<A11yWatch> {
    // Made before the listener is added, so that it is not itself watched.
    const analysisContext = await browser.newContext({ javaScriptEnabled: true });
    const watch = new A11yWatch(browser, analysisContext, javaScript);
    await watch.watchContext(context);
    browser.on('context', watch.onContext);
    return watch;
  }

  /** Watches a context and its pages. Its `newPage` resolves only once the page is watched. */
  watchContext(context: BrowserContext): Promise<void> {
    let ready = this.contexts.get(context);
    if (ready) return ready;
    context.on('page', (page) => void this.watchPage(page));
    const newPage = context.newPage.bind(context);
    context.newPage = async () => {
      await ready;
      const page = await newPage();
      await this.watchPage(page);
      return page;
    };
    ready = (async () => {
      if (this.javaScript) {
        await context.exposeBinding(BINDING, ({ page }, url: string, html: string) => this.fromPage(page, url, html));
        await context.addInitScript(pageReporter, { binding: BINDING, quietMs: QUIET_MS, maxPendingMs: MAX_PENDING_MS });
      }
      await Promise.all(context.pages().map((p) => this.watchPage(p)));
    })();
    this.contexts.set(context, ready);
    return ready;
  }

  /** Watches one page (idempotent); resolves once its documents are being captured. */
  watchPage(page: Page): Promise<void> {
    let ready = this.pages.get(page);
    if (ready) return ready;
    page.on('response', (response) => {
      try {
        const request = response.request();
        if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
          this.csp.set(page, response.headers()['content-security-policy'] ?? null);
        }
      } catch {
        // A service worker's request: no document of this page.
      }
    });
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame() && /^https?:/.test(frame.url())) this.visited += 1;
    });
    ready = this.javaScript ? Promise.resolve() : this.captureDocuments(page);
    this.pages.set(page, ready);
    return ready;
  }

  /** Without JavaScript: takes every HTML document of the main frame off the network. */
  private async captureDocuments(page: Page): Promise<void> {
    let cdp: CDPSession;
    let mainFrame: string;
    try {
      cdp = await page.context().newCDPSession(page);
      mainFrame = (await cdp.send('Page.getFrameTree')).frameTree.frame.id;
    } catch (e) {
      if (!page.isClosed()) this.problems.push(`cannot watch ${page.url()} for axe: ${String(e)}`);
      return;
    }
    cdp.on('Fetch.requestPaused', (event) => {
      const capture = (async () => {
        try {
          const status = event.responseStatusCode ?? 0;
          const headers = event.responseHeaders ?? [];
          if (event.frameId !== mainFrame || status < 200 || (status >= 300 && status < 400)) return;
          if (!/^text\/html/i.test(header(headers, 'content-type') ?? '')) return;
          const { body, base64Encoded } = await cdp.send('Fetch.getResponseBody', { requestId: event.requestId });
          this.analyse({
            url: event.request.url,
            html: base64Encoded ? Buffer.from(body, 'base64').toString('utf8') : body,
            csp: header(headers, 'content-security-policy'),
            viewport: page.viewportSize() ?? DEFAULT_VIEWPORT,
          });
        } catch (e) {
          if (!page.isClosed()) this.problems.push(`could not read ${event.request.url} for axe: ${String(e)}`);
        } finally {
          // The browser goes on with the response as it came.
          await cdp.send('Fetch.continueRequest', { requestId: event.requestId }).catch(() => undefined);
        }
      })();
      this.captures.add(capture);
      void capture.finally(() => this.captures.delete(capture));
    });
    await cdp.send('Fetch.enable', { patterns: [{ resourceType: 'Document', requestStage: 'Response' }] });
  }

  /** With JavaScript: a state the page reported. */
  private fromPage(page: Page, url: string, html: string): void {
    if (!/^https?:/.test(url)) return;
    this.analyse({ url, html, csp: this.csp.get(page) ?? null, viewport: page.viewportSize() ?? DEFAULT_VIEWPORT });
  }

  /** Queues the analysis of a state, unless an identical one was analysed already. */
  private analyse(snapshot: Snapshot): void {
    if (this.finished) return;
    // Fluxi's own pages only: an OAuth provider's sign-in and consent pages are theirs.
    if (new URL(snapshot.url).origin !== APP_ORIGIN) return;
    // Script contents (embedded resource data), the response's nonce (Leptos writes it
    // into attributes too) and the hydration mark do not change what axe checks.
    let html = snapshot.html
      .replace(/<script\b([^>]*)>[\s\S]*?<\/script>/gi, '<script$1></script>')
      .replace(/ data-hydrated="true"/g, '');
    const nonce = /'nonce-([^']+)'/.exec(snapshot.csp ?? '')?.[1];
    if (nonce) html = html.split(nonce).join('');
    const key = createHash('sha256').update(snapshot.url).update('\n').update(html).digest('hex');
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.analysis = this.analysis.then(() =>
      this.run(snapshot).catch((e) => {
        this.problems.push(`axe could not analyse ${snapshot.url}: ${e instanceof Error ? e.message : String(e)}`);
      }),
    );
  }

  /** The analysis page: its main document is always the state being analysed. */
  private async analysisPageFor(snapshot: Snapshot): Promise<Page> {
    this.current = snapshot;
    if (this.analysisPage) return this.analysisPage;
    const page = await this.analysisContext.newPage();
    // The document is the state, served with the page's own policy plus `script-src
    // 'none'`; its stylesheet, images and fonts come from the server.
    await page.route('**/*', async (route, request) => {
      const state = this.current;
      if (!state || !request.isNavigationRequest() || request.frame() !== page.mainFrame()) {
        // What rendering needs, fetched once per test (the stylesheet is the same for
        // every state); not the app's script and WebAssembly (preloaded, never run here).
        if (!['stylesheet', 'image', 'font'].includes(request.resourceType())) {
          await route.abort();
          return;
        }
        let asset = this.assets.get(request.url());
        if (!asset) {
          const response = await route.fetch();
          asset = { status: response.status(), headers: response.headers(), body: await response.body() };
          this.assets.set(request.url(), asset);
        }
        await route.fulfill(asset);
        return;
      }
      await route.fulfill({
        status: 200,
        contentType: 'text/html; charset=utf-8',
        headers: { 'content-security-policy': state.csp ? `${state.csp}, script-src 'none'` : "script-src 'none'" },
        body: state.html,
      });
    });
    this.analysisPage = page;
    return page;
  }

  private async run(snapshot: Snapshot): Promise<void> {
    const page = await this.analysisPageFor(snapshot);
    await page.setViewportSize(snapshot.viewport);
    const url = snapshot.url.split('#')[0];
    try {
      await page.goto(url, { waitUntil: 'load' });
    } catch (e) {
      // Chromium now and then aborts a navigation of this offline page (the previous
      // analysis still settling); one more try, then it is a real problem.
      if (!String(e).includes('ERR_ABORTED')) throw e;
      await page.goto(url, { waitUntil: 'load' });
    }
    if (!this.javaScript) {
      await page.evaluate(() => {
        for (const ns of Array.from(document.querySelectorAll('noscript'))) {
          const shown = document.createElement('div');
          shown.style.display = 'contents';
          shown.innerHTML = ns.textContent ?? '';
          ns.replaceWith(shown);
        }
      });
    }
    const results = await new AxeBuilder({ page }).setLegacyMode(true).analyze();
    this.analysed += 1;
    for (const v of results.violations) {
      if (!FAILING_IMPACTS.has(v.impact ?? '')) continue;
      const targets = v.nodes.map((n) => n.target.map(String).join(' '));
      const key = `${v.id} ${new URL(snapshot.url).pathname} ${targets.join(', ')}`;
      if (this.findings.has(key)) continue;
      this.findings.set(key, {
        url: snapshot.url,
        rule: v.id,
        impact: v.impact ?? '',
        help: v.help,
        helpUrl: v.helpUrl,
        targets,
      });
    }
  }

  /** Records the pages' last states, waits for every analysis and throws on any finding. */
  async finish(testInfo: TestInfo): Promise<void> {
    this.browser.off('context', this.onContext);
    await Promise.all(this.contexts.values());
    if (this.javaScript) {
      for (const page of this.pages.keys()) {
        if (page.isClosed()) continue;
        // (An evaluation waits while a navigation is under way: give up after a while.)
        const state = await Promise.race([
          page
            .evaluate((name) => {
              const flush = (window as unknown as Record<string, (() => [string, string] | null) | undefined>)[name];
              return flush ? flush() : null;
            }, `${BINDING}Flush`)
            .catch(() => null),
          new Promise<null>((resolve) => setTimeout(() => resolve(null), 5_000)),
        ]);
        if (state) this.fromPage(page, state[0], state[1]);
      }
    }
    // A page may still report a state meanwhile (its quiet timer, a `beforeunload`), which
    // queues one more analysis: wait until nothing is left, then take no more.
    for (;;) {
      while (this.captures.size > 0) await Promise.all([...this.captures]);
      const queued = this.analysis;
      await queued;
      if (queued === this.analysis && this.captures.size === 0) break;
    }
    this.finished = true;
    await this.analysisContext.close();
    testInfo.annotations.push({ type: 'axe', description: `${this.analysed} page states analysed` });
    // A safeguard for this machinery itself: pages were shown, so something must have been analysed.
    if (this.visited > 0 && this.analysed === 0) this.problems.push(`axe analysed none of the ${this.visited} pages shown`);
    const findings = [...this.findings.values()];
    if (findings.length > 0) {
      await testInfo.attach('axe-violations.json', {
        body: JSON.stringify(findings, null, 2),
        contentType: 'application/json',
      });
    }
    const lines = [
      ...findings.map(
        (f) => `[${f.impact}] ${f.rule}: ${f.help}\n    on ${f.url}\n    at ${f.targets.join('\n    at ')}\n    ${f.helpUrl}`,
      ),
      ...this.problems,
    ];
    if (lines.length > 0) {
      throw new Error(`axe: ${findings.length} serious or critical accessibility violation(s)\n  ${lines.join('\n  ')}`);
    }
  }
}
