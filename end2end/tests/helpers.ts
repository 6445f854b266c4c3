import { expect, test as base, type Page } from '@playwright/test';
import { A11yWatch } from './a11y';

/** Collects uncaught page errors (e.g. a hydration panic); `check` fails on any. */
export function watchErrors(page: Page): { check: () => void } {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && /hydration|panicked/i.test(m.text())) errors.push(m.text());
  });
  return { check: () => expect(errors, 'uncaught errors in the page').toEqual([]) };
}

/**
 * `test` whose pages fail the test on any uncaught page error (the `page` fixture's; a
 * test that makes its own pages checks them with `watchErrors`), and in which axe
 * analyses every page state reached in any of the test's pages, with or without
 * JavaScript (see a11y.ts): the test fails at its end on any serious or critical
 * violation, listing each with its page and elements.
 */
export const test = base.extend<{ a11y: A11yWatch }>({
  a11y: [
    async ({ browser, context, javaScriptEnabled }, use, testInfo) => {
      const watch = await A11yWatch.start(browser, context, javaScriptEnabled !== false);
      await use(watch);
      await watch.finish(testInfo);
    },
    { auto: true, timeout: 60_000 },
  ],
  page: async ({ page, a11y }, use) => {
    await a11y.watchPage(page);
    const watcher = watchErrors(page);
    await use(page);
    watcher.check();
  },
});

export const PASSWORD = 'correct horse battery staple';

export function uniqueEmail(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}@example.test`;
}

/** With JavaScript, waits until the app has hydrated (it marks <body>); without, the
 *  server-rendered page is ready as soon as it is shown. */
export async function ready(page: Page): Promise<void> {
  if (base.info().project.name === 'with-js') {
    await page.locator('body[data-hydrated]').waitFor({ state: 'attached' });
  }
}

/** Signs up through the whole flow: the form, the mailed link, the password again;
 *  ends signed in on `/account`. */
export async function signUp(page: Page, name: string, email: string, password = PASSWORD): Promise<void> {
  await page.goto('/signup');
  await ready(page);
  await submitSignUp(page, name, email, password);
  await finishSignUp(page, email, password);
  await expect(page).toHaveURL(/\/account$/);
}

/** Fills and sends the sign-up form; waits for "Check your email". */
export async function submitSignUp(page: Page, name: string, email: string, password = PASSWORD): Promise<void> {
  await page.getByLabel('Display name').fill(name);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Check your email' })).toBeVisible();
}

/** Opens the link mailed to finish the sign-up of `email` and gives the password. */
export async function finishSignUp(page: Page, email: string, password = PASSWORD): Promise<void> {
  // The link may carry where the sign-up started (`?next=`).
  await page.goto(await linkInMailTo(page, email, /\/confirm-sign-up\/([0-9a-f]{64}(?:\?next=[^\s]*)?)/, '/confirm-sign-up/'));
  await ready(page);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
}

/** Waits for the new workspace's home (its slug: the name's words plus a random suffix)
 * and returns the slug. */
export async function landedOnWorkspace(page: Page, base: string): Promise<string> {
  await expect(page).toHaveURL(new RegExp(`/w/${base}-[0-9a-f]{8}$`));
  return new URL(page.url()).pathname.split('/')[2];
}

export async function signIn(page: Page, email: string, password = PASSWORD): Promise<void> {
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

const sink = process.env.FLUXI_TEST_SMTP_MESSAGES ?? 'http://127.0.0.1:2580/messages';

/** Waits for the invitation mail to reach the local SMTP sink and returns its link path.
 *  Generous: other tests may have queued many mails just before (the outbox sends ten a
 *  second). */
export async function invitationLinkFor(page: Page, email: string): Promise<string> {
  return linkInMailTo(page, email, /\/invite\/([0-9a-f]{64})/, '/invite/');
}

/** The newest password reset link sent to `email`. */
export async function resetLinkFor(page: Page, email: string): Promise<string> {
  return linkInMailTo(page, email, /\/reset-password\/([0-9a-f]{64})/, '/reset-password/');
}

/** The newest link of `path` (e.g. `/confirm-email/`) mailed to `email`. */
export async function mailedLinkFor(page: Page, email: string, path: string): Promise<string> {
  return linkInMailTo(page, email, new RegExp(`${path}([0-9a-f]{64})`), path);
}

/** Waits for `mails` links matching `pattern` in the mail to `email` and returns `prefix`
 *  plus the first group of the last match (the newest link). */
async function linkInMailTo(page: Page, email: string, pattern: RegExp, prefix: string, mails = 1): Promise<string> {
  let link = '';
  await expect
    .poll(
      async () => {
        const res = await page.request.get(`${sink}?to=${encodeURIComponent(email)}`);
        const messages: { data: string }[] = await res.json();
        // Quoted-printable: soft line breaks undone, `=XX` decoded.
        const text = messages
          .map((m) => m.data.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16))))
          .join('\n');
        const global = new RegExp(pattern.source, 'g');
        const matches = [...text.matchAll(global)];
        link = matches.length >= mails ? `${prefix}${matches[matches.length - 1][1]}` : '';
        return link;
      },
      { timeout: 60_000 },
    )
    .not.toBe('');
  return link;
}
