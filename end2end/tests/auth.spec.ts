import { expect } from '@playwright/test';
import { finishSignUp, mailedLinkFor, PASSWORD, ready, signIn, signUp, submitSignUp, test, uniqueEmail } from './helpers';

test('sign up, sign out, sign in, see the account page', async ({ page }) => {
  const email = uniqueEmail('journey');
  await signUp(page, 'Grace Hopper', email);
  await expect(page.getByRole('heading', { name: 'Your account' })).toBeVisible();
  await expect(page.getByText('Grace Hopper')).toBeVisible();
  await expect(page.getByRole('main').getByText(email)).toBeVisible();

  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login$/);
  await expect(page.getByRole('button', { name: 'Sign out' })).toHaveCount(0);
  // The browser dropped the session cookie (a `__Host-` cookie is only replaced by one
  // with the same attributes).
  const session = (await page.context().cookies()).filter((c) => c.name === '__Host-fluxi_session');
  expect(session).toEqual([]);

  await ready(page);
  await signIn(page, email.toUpperCase());
  await expect(page).toHaveURL(/\/account$/);
  await expect(page.getByText('Grace Hopper')).toBeVisible();
  await expect(page.getByRole('button', { name: 'Sign out' })).toBeVisible();
});

test('signing up with a taken address answers the same and creates nothing', async ({ page, browser, a11y }) => {
  const email = uniqueEmail('taken');
  await signUp(page, 'First Owner', email);
  const other = await (await browser.newContext()).newPage();
  await a11y.watchPage(other);
  await other.goto('/signup');
  await ready(other);
  await submitSignUp(other, 'Second Comer', email.toUpperCase());
  await expect(other.getByText('already exists')).toHaveCount(0);
  // The owner is told by mail; nothing mailed lets the second comer finish.
  const sink = process.env.FLUXI_TEST_SMTP_MESSAGES ?? 'http://127.0.0.1:2580/messages';
  await expect
    .poll(async () => {
      const res = await other.request.get(`${sink}?to=${encodeURIComponent(email)}`);
      const messages: { data: string }[] = await res.json();
      return messages.map((m) => m.data).join('\n');
    }, { timeout: 60_000 })
    .toContain('Someone tried to sign up to Fluxi with your address');
  // A wrong password on a sign-up link is refused next to the field.
  const fresh = uniqueEmail('fresh');
  await other.goto('/signup');
  await ready(other);
  await submitSignUp(other, 'Fresh Person', fresh);
  await finishSignUp(other, fresh, 'not the chosen password');
  await expect(other.getByLabel('Password')).toHaveAccessibleDescription(/not the password you chose/);
  await other.getByLabel('Password').fill(PASSWORD);
  await other.getByRole('button', { name: 'Create account' }).click();
  await expect(other).toHaveURL(/\/account$/);
  await expect(other.getByText('Fresh Person')).toBeVisible();
});

test('a wrong password is refused with a clear message', async ({ page }) => {
  const email = uniqueEmail('wrongpw');
  await signUp(page, 'Wrong Password', email);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login$/);
  await ready(page);
  await signIn(page, email, 'definitely not it!');
  await expect(page.getByRole('alert')).toHaveText('Incorrect email or password.');
  await expect(page).toHaveURL(/\/login/);
  await expect(page.getByRole('button', { name: 'Sign out' })).toHaveCount(0);
  // The email stays filled in, the password does not.
  await expect(page.getByLabel('Email')).toHaveValue(email);
  await expect(page.getByLabel('Password')).toHaveValue(/^$|definitely not it!/);
});

test('after five wrong passwords the account is blocked for a while, with a clear message', async ({ page }) => {
  const email = uniqueEmail('throttle');
  await signUp(page, 'Throttled Person', email);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login$/);
  // Each try is answered before the next one starts, so that the count is exact.
  const answered = () => page.waitForResponse((r) => r.url().includes('/api/login'));
  for (let i = 0; i < 5; i++) {
    await ready(page);
    const response = answered();
    await signIn(page, email, 'definitely not it!');
    await response;
    await expect(page.getByRole('alert')).toHaveText('Incorrect email or password.');
  }
  await ready(page);
  const response = answered();
  await signIn(page, email);
  await response;
  await expect(page.getByRole('alert')).toHaveText('Too many wrong passwords for this account. Try again in 15 minutes.');
  await expect(page.getByRole('button', { name: 'Sign out' })).toHaveCount(0);
});

test('signed-out visitors to /account sign in and come back', async ({ page }) => {
  const email = uniqueEmail('redirect');
  await signUp(page, 'Returning Person', email);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login$/);

  await page.goto('/account');
  await expect(page).toHaveURL(/\/login\?next=%2Faccount$/);
  await ready(page);
  await signIn(page, email);
  await expect(page).toHaveURL(/\/account$/);
  await expect(page.getByText('Returning Person')).toBeVisible();
});

test('sign-up errors appear next to their fields', async ({ page }) => {
  await page.goto('/signup');
  await ready(page);
  await page.getByLabel('Display name').fill('Field Errors');
  await page.getByLabel('Email').fill('not-an-email');
  await page.getByLabel('Password').fill('short');
  await page.getByRole('button', { name: 'Create account' }).click();
  const email = page.getByLabel('Email');
  const password = page.getByLabel('Password');
  await expect(email).toHaveAttribute('aria-invalid', 'true');
  await expect(email).toHaveAccessibleDescription(/valid email address/);
  await expect(password).toHaveAccessibleDescription(/at least 12 characters/);
  await expect(page.getByLabel('Display name')).toHaveValue('Field Errors');
});

test('the forms can be used with the keyboard alone', async ({ page }) => {
  const email = uniqueEmail('keyboard');
  await page.goto('/signup');
  await ready(page);
  await page.getByLabel('Display name').focus();
  await page.keyboard.type('Key Board');
  await page.keyboard.press('Tab');
  await expect(page.getByLabel('Email')).toBeFocused();
  await page.keyboard.type(email);
  await page.keyboard.press('Tab');
  await expect(page.getByLabel('Password')).toBeFocused();
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await expect(page.getByRole('status').filter({ hasText: 'Check your email' })).toBeVisible();
  await page.goto(await mailedLinkFor(page, email, '/confirm-sign-up/'));
  await ready(page);
  await page.getByLabel('Password').focus();
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await expect(page).toHaveURL(/\/account$/);
  // Focus is visible: a focused control draws an outline or ring.
  await page.getByRole('button', { name: 'Sign out' }).focus();
  const outline = await page.getByRole('button', { name: 'Sign out' }).evaluate((el) => {
    const s = getComputedStyle(el);
    return `${s.outlineStyle} ${s.boxShadow}`;
  });
  expect(outline).not.toBe('none none');
});
