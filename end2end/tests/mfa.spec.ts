import { createHmac } from 'node:crypto';
import { expect, type Page } from '@playwright/test';
import { invitationLinkFor, landedOnWorkspace, PASSWORD, ready, signIn, signUp, test, uniqueEmail, watchErrors } from './helpers';

/** RFC 6238 with the standard parameters (SHA-1, 6 digits, 30 s), as an authenticator
 *  app computes it from the text key; `steps` shifts the time by whole steps. */
function totp(textKey: string, steps = 0): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of textKey.replace(/\s/g, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const secret = Buffer.from(bits.match(/.{8}/g)!.map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30_000) + steps));
  const mac = createHmac('sha1', secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  return ((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).toString().padStart(6, '0');
}

/** Sets up an authenticator app on /account/security; returns the text key and the codes. */
async function enrol(page: Page): Promise<{ key: string; codes: string[] }> {
  await page.goto('/account/security');
  await ready(page);
  await page.getByRole('button', { name: 'Set up authenticator app' }).click();
  await expect(page.getByRole('img', { name: 'QR code for your authenticator app' })).toBeVisible();
  await ready(page);
  const key = await page.getByLabel('Text key').inputValue();
  const twoFactor = page.getByRole('region', { name: 'Two-factor authentication' });
  await twoFactor.getByLabel('Authentication code').fill(totp(key));
  await twoFactor.getByLabel('Current password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Enable two-factor authentication' }).click();
  const list = page.getByRole('list', { name: 'Recovery codes' });
  await expect(list.getByRole('listitem')).toHaveCount(10);
  const codes = await list.getByRole('listitem').allTextContents();
  await expect(page.getByRole('link', { name: 'Download' })).toBeVisible();
  return { key, codes };
}

async function signOut(page: Page): Promise<void> {
  await ready(page);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login$/);
}

test('enrol an authenticator app, sign in with a code and with a recovery code, regenerate codes', async ({ page }) => {
  const email = uniqueEmail('mfa');
  await signUp(page, 'Mia Factor', email);
  const { key, codes } = await enrol(page);
  expect(codes.every((c) => /^[0-9a-z]{5}-[0-9a-z]{5}$/.test(c))).toBe(true);
  await page.goto('/account/security');
  await expect(page.getByText('Recovery codes left: 10')).toBeVisible();
  await expect(page.getByRole('list', { name: 'Recovery codes' })).toHaveCount(0);

  // The password alone leads to the second step; the next step's code signs in (the
  // current one was used up by the set-up).
  await signOut(page);
  await ready(page);
  await signIn(page, email);
  await expect(page).toHaveURL(/\/login\/mfa$/);
  await ready(page);
  await page.getByLabel('Authentication code').fill('000000');
  await page.getByRole('button', { name: 'Verify' }).click();
  await expect(page.getByText('That code is not right')).toBeVisible();
  await ready(page);
  await page.getByLabel('Authentication code').fill(totp(key, 1));
  await page.getByRole('button', { name: 'Verify' }).click();
  await expect(page).toHaveURL(/\/account$/);

  // A recovery code instead.
  await signOut(page);
  await ready(page);
  await signIn(page, email);
  await expect(page).toHaveURL(/\/login\/mfa$/);
  await ready(page);
  await page.getByRole('link', { name: 'Use a recovery code' }).click();
  await ready(page);
  await page.getByLabel('Recovery code').fill(codes[0]);
  await page.getByRole('button', { name: 'Verify' }).click();
  await expect(page).toHaveURL(/\/account$/);

  // Regenerate (step-up with a recovery code in the code field): a new set of ten.
  await page.goto('/account/security');
  await ready(page);
  await expect(page.getByText('Recovery codes left: 9')).toBeVisible();
  const twoFactor = page.getByRole('region', { name: 'Two-factor authentication' });
  await twoFactor.getByLabel('Current password').first().fill(PASSWORD);
  await twoFactor.getByLabel('Authentication code').first().fill(codes[1]);
  await page.getByRole('button', { name: 'Regenerate recovery codes' }).click();
  const fresh = page.getByRole('list', { name: 'Recovery codes' }).getByRole('listitem');
  await expect(fresh).toHaveCount(10);
  expect((await fresh.allTextContents()).some((c) => codes.includes(c))).toBe(false);
});

test('a workspace that requires two-factor authentication leads a member without it to set it up and back', async ({ browser }) => {
  const owner = await (await browser.newContext()).newPage();
  const guest = await (await browser.newContext()).newPage();
  const watchers = [watchErrors(owner), watchErrors(guest)];
  const suffix = Math.random().toString(36).slice(2, 8);
  const guestEmail = uniqueEmail('mfa-guest');
  const ownerEmail = uniqueEmail('mfa-owner');
  await signUp(owner, 'Ora Owner', ownerEmail);
  const { key } = await enrol(owner);
  await owner.goto('/workspaces');
  await ready(owner);
  await owner.getByLabel('Workspace name').fill(`Strict ${suffix}`);
  await owner.getByRole('button', { name: 'Create workspace' }).click();
  const slug = await landedOnWorkspace(owner, `strict-${suffix}`);

  // A member joins (without two-factor authentication).
  await owner.goto(`/w/${slug}/settings/members`);
  await ready(owner);
  await owner.getByLabel('Email').fill(guestEmail);
  await owner.getByRole('button', { name: 'Send invitation' }).click();
  await expect(owner.getByRole('list', { name: 'Pending invitations' }).getByText(guestEmail)).toBeVisible();
  const link = await invitationLinkFor(owner, guestEmail);
  await signUp(guest, 'Gus Guest', guestEmail);
  await guest.goto(link);
  await ready(guest);
  await guest.getByRole('button', { name: 'Accept invitation' }).click();
  await expect(guest).toHaveURL(new RegExp(`/w/${slug}$`));

  // The owner requires it (step-up with password and code).
  await owner.goto(`/w/${slug}/settings/members`);
  await ready(owner);
  // The owner confirmed it was them (password and code) minutes ago, setting up the app:
  // within the step-up window the form asks for nothing more.
  const policy = owner.locator('form').filter({ has: owner.getByRole('button', { name: 'Require two-factor authentication' }) });
  await expect(policy.getByText("You confirmed it's you a few minutes ago")).toBeVisible();
  await expect(policy.getByLabel('Your current password')).toHaveCount(0);
  expect(key).not.toBe('');
  await policy.getByRole('button', { name: 'Require two-factor authentication' }).click();
  await expect(owner.getByRole('button', { name: 'Stop requiring two-factor authentication' })).toBeVisible();
  await expect(owner.getByRole('row', { name: 'Ora Owner' }).getByRole('cell', { name: 'On', exact: true })).toBeVisible();
  await expect(owner.getByRole('row', { name: 'Gus Guest' }).getByRole('cell', { name: 'Off', exact: true })).toBeVisible();

  // The member is led to set-up, and back.
  await guest.goto(`/w/${slug}`);
  await expect(guest.getByRole('heading', { name: 'Two-factor authentication required' })).toBeVisible();
  await ready(guest);
  await guest.getByRole('link', { name: 'Set up two-factor authentication' }).click();
  await expect(guest).toHaveURL(/\/account\/security\?next=/);
  await ready(guest);
  await guest.getByRole('button', { name: 'Set up authenticator app' }).click();
  await expect(guest.getByLabel('Text key')).toBeVisible();
  await ready(guest);
  const guestKey = await guest.getByLabel('Text key').inputValue();
  const twoFactor = guest.getByRole('region', { name: 'Two-factor authentication' });
  await twoFactor.getByLabel('Authentication code').fill(totp(guestKey));
  await twoFactor.getByLabel('Current password').fill(PASSWORD);
  await guest.getByRole('button', { name: 'Enable two-factor authentication' }).click();
  await expect(guest.getByRole('list', { name: 'Recovery codes' })).toBeVisible();
  await guest.getByRole('link', { name: 'Continue where you were' }).click();
  await expect(guest).toHaveURL(new RegExp(`/w/${slug}$`));
  await expect(guest.getByText('Your role: member')).toBeVisible();
  for (const w of watchers) w.check();
});
