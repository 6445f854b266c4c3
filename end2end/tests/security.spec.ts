import { expect } from '@playwright/test';
import { ready, test } from './helpers';

test('injected markup cannot run script: the page allows only its own nonced scripts', async ({ page }) => {
  test.skip(test.info().project.name !== 'with-js', 'needs JavaScript');
  await page.goto('/login');
  // Hydration itself ran under the page's policy.
  await ready(page);
  const violation = page.evaluate(
    () =>
      new Promise<string>((resolve) => {
        document.addEventListener('securitypolicyviolation', (e) => resolve(e.effectiveDirective), { once: true });
      }),
  );
  // What an HTML-injection bug would insert: an event-handler attribute.
  await page.evaluate(() => {
    document.body.insertAdjacentHTML('beforeend', '<img alt="" src="/no-such-image.png" onerror="window.__injected = true">');
  });
  expect(await violation).toMatch(/^script-src/);
  expect(await page.evaluate(() => (window as unknown as { __injected?: boolean }).__injected)).toBeUndefined();
  // The app still works: the form is interactive after hydration.
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeEnabled();
});
