import { expect, type Page } from '@playwright/test';
import {
  finishSignUp,
  invitationLinkFor,
  landedOnWorkspace,
  ready,
  signUp,
  submitSignUp,
  test,
  uniqueEmail,
  watchErrors,
} from './helpers';

test('create a workspace, invite, accept, change role, read-only view, remove', async ({ browser }) => {
  const owner = await (await browser.newContext()).newPage();
  const guest = await (await browser.newContext()).newPage();
  const watchers = [watchErrors(owner), watchErrors(guest)];
  const suffix = Math.random().toString(36).slice(2, 8);
  const guestName = `Guest ${suffix}`;
  const guestEmail = uniqueEmail('guest');

  // The owner creates a workspace and lands on its home.
  await signUp(owner, 'Olive Owner', uniqueEmail('owner'));
  await owner.getByRole('link', { name: 'Workspaces' }).click();
  await expect(owner).toHaveURL(/\/workspaces$/);
  await ready(owner);
  await owner.getByLabel('Workspace name').fill(`Team ${suffix}`);
  await owner.getByRole('button', { name: 'Create workspace' }).click();
  const slug = await landedOnWorkspace(owner, `team-${suffix}`);
  await expect(owner.getByRole('heading', { level: 1, name: `Team ${suffix}` })).toBeVisible();
  await expect(owner.getByText('Your role: owner')).toBeVisible();
  await expect(owner.getByRole('navigation', { name: 'Workspace switcher' })).toBeVisible();

  // It invites the guest as a member.
  await owner.getByRole('link', { name: 'Members' }).click();
  await expect(owner).toHaveURL(/\/settings\/members$/);
  await ready(owner);
  await owner.getByLabel('Email').fill(guestEmail);
  await owner.getByLabel('Role', { exact: true }).selectOption('member');
  await owner.getByRole('button', { name: 'Send invitation' }).click();
  const pending = owner.getByRole('list', { name: 'Pending invitations' });
  await expect(pending.getByText(guestEmail)).toBeVisible();
  // The form is ready for the next invitation.
  await expect(owner.getByLabel('Email')).toHaveValue('');

  // The guest gets the mail, signs up with that address and accepts.
  const link = await invitationLinkFor(owner, guestEmail);
  // The pending invitation now says its mail went out (recorded just after delivery).
  await expect(async () => {
    await owner.reload();
    await expect(pending.getByRole('listitem').filter({ hasText: guestEmail })).toContainText('mail sent', { timeout: 500 });
  }).toPass();
  // Signed out, the invitation page offers to create an account; once the mailed link
  // finishes the sign-up, the guest is back on the invitation.
  await guest.goto(link);
  await ready(guest);
  await expect(guest.getByText(`You are invited to join Team ${suffix} as member.`)).toBeVisible();
  await guest.getByRole('link', { name: 'create an account' }).click();
  await expect(guest).toHaveURL(/\/signup\?next=/);
  await ready(guest);
  await submitSignUp(guest, guestName, guestEmail);
  await finishSignUp(guest, guestEmail);
  await expect(guest).toHaveURL(new RegExp(`${link}$`));
  await ready(guest);
  await guest.getByRole('button', { name: 'Accept invitation' }).click();
  await expect(guest).toHaveURL(new RegExp(`/w/${slug}$`));
  await expect(guest.getByText('Your role: member')).toBeVisible();
  await expect(guest.getByRole('button', { name: 'Add note' })).toBeVisible();

  // The owner makes the guest a viewer. With JavaScript the row forms are handled in the
  // page (one listener on the table), so the page is not loaded again.
  const withJs = test.info().project.name === 'with-js';
  const markPage = () => owner.evaluate(() => ((window as unknown as { fluxiMark: number }).fluxiMark = 1));
  const pageStayed = () => owner.evaluate(() => (window as unknown as { fluxiMark?: number }).fluxiMark === 1);
  await owner.reload();
  await ready(owner);
  if (withJs) await markPage();
  const row = owner.getByRole('row', { name: guestName });
  await row.getByLabel(`Role for ${guestName}`).selectOption('viewer');
  await row.getByRole('button', { name: 'Change role' }).click();
  await expect(owner.getByRole('row', { name: guestName }).getByRole('cell', { name: 'viewer', exact: true })).toBeVisible();
  if (withJs) expect(await pageStayed()).toBe(true);

  // The guest now has a read-only view: no controls they cannot use.
  await guest.reload();
  await expect(guest.getByText('Your role: viewer')).toBeVisible();
  await expect(guest.getByText('You have read-only access to this workspace.')).toBeVisible();
  await expect(guest.getByRole('button', { name: 'Add note' })).toHaveCount(0);
  await guest.getByRole('link', { name: 'Members' }).click();
  await expect(guest.getByRole('button', { name: 'Send invitation' })).toHaveCount(0);
  await expect(guest.getByRole('button', { name: 'Remove' })).toHaveCount(0);

  // The owner removes the guest, who can no longer see the workspace.
  await owner.reload();
  await ready(owner);
  if (withJs) await markPage();
  await owner.getByRole('row', { name: guestName }).getByRole('button', { name: 'Remove' }).click();
  await expect(owner.getByRole('row', { name: guestName })).toHaveCount(0);
  if (withJs) expect(await pageStayed()).toBe(true);
  await guest.goto(`/w/${slug}`);
  await expect(guest.getByRole('heading', { name: 'Workspace not found' })).toBeVisible();
  for (const w of watchers) w.check();
});

test('pages hydrate from the data the server sent, without loading it again', async ({ page }) => {
  test.skip(test.info().project.name !== 'with-js', 'hydration needs JavaScript');
  const suffix = Math.random().toString(36).slice(2, 8);
  await signUp(page, 'Hydra Owner', uniqueEmail('hydra'));
  await page.goto('/workspaces');
  await ready(page);
  await page.getByLabel('Workspace name').fill(`Hydra ${suffix}`);
  await page.getByRole('button', { name: 'Create workspace' }).click();
  const slug = await landedOnWorkspace(page, `hydra-${suffix}`);

  // Server functions called by the browser from here on: a resource whose embedded value
  // the browser could not decode would be fetched again after hydration.
  const calls: string[] = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (path.startsWith('/api/')) calls.push(`${path} (on ${new URL(page.url()).pathname})`);
  });
  for (const path of [`/w/${slug}/settings/members`, `/w/${slug}`, '/workspaces', '/account']) {
    await page.goto(path);
    await ready(page);
    await expect(page.getByRole('heading', { level: 1 }).first()).toBeVisible();
  }
  expect(calls).toEqual([]);
});

test('workspaces can be created and members invited with the keyboard alone', async ({ page }) => {
  const suffix = Math.random().toString(36).slice(2, 8);
  const invitee = uniqueEmail('keys');
  await signUp(page, 'Keyboard Owner', uniqueEmail('keyowner'));
  await page.goto('/workspaces');
  await ready(page);
  await page.getByLabel('Workspace name').focus();
  await page.keyboard.type(`Keys ${suffix}`);
  await page.keyboard.press('Tab');
  await expect(page.getByRole('button', { name: 'Create workspace' })).toBeFocused();
  await page.keyboard.press('Enter');
  const slug = await landedOnWorkspace(page, `keys-${suffix}`);

  await page.goto(`/w/${slug}/settings/members`);
  await ready(page);
  await page.getByLabel('Email').focus();
  await page.keyboard.type(invitee);
  await page.keyboard.press('Tab');
  const role = page.getByLabel('Role', { exact: true });
  await expect(role).toBeFocused();
  // A focused select draws an outline or ring.
  const focusStyle = await role.evaluate((el) => `${getComputedStyle(el).outlineStyle} ${getComputedStyle(el).boxShadow}`);
  expect(focusStyle).not.toBe('none none');
  await page.keyboard.press('Tab');
  await expect(page.getByRole('button', { name: 'Send invitation' })).toBeFocused();
  await page.keyboard.press('Enter');
  await expect(page.getByRole('list', { name: 'Pending invitations' }).getByText(invitee)).toBeVisible();
  await expect(page.getByRole('button', { name: `Revoke invitation for ${invitee}` })).toBeVisible();
});
