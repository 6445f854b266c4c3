import { expect, test as base, type Page } from '@playwright/test';

/** Collects uncaught page errors (e.g. a hydration panic); `check` fails on any. */
export function watchErrors(page: Page): { check: () => void } {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && /hydration|panicked/i.test(m.text())) errors.push(m.text());
  });
  return { check: () => expect(errors, 'uncaught errors in the page').toEqual([]) };
}

/** `test` whose `page` fails the test on any uncaught page error. */
export const test = base.extend({
  page: async ({ page }, use) => {
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

export async function signUp(page: Page, name: string, email: string, password = PASSWORD): Promise<void> {
  await page.goto('/signup');
  await ready(page);
  await page.getByLabel('Display name').fill(name);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await expect(page).toHaveURL(/\/account$/);
}

export async function signIn(page: Page, email: string, password = PASSWORD): Promise<void> {
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}
