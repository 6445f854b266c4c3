import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { expect, type Page } from '@playwright/test';
import { invitationLinkFor, landedOnWorkspace, PASSWORD, ready, signIn, signUp, test, uniqueEmail } from './helpers';

/** `server audit verify --export FILE` with the e2e server's key (scripts/test sets it). */
function verifyExport(file: string): string {
  const server = path.resolve(__dirname, '../../target/debug/server');
  return execFileSync(server, ['audit', 'verify', '--export', file], {
    env: { ...process.env, DATABASE_URL: process.env.FLUXI_E2E_DATABASE_URL ?? '', FLUXI_ENV: 'production' },
    encoding: 'utf8',
  });
}

async function workspaceWithHistory(page: Page): Promise<string> {
  const suffix = Math.random().toString(36).slice(2, 8);
  await signUp(page, `Audra ${suffix}`, uniqueEmail('audra'));
  await page.goto('/workspaces');
  await ready(page);
  await page.getByLabel('Workspace name').fill(`Audit ${suffix}`);
  await page.getByRole('button', { name: 'Create workspace' }).click();
  const slug = await landedOnWorkspace(page, `audit-${suffix}`);
  // Enough history for two pages: 55 invitations, sent through the server function.
  for (let i = 0; i < 55; i++) {
    const res = await page.request.post('/api/invite_member', {
      form: { slug, email: `p${i}-${suffix}@example.test`, role: 'viewer' },
      headers: { Accept: 'application/json', Origin: new URL(page.url()).origin },
    });
    expect(res.status()).toBe(200);
  }
  return slug;
}

test('an admin filters, pages, opens an event and downloads verifiable exports', async ({ page }) => {
  const slug = await workspaceWithHistory(page);
  await page.goto(`/w/${slug}`);
  await ready(page);
  await page.getByRole('navigation', { name: 'Workspace' }).getByRole('link', { name: 'Audit log' }).click();
  await expect(page).toHaveURL(new RegExp(`/w/${slug}/audit$`));
  await ready(page);
  await expect(page.getByRole('heading', { level: 1, name: 'Audit log' })).toBeVisible();
  const rows = page.getByRole('table').getByRole('row');
  await expect(rows).toHaveCount(51); // header + 50
  await expect(page.getByRole('figure').getByRole('img', { name: 'Events per day' })).toBeVisible();

  // Older, then Newer: back to the same first row.
  // The target cell names each invitation by its id: it tells rows apart.
  const firstTarget = rows.nth(1).getByRole('cell').nth(3);
  const firstRow = (await firstTarget.textContent()) ?? '';
  await page.getByRole('link', { name: 'Older' }).click();
  await expect(page).toHaveURL(/before=\d+/);
  await expect(firstTarget).not.toHaveText(firstRow);
  await page.getByRole('link', { name: 'Newer' }).click();
  await expect(page).toHaveURL(/after=\d+/);
  await expect(firstTarget).toHaveText(firstRow);

  // Filter by action and date (today, UTC).
  const today = new Date().toISOString().slice(0, 10);
  await page.getByLabel('Action', { exact: true }).selectOption('workspace.created');
  await page.getByLabel('From', { exact: true }).fill(today);
  await page.getByLabel('To', { exact: true }).fill(today);
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(page).toHaveURL(/action=workspace\.created/);
  await expect(rows).toHaveCount(2);
  await expect(rows.nth(1)).toContainText('Created the workspace');

  // One event's details.
  await page.getByRole('link', { name: /^Details of event 1/ }).click();
  const detail = page.getByRole('region', { name: 'Event 1' });
  await expect(detail).toContainText('workspace.created');
  await expect(detail).toContainText('Hash');

  // Exports of the current filter: they parse and verify.
  for (const [label, ext] of [['Export CSV', 'csv'], ['Export JSON Lines', 'jsonl']]) {
    const download = page.waitForEvent('download');
    await page.getByRole('link', { name: label }).click();
    const file = test.info().outputPath(`audit.${ext}`);
    await (await download).saveAs(file);
    expect(verifyExport(file)).toContain('intact, 1 events');
  }
});


test('a member is refused the audit log; a person sees their own sign-ins', async ({ page, browser }) => {
  // 110 invitation mails (this test's and its neighbour's) are queued ahead of the member's.
  test.setTimeout(120_000);
  const slug = await workspaceWithHistory(page);
  const email = uniqueEmail('member');
  const res = await page.request.post('/api/invite_member', {
    form: { slug, email, role: 'member' },
    headers: { Accept: 'application/json', Origin: new URL(page.url()).origin },
  });
  expect(res.status()).toBe(200);
  const member = await (await browser.newContext()).newPage();
  await signUp(member, 'Mona Member', email);
  await member.goto(await invitationLinkFor(page, email));
  await ready(member);
  await member.getByRole('button', { name: 'Accept invitation' }).click();
  await expect(member).toHaveURL(new RegExp(`/w/${slug}$`));
  await expect(member.getByText('Your role: member')).toBeVisible();
  await expect(member.getByRole('link', { name: 'Audit log' })).toHaveCount(0);
  const refused = await member.goto(`/w/${slug}/audit`);
  expect(refused?.status()).toBe(404);
  await expect(member.getByRole('heading', { name: 'Workspace not found' })).toBeVisible();

  // Own activity: a failed and a successful sign-in, newest first.
  await member.getByRole('button', { name: 'Sign out' }).click();
  await expect(member.getByRole('button', { name: 'Sign out' })).toHaveCount(0);
  await member.goto('/login');
  await ready(member);
  await signIn(member, email, 'not the password at all');
  await expect(member.getByRole('alert')).toHaveText('Incorrect email or password.');
  await signIn(member, email, PASSWORD);
  await expect(member).toHaveURL(/\/account$/);
  await ready(member);
  await member.getByRole('link', { name: 'Your account activity' }).click();
  await expect(member).toHaveURL(/\/account\/activity$/);
  await ready(member);
  const rows = member.getByRole('table').getByRole('row');
  await expect(rows.nth(1)).toContainText('Signed in');
  await expect(rows.nth(2)).toContainText('Sign-in failed');
});
