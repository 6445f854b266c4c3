import { expect } from '@playwright/test';
import { landedOnWorkspace, ready, signUp, test, uniqueEmail } from './helpers';

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
  await expect(page.getByRole('button', { name: 'Sign in', exact: true })).toBeEnabled();
});

test('a display name with markup is shown as text on the members page', async ({ page }) => {
  // The members table's rows are written as HTML text (app/src/workspaces/member_rows.rs):
  // this checks, in a real browser, that what a person typed as their name stays text.
  const suffix = Math.random().toString(36).slice(2, 8);
  const name = `<img src=x onerror="window.fluxiInjected=1">Eve "O'Brien" & co ${suffix}`;
  await signUp(page, name, uniqueEmail('markup'));
  await page.goto('/workspaces');
  await ready(page);
  await page.getByLabel('Workspace name').fill(`Markup ${suffix}`);
  await page.getByRole('button', { name: 'Create workspace' }).click();
  const slug = await landedOnWorkspace(page, `markup-${suffix}`);
  await page.goto(`/w/${slug}/settings/members`);
  await ready(page);
  const row = page.getByRole('row', { name });
  await expect(row.getByRole('cell').first()).toHaveText(`${name} (you)`);
  await expect(page.locator('table img')).toHaveCount(0);
  expect(await page.evaluate(() => (window as unknown as { fluxiInjected?: number }).fluxiInjected)).toBeUndefined();
});
