// Drives the dashboard in headless Debian chromium through playwright-core and prints, as one JSON line,
// what the page showed. Usage: node tests/ui/dashboard.mjs BASE_URL SERVER_KEY SCREENSHOT_PATH
//
// Steps: open /ui (the key form appears), submit a wrong key (refused), submit the right key, wait for
// two refreshes, read the cards, the profile rows and their workers, the quota box, the token tables and
// the recent requests; reload the tab (the key is kept in sessionStorage, no form); take a full-page
// screenshot. The Rust test compares the figures with /metrics and the ledger.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [baseUrl, serverKey, screenshotPath] = process.argv.slice(2);
if (!baseUrl || !serverKey || !screenshotPath) {
  console.error("usage: node tests/ui/dashboard.mjs BASE_URL SERVER_KEY SCREENSHOT_PATH");
  process.exit(2);
}

const profileDir = mkdtempSync(join(tmpdir(), "dashboard-chromium-"));
// A fresh profile directory per run (playwright passes it as --user-data-dir).
const context = await chromium.launchPersistentContext(profileDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ],
});
const report = { console_errors: [] };
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (message) => {
    if (message.type() === "error") report.console_errors.push(message.text());
  });
  page.on("pageerror", (error) => report.console_errors.push(String(error)));
  page.setDefaultTimeout(15000);

  await page.goto(`${baseUrl}/ui`);
  await page.locator("#login").waitFor({ state: "visible" });
  report.form_first = true;

  // A wrong key is refused and forgotten.
  await page.fill("#key", "wrong-key");
  await page.click("#login button[type=submit]");
  await page.waitForFunction(() => document.querySelector("[data-testid=login-error]").textContent.length > 0);
  report.wrong_key_message = await page.textContent("[data-testid=login-error]");
  report.wrong_key_dashboard_hidden = await page.isHidden("#dashboard");
  report.wrong_key_stored = await page.evaluate(() => sessionStorage.getItem("codex-api-proxy.key"));

  // The right key opens the dashboard.
  await page.fill("#key", serverKey);
  await page.click("#login button[type=submit]");
  await page.locator("#dashboard").waitFor({ state: "visible" });
  const tick = async () => Number(await page.evaluate(() => document.body.dataset.tick || "0"));
  const start = await tick();
  await page.waitForFunction((n) => Number(document.body.dataset.tick || "0") >= n + 2, start);
  await page.waitForFunction(() => !document.querySelector("[data-testid=quota]").textContent.includes("loading"));
  report.ticks_in_3s = await (async () => {
    const before = await tick();
    await page.waitForTimeout(3000);
    return (await tick()) - before;
  })();

  report.page = await page.evaluate(() => {
    const text = (selector) => document.querySelector(selector).textContent.trim();
    const parse = (value) => Number(String(value).replace(/,/g, ""));
    const rows = (testid) =>
      [...document.querySelectorAll(`[data-testid=${testid}] tbody tr`)].map((row) => ({
        group: row.dataset.group,
        requests: parse(row.querySelector("[data-field=requests]").textContent),
        prompt_tokens: parse(row.querySelector("[data-field=prompt_tokens]").textContent),
        completion_tokens: parse(row.querySelector("[data-field=completion_tokens]").textContent),
      }));
    const profiles = {};
    for (const row of document.querySelectorAll("#profiles tbody tr")) {
      const field = (name) => row.querySelector(`[data-field=${name}]`).textContent;
      profiles[row.dataset.profile] = {
        engine: field("engine"),
        in_flight: parse(field("in_flight")),
        queued: parse(field("queued")),
        requests: parse(field("requests")),
        ok: parse(field("ok")),
        errors: parse(field("errors")),
        tokens: parse(field("tokens")),
        workers: [...row.querySelectorAll(".worker")].map((worker) => ({
          pid: worker.dataset.pid ? Number(worker.dataset.pid) : null,
          state: worker.dataset.state,
          restarts: Number(worker.dataset.restarts),
          turns: Number(worker.dataset.turns),
        })),
      };
    }
    return {
      requests_total: parse(text("[data-testid=requests-total]")),
      requests_ok: parse(text("[data-testid=requests-ok]")),
      requests_error: parse(text("[data-testid=requests-error]")),
      in_flight: parse(text("[data-testid=in-flight]")),
      queued: parse(text("[data-testid=queued]")),
      config_generation: parse(text("[data-testid=config-generation]")),
      ledger_dropped: Number(document.querySelector("[data-testid=ledger]").dataset.dropped),
      quota: text("[data-testid=quota]"),
      profiles,
      tokens_profile: rows("tokens-profile"),
      tokens_key: rows("tokens-key"),
      tokens_day: rows("tokens-day"),
      recent: [...document.querySelectorAll("#recent tbody tr")].map((row) => ({
        request_id: row.dataset.requestId,
        status: row.querySelector("[data-field=status]").textContent,
        profile: row.querySelector("[data-field=profile]").textContent,
        key_name: row.querySelector("[data-field=key_name]").textContent,
      })),
      rps_path: document.querySelector("#chart-rps path").getAttribute("d"),
      latency_paths: [...document.querySelectorAll("#chart-latency path")].map((path) => path.getAttribute("d")),
      body_text: document.body.innerText,
    };
  });

  // The filter narrows the profile table without a refetch.
  await page.fill("#filter", "fast");
  report.filtered_rows = await page.locator("#profiles tbody tr").count();
  await page.fill("#filter", "");

  // A reload keeps the key for the tab's session: no form.
  await page.reload();
  await page.locator("#dashboard").waitFor({ state: "visible" });
  report.form_after_reload = await page.isVisible("#login");

  await page.waitForFunction(() => Number(document.body.dataset.tick || "0") >= 1);
  await page.screenshot({ path: screenshotPath, fullPage: true });
  report.screenshot = screenshotPath;
} catch (error) {
  console.error("page console errors:", JSON.stringify(report.console_errors));
  for (const page of context.pages()) {
    console.error("page status:", await page.textContent("#status").catch(String));
  }
  throw error;
} finally {
  await context.close();
  rmSync(profileDir, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
