import { defineConfig } from '@playwright/test';

// The server is started by scripts/test, which sets BASE_URL.
const baseURL = process.env.BASE_URL ?? 'http://localhost:3100';

const launchOptions = {
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
};

export default defineConfig({
  testDir: './tests',
  timeout: 60_000,
  expect: { timeout: 15_000 },
  fullyParallel: true,
  workers: 2,
  retries: 0,
  reporter: [['list']],
  use: { baseURL, launchOptions, trace: 'off' },
  // Every spec runs twice: hydrated (JavaScript on) and as plain HTML forms (off).
  projects: [
    { name: 'with-js', use: { javaScriptEnabled: true } },
    { name: 'no-js', use: { javaScriptEnabled: false } },
  ],
});
