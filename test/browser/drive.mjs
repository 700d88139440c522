// Drives web/index.html in headless Chromium for test/browser.bats.
// usage: node drive.mjs SCENARIO PAGE_URL [--ws WS_URL] [--count N] [--shot PNG] [--script STEPS]
// Prints "KEY: value" lines for the bats test to check; exits 1 when a wait times out.
// With PW_ENDPOINT set (see serve.mjs) it opens a new context in that browser, otherwise it
// starts its own Chromium with a fresh temporary profile.
import { chromium } from 'playwright-core';
import { ARGS } from './chromium.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [scenario, pageUrl, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i + 1 < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = rest[i + 1];
const out = (k, v) => console.log(`${k}: ${v}`);
const watchdog = setTimeout(() => { out('TIMEOUT', 'watchdog (120 s)'); process.exit(2); }, 120_000);

let profile, browser, ctx;
let failed = false;

const text = (page, sel) => page.locator(sel).textContent();
async function waitState(page, want, ms = 15_000) {
	try {
		await page.waitForFunction(w => document.getElementById('status').dataset.state === w, want, { timeout: ms });
		return true;
	} catch {
		failed = true;
		out('WAIT-FAILED', `status did not become ${want} within ${ms} ms`);
		return false;
	}
}
async function report(page) {
	out('STATUS', await text(page, '#status'));
	for (const id of ['sent', 'recv', 'out', 'lost', 'bad']) out(`COUNT-${id}`, await text(page, `#c-${id}`));
}
// Clicks Send One Message, waits for the reply, prints the log lines that appeared.
async function sendOne(page) {
	const before = await page.locator('#log > div').count();
	await page.click('#send');
	await page.waitForFunction(n => {
		const L = document.getElementById('log');
		return L.childElementCount >= n + 2 && document.getElementById('c-out').textContent === '0';
	}, before, { timeout: 10_000 });
	const lines = await page.locator('#log > div').allTextContents();
	for (const l of lines.slice(before)) out('LOG', l);
}
async function burst(page, n) {
	if (n) await page.fill('#count', String(n));
	out('BUTTON', await text(page, '#burst'));
	await page.click('#burst');
	await page.waitForFunction(() => document.getElementById('summary').dataset.state === 'done', null,
		{ timeout: 60_000, polling: 250 });
	out('SUMMARY', await text(page, '#summary'));
	out('LOG-LINES', await page.locator('#log > div').count());
	out('FOLDED', await text(page, '#folded'));
}

// Console mode: STEPS, '|'-separated, run in order: "wait N" waits until N replies are shown
// in all, "send TEXT" types TEXT and clicks Send One Message.
async function consoleScript(page, steps) {
	const shown = () => page.locator('#log > div', { hasText: /^Received: / }).count();
	for (const step of steps.split('|').filter(Boolean)) {
		const [word, ...rest] = step.split(' ');
		if (word === 'send') {
			await page.fill('#msg', rest.join(' '));
			await page.click('#send');
		} else if (word === 'wait') {
			const n = Number(rest[0]);
			try {
				await page.waitForFunction(k => [...document.querySelectorAll('#log > div')]
					.filter(d => d.textContent.startsWith('Received: ')).length >= k, n, { timeout: 10_000 });
			} catch {
				failed = true;
				out('WAIT-FAILED', `${n} replies not shown within 10 s (${await shown()} shown)`);
				return;
			}
		} else throw new Error(`unknown console step ${step}`);
	}
	// nothing more comes within half a second
	await page.waitForTimeout(500);
}

try {
	const viewport = { width: 900, height: 1100 };
	if (process.env.PW_ENDPOINT) {
		browser = await chromium.connect(process.env.PW_ENDPOINT, { timeout: 30_000 });
		ctx = await browser.newContext({ viewport });
	} else {
		profile = mkdtempSync(join(tmpdir(), 'wsfilter-chromium-'));
		ctx = await chromium.launchPersistentContext(profile, {
			executablePath: '/usr/bin/chromium', headless: true, args: ARGS, viewport });
	}
	const page = ctx.pages()[0] || await ctx.newPage();
	page.on('console', m => { if (m.type() === 'error' || m.type() === 'warning') out('CONSOLE', `${m.type()} ${m.text()}`); });
	page.on('pageerror', e => out('PAGE-ERROR', e.message));
	await page.goto(pageUrl);

	switch (scenario) {
	case 'open':
		await waitState(page, 'open');
		await report(page);
		out('URL-FIELD', await page.inputValue('#url'));
		out('SEND-DISABLED', await page.isDisabled('#send'));
		break;
	case 'send':
		if (await waitState(page, 'open')) await sendOne(page);
		await report(page);
		break;
	case 'burst':
		if (await waitState(page, 'open')) {
			await burst(page, opt.count);
			if (opt.shot) {
				await page.screenshot({ path: opt.shot, fullPage: true });
				await page.setViewportSize({ width: 390, height: 844 });
				await page.screenshot({ path: opt.shot.replace(/\.png$/, '-phone.png'), fullPage: true });
			}
		}
		await report(page);
		break;
	case 'file':
		// The page first tries its default URL; wait until that attempt is over, whatever it gives.
		await page.waitForFunction(() => document.getElementById('status').dataset.state !== 'connecting', null, { timeout: 15_000 });
		out('FIRST-STATUS', await text(page, '#status'));
		if ((await text(page, '#connect')) === 'Disconnect') {
			await page.click('#connect');
			await waitState(page, 'closed');
		}
		out('DEFAULT-URL', await page.inputValue('#url'));
		await page.fill('#url', opt.ws);
		await page.click('#connect');
		if (await waitState(page, 'open')) await sendOne(page);
		await report(page);
		break;
	case 'reconnect':
		if (await waitState(page, 'open')) {
			out('BUTTON', await text(page, '#connect'));
			await page.click('#connect');
			if (await waitState(page, 'closed')) {
				out('CLOSED-STATUS', await text(page, '#status'));
				out('SEND-DISABLED', await page.isDisabled('#send'));
				out('BUTTON', await text(page, '#connect'));
				await page.click('#connect');
				if (await waitState(page, 'open')) await sendOne(page);
			}
		}
		await report(page);
		break;
	case 'mismatch':
		if (await waitState(page, 'open')) {
			await sendOne(page);
			out('MISMATCHED-AFTER-FIRST', await text(page, '#c-bad'));
			await page.check('#echo');
			await sendOne(page);
		}
		await report(page);
		break;
	case 'console':
		// --ws: the page's own connection (to its default URL) first, whatever it gives; then the
		// URL typed, console mode ticked, Connect. Without it the page's link chose both.
		if (opt.ws) {
			await page.waitForFunction(() => document.getElementById('status').dataset.state !== 'connecting', null, { timeout: 15_000 });
			out('FIRST-STATUS', await text(page, '#status'));
			if ((await text(page, '#connect')) === 'Disconnect') {
				await page.click('#connect');
				await waitState(page, 'closed');
			}
			await page.fill('#url', opt.ws);
			await page.check('#console');
			await page.click('#connect');
		}
		out('URL-FIELD', await page.inputValue('#url'));
		out('CONSOLE-MODE', await page.isChecked('#console'));
		if (await waitState(page, 'open')) await consoleScript(page, opt.script || '');
		for (const l of await page.locator('#log > div').allTextContents()) out('LOG', l);
		out('BURST-DISABLED', await page.isDisabled('#burst'));
		await report(page);
		break;
	case 'stop':
		if (await waitState(page, 'open')) {
			out('READY', 'stop the server now');
			await waitState(page, 'closed', 30_000);
		}
		await report(page);
		out('BUTTON', await text(page, '#connect'));
		out('SEND-DISABLED', await page.isDisabled('#send'));
		break;
	default:
		throw new Error(`unknown scenario ${scenario}`);
	}
} catch (e) {
	failed = true;
	out('ERROR', e.message.split('\n')[0]);
} finally {
	if (ctx) await ctx.close().catch(() => {});
	if (browser) await browser.close().catch(() => {});
	if (profile) rmSync(profile, { recursive: true, force: true });
	clearTimeout(watchdog);
}
process.exit(failed ? 1 : 0);
