import { expect, type Page } from '@playwright/test';
import { invitationLinkFor, landedOnWorkspace, ready, signUp, submitSignUp, finishSignUp, test, uniqueEmail } from './helpers';

async function workspace(page: Page, who: string): Promise<string> {
  const suffix = Math.random().toString(36).slice(2, 8);
  await signUp(page, `${who} ${suffix}`, uniqueEmail(who.toLowerCase()));
  await page.goto('/workspaces');
  await ready(page);
  await page.getByLabel('Workspace name').fill(`Tools ${suffix}`);
  await page.getByRole('button', { name: 'Create workspace' }).click();
  return landedOnWorkspace(page, `tools-${suffix}`);
}

async function integrationsPage(page: Page, slug: string): Promise<void> {
  await page.goto(`/w/${slug}`);
  await ready(page);
  await page.getByRole('navigation', { name: 'Workspace' }).getByRole('link', { name: 'Integrations' }).click();
  await expect(page).toHaveURL(new RegExp(`/w/${slug}/integrations$`));
  await ready(page);
  await expect(page.getByRole('heading', { level: 1, name: 'Integrations' })).toBeVisible();
}

test('connect through the provider\'s consent page, see the account and scopes, disconnect', async ({ page }) => {
  const slug = await workspace(page, 'Connie');
  await integrationsPage(page, slug);
  const card = page.getByRole('region', { name: 'Local Identity Provider' });
  // What will be asked for, in words, before leaving.
  await expect(card.getByRole('listitem')).toHaveText([
    'Know who you are at the provider.',
    'See your email address, to show which account is connected.',
    'Read your notes.',
  ]);
  // A provider without a configured client says so instead of offering a broken button.
  await expect(page.getByRole('region', { name: 'Slack' }).getByText('Not configured by your administrator.')).toBeVisible();
  await expect(page.getByRole('region', { name: 'Slack' }).getByRole('button')).toHaveCount(0);

  await card.getByRole('button', { name: 'Connect' }).click();
  // The provider's own sign-in and consent pages (not ours: selected as they are built).
  await page.locator('input[name="login"]').fill('connie');
  await page.locator('input[name="password"]').fill('anything');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  await page.getByRole('button', { name: 'Continue' }).click();

  await expect(page).toHaveURL(new RegExp(`/w/${slug}/integrations\\?connected=1`));
  await ready(page);
  await expect(card.getByRole('status')).toHaveText('Local Identity Provider is connected.');
  await expect(card.getByText('Connected as connie@example.test')).toBeVisible();
  await expect(card.getByText('Permissions granted:')).toBeVisible();
  await expect(card.getByText('Read your notes.')).toBeVisible();

  await card.getByRole('button', { name: 'Check connection' }).click();
  await expect(card.getByRole('status')).toHaveText('The Local Identity Provider connection works.');

  await card.getByRole('button', { name: 'Disconnect' }).click();
  await expect(card.getByRole('status')).toHaveText("Disconnected. Local Identity Provider confirmed that Fluxi's access is revoked.");
  await expect(card.getByRole('button', { name: 'Connect' })).toBeVisible();
});

test('save, see masked, replace and delete an API key; a bad key is refused', async ({ page }) => {
  const slug = await workspace(page, 'Kira');
  await integrationsPage(page, slug);
  const card = page.getByRole('region', { name: 'OpenAI' });
  await card.getByLabel('API key').fill('not-a-key');
  await card.getByRole('button', { name: 'Save key' }).click();
  await expect(card.getByText('That does not look like an API key for this provider')).toBeVisible();
  await expect(card.getByLabel('API key')).toHaveAttribute('aria-invalid', 'true');

  await card.getByLabel('API key').fill('sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH');
  await card.getByRole('button', { name: 'Save key' }).click();
  await expect(card.getByRole('status')).toHaveText('Your OpenAI key was saved.');
  await expect(card.getByText('••••EFGH')).toBeVisible();
  // The key itself is never sent back to the browser.
  expect(await page.content()).not.toContain('abcdefghijklmnop');

  await card.getByLabel('API key').fill('sk-proj-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvuts');
  await card.getByRole('button', { name: 'Save key' }).click();
  await expect(card.getByRole('status')).toHaveText('Your OpenAI key was replaced.');
  await expect(card.getByText('••••vuts')).toBeVisible();

  await card.getByRole('button', { name: 'Delete key' }).click();
  await expect(card.getByRole('status')).toContainText('The key was deleted from Fluxi.');
  await expect(card.getByText('••••vuts')).toHaveCount(0);
});

test('a viewer sees the catalogue without buttons, and the server refuses the calls', async ({ browser }) => {
  const owner = await (await browser.newContext()).newPage();
  const viewer = await (await browser.newContext()).newPage();
  const slug = await workspace(owner, 'Owen');
  const viewerEmail = uniqueEmail('vera');
  await owner.goto(`/w/${slug}/settings/members`);
  await ready(owner);
  await owner.getByLabel('Email').fill(viewerEmail);
  await owner.getByLabel('Role', { exact: true }).selectOption('viewer');
  await owner.getByRole('button', { name: 'Send invitation' }).click();
  const link = await invitationLinkFor(owner, viewerEmail);
  await viewer.goto(link);
  await ready(viewer);
  await viewer.getByRole('link', { name: 'create an account' }).click();
  await expect(viewer).toHaveURL(/\/signup\?next=/);
  await ready(viewer);
  await submitSignUp(viewer, 'Vera Viewer', viewerEmail);
  await finishSignUp(viewer, viewerEmail);
  await expect(viewer).toHaveURL(new RegExp(`${link}$`));
  await ready(viewer);
  await viewer.getByRole('button', { name: 'Accept invitation' }).click();
  await expect(viewer).toHaveURL(new RegExp(`/w/${slug}$`));

  await integrationsPage(viewer, slug);
  await expect(viewer.getByText('Your role does not allow connecting them.')).toBeVisible();
  await expect(viewer.getByRole('region', { name: 'Local Identity Provider' }).getByText('Read your notes.')).toBeVisible();
  await expect(viewer.getByRole('button', { name: /^(Connect|Save key|Disconnect|Delete key|Check connection)$/ })).toHaveCount(0);
  await expect(viewer.getByLabel('API key')).toHaveCount(0);
  const origin = new URL(viewer.url()).origin;
  for (const [fn, form] of [
    ['save_api_key', { slug, provider: 'openai', api_key: 'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH' }],
    ['connect_integration', { slug, provider: 'local-idp' }],
  ] as const) {
    const res = await viewer.request.post(`/api/${fn}`, { form, headers: { Accept: 'application/json', Origin: origin } });
    expect(res.status(), fn).toBe(403);
  }
});
