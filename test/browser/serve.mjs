// Starts one headless Chromium for the whole of test/browser.bats and writes its playwright
// endpoint to the file named by argv[2] (and Chromium's pid, which leads its own process group,
// to argv[2].browser-pid). Playwright gives the browser a fresh temporary profile
// and closes it on SIGTERM. Gives up by itself after 15 minutes.
import { chromium } from 'playwright-core';
import { writeFileSync, renameSync } from 'node:fs';
import { ARGS } from './chromium.mjs';

const server = await chromium.launchServer({ executablePath: '/usr/bin/chromium', headless: true, args: ARGS });
writeFileSync(process.argv[2] + '.browser-pid', String(server.process().pid));
writeFileSync(process.argv[2] + '.tmp', server.wsEndpoint());
renameSync(process.argv[2] + '.tmp', process.argv[2]);
setTimeout(async () => { await server.close(); process.exit(3); }, 15 * 60_000);
