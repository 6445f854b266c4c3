import { expect, type Browser, type Page } from '@playwright/test';
import { A11yWatch } from './a11y';
import {
  mailedLinkFor,
  PASSWORD,
  ready,
  resetLinkFor,
  signIn,
  signUp,
  test,
  uniqueEmail,
  watchErrors,
} from './helpers';

/** One account signed in from two browsers: it signed up in the first. */
async function signedInTwice(browser: Browser, a11y: A11yWatch, name: string, email: string): Promise<[Page, Page]> {
  const first = await (await browser.newContext()).newPage();
  const second = await (await browser.newContext()).newPage();
  for (const p of [first, second]) await a11y.watchPage(p);
  await signUp(first, name, email);
  await second.goto('/login');
  await ready(second);
  await signIn(second, email);
  await expect(second).toHaveURL(/\/account$/);
  return [first, second];
}

test('see where you are signed in, and sign another browser out', async ({ browser, a11y }) => {
  const [first, second] = await signedInTwice(browser, a11y, 'Sam Sessions', uniqueEmail('sessions'));
  const errors = [watchErrors(first), watchErrors(second)];

  await first.goto('/account/security');
  await ready(first);
  const sessions = first.getByRole('region', { name: "Where you're signed in" }).getByRole('listitem');
  await expect(sessions).toHaveCount(2);
  const mine = sessions.filter({ hasText: 'This device' });
  await expect(mine).toHaveCount(1);
  await expect(mine).toContainText('Network 127.0.0.0/24 (approximate)');
  await expect(mine).toContainText(/Chrome \d+ on Linux/);
  const other = sessions.filter({ hasNotText: 'This device' });
  await other.getByRole('button', { name: /^Sign out Chrome/ }).click();
  await expect(sessions).toHaveCount(1);
  await expect(first).toHaveURL(/\/account\/security(#sessions)?$/);

  // The other browser is signed out on its next navigation.
  await second.goto('/account');
  await expect(second).toHaveURL(/\/login\?next=%2Faccount$/);
  // This one is still signed in.
  await first.goto('/account');
  await expect(first.getByRole('heading', { name: 'Your account' })).toBeVisible();
  errors.forEach((e) => e.check());
});

test('sign out all other sessions asks for the password', async ({ browser, a11y }) => {
  const [first, second] = await signedInTwice(browser, a11y, 'Olga Others', uniqueEmail('others'));

  await first.goto('/account/security');
  await ready(first);
  const section = first.getByRole('region', { name: "Where you're signed in" });
  await section.getByRole('button', { name: 'Sign out all other sessions' }).click();
  await expect(section.getByText('Enter your current password.')).toBeVisible();
  await section.getByLabel('Current password').fill(PASSWORD);
  await section.getByRole('button', { name: 'Sign out all other sessions' }).click();
  await expect(section.getByRole('listitem')).toHaveCount(1);
  await second.goto('/account');
  await expect(second).toHaveURL(/\/login\?next=%2Faccount$/);
});

test('forgot password: reset it from the mail, then sign in with the new one', async ({ page, browser, a11y }) => {
  const email = uniqueEmail('reset');
  const NEW = 'a completely new passphrase 7';
  const other = await (await browser.newContext()).newPage();
  await a11y.watchPage(other);
  await signUp(other, 'Rita Reset', email);

  await page.goto('/login');
  await ready(page);
  await page.getByRole('link', { name: 'Forgot your password?' }).click();
  await expect(page).toHaveURL(/\/forgot-password$/);
  await ready(page);
  await page.getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Send reset link' }).click();
  await expect(page.getByRole('status')).toContainText('If an account uses that address');

  await page.goto(await resetLinkFor(page, email));
  await ready(page);
  await page.getByLabel('New password').fill('short');
  await page.getByRole('button', { name: 'Set new password' }).click();
  await expect(page.getByText('Password must be at least 12 characters.')).toBeVisible();
  await page.getByLabel('New password').fill(NEW);
  await page.getByRole('button', { name: 'Set new password' }).click();
  await expect(page).toHaveURL(/\/account$/);
  await expect(page.getByRole('heading', { name: 'Your account' })).toBeVisible();

  // The browser that was signed in before is signed out; the new password works there.
  await other.goto('/account');
  await expect(other).toHaveURL(/\/login\?next=%2Faccount$/);
  await ready(other);
  await signIn(other, email, NEW);
  await expect(other).toHaveURL(/\/account$/);
});

test('change the password on the security page', async ({ page }) => {
  const email = uniqueEmail('change');
  const NEW = 'another fresh passphrase 9';
  await signUp(page, 'Carl Change', email);
  await page.goto('/account/security');
  await ready(page);
  const section = page.getByRole('region', { name: 'Password' });
  await expect(section.getByLabel('Sign out all other sessions')).toBeChecked();
  await section.getByLabel('New password').fill(NEW);
  await section.getByRole('button', { name: 'Change password' }).click();
  await expect(section.getByText('Enter your current password.')).toBeVisible();
  await section.getByLabel('Current password').fill(PASSWORD);
  await section.getByLabel('New password').fill(NEW);
  await section.getByRole('button', { name: 'Change password' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Your password was changed.' })).toBeVisible();
});

test('change the email address, confirm it from the new mailbox, undo it from the old one', async ({ page, a11y }) => {
  const old = uniqueEmail('mover');
  const moved = uniqueEmail('moved');
  const NEW = 'the passphrase after undo 3';
  await signUp(page, 'Mia Mover', old);
  await page.goto('/account/security');
  await ready(page);
  const section = page.getByRole('region', { name: 'Email address' });
  await expect(section).toContainText(old);
  await section.getByLabel('New email address').fill(moved);
  await section.getByRole('button', { name: 'Change email address' }).click();
  await expect(section.getByText('Enter your current password.')).toBeVisible();
  await expect(section.getByLabel('New email address')).toHaveValue(moved);
  await section.getByLabel('Current password').fill(PASSWORD);
  await section.getByRole('button', { name: 'Change email address' }).click();
  await expect(section.getByRole('status')).toContainText('We sent a link to the new address');

  await page.goto(await mailedLinkFor(page, moved, '/confirm-email/'));
  await ready(page);
  await expect(page.getByText(moved)).toBeVisible();
  await page.getByRole('button', { name: 'Confirm new address' }).click();
  await expect(page).toHaveURL(/\/account\?email=changed$/);
  await expect(page.getByRole('status').filter({ hasText: 'Your email address was changed.' })).toBeVisible();
  await expect(page.locator('#email')).toContainText(moved);

  // The old mailbox's way back: a new password, and the old address again.
  const undo = await (await page.context().browser()!.newContext()).newPage();
  await a11y.watchPage(undo);
  await undo.goto(await mailedLinkFor(undo, old, '/revert-email/'));
  await ready(undo);
  await undo.getByLabel('New password').fill(NEW);
  await undo.getByRole('button', { name: 'Restore address and set password' }).click();
  await expect(undo).toHaveURL(/\/account\?email=restored$/);
  await expect(undo.locator('#email')).toContainText(old);

  // The browser that made the change is signed out.
  await page.goto('/account');
  await expect(page).toHaveURL(/\/login\?next=%2Faccount$/);
  await ready(page);
  await signIn(page, old, NEW);
  await expect(page).toHaveURL(/\/account$/);
});

test('add a passkey with the virtual authenticator, sign out, sign in with it', async ({ page }) => {
  const email = uniqueEmail('passkey');
  await signUp(page, 'Pia Passkey', email);
  await page.goto('/account/security');
  await ready(page);
  const section = page.getByRole('region', { name: 'Passkeys' });
  if (test.info().project.name === 'no-js') {
    // Passkeys need JavaScript: the page says so, and the password path stays.
    await expect(section).toContainText('Adding a passkey needs JavaScript');
    await page.goto('/login');
    await expect(page.getByText('Signing in with a passkey needs JavaScript')).toBeVisible();
    return;
  }
  // Chromium's virtual authenticator: a platform passkey with user verification.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  await expect(section).toContainText('You have no passkeys.');
  const add = section.getByRole('form', { name: 'Add a passkey' });
  await add.getByLabel('Passkey name').fill('This laptop');
  await add.getByRole('button', { name: 'Add a passkey' }).click();
  await expect(add.getByText('Enter your current password.')).toBeVisible();
  await add.getByLabel('Current password').fill(PASSWORD);
  await add.getByRole('button', { name: 'Add a passkey' }).click();
  await expect(section.getByRole('status')).toContainText('Passkey added');
  await expect(section.getByRole('list', { name: 'Your passkeys' })).toContainText('This laptop');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.goto('/login');
  await ready(page);
  await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
  await expect(page).toHaveURL(/\/account$/);
  await expect(page.getByRole('heading', { name: 'Your account' })).toBeVisible();
  await expect(page.locator('#email')).toContainText(email);
});
