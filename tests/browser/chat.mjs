// Usage: node chat.mjs <base-url> <screenshot.png> [demo]
// Opens the chat page, asks a question, waits for the streamed answer and its sources, reloads the page
// to check the conversation is kept (localStorage session), and switches the UI to Russian; rates the
// answer with the thumbs-down button.
// With "demo": only checks that the page warns that a demo model answers (in English and Russian).
import { chromium } from "playwright-core";

const [base, shot, mode] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ locale: "en-US" });
  const tokens = [];
  page.on("response", (r) => { if (r.url().endsWith("/api/v1/query")) tokens.push(r.headers()["content-type"]); });
  // The page asks /health whether a demo model answers; its banner shows only then.
  const health = page.waitForResponse((r) => r.url().endsWith("/health"));
  await page.goto(base + "/");
  await health;
  const banner = page.locator("#demo");
  if (mode === "demo") {
    await banner.waitFor({ state: "visible", timeout: 10000 });
    const en = await banner.innerText();
    if (!en.includes("Demo model: answers are not reliable")) fail("demo banner text: " + en);
    await page.selectOption("#lang", "ru");
    const ru = await banner.innerText();
    if (!ru.includes("Демо-модель: ответы ненадёжны")) fail("Russian demo banner text: " + ru);
    await page.screenshot({ path: shot, fullPage: true });
    console.log("OK demo banner: " + JSON.stringify(en));
  } else {
    await page.fill("#q", "How much does a domestic transfer cost?");
    await page.click("#send");
    // The bot bubble fills while streaming; the sources box appears with the final event.
    await page.waitForSelector(".msg.bot details.sources", { timeout: 120000 });
    const answer = await page.locator(".msg.bot").last().innerText();
    if (!answer.includes("0.5")) fail("answer without the fee: " + answer);
    if (!answer.includes("fees-and-limits.md")) fail("sources not shown: " + answer);
    if (!tokens.some((t) => t && t.startsWith("text/event-stream"))) fail("the answer was not streamed: " + tokens);
    // Thumbs down under the answer: the rating is sent with the answer's query_id.
    const last = page.locator(".msg.bot").last();
    const rated = page.waitForResponse((r) => r.url().endsWith("/api/v1/feedback"));
    await last.locator('.rate button[data-rating="down"]').click();
    const feedback = await rated;
    if (feedback.status() !== 200) fail("feedback answered " + feedback.status());
    await last.locator(".rate", { hasText: "Thank you" }).waitFor({ timeout: 10000 });
    const session = await page.evaluate(() => localStorage.getItem("novapay.session"));
    if (!session) fail("no session kept in localStorage");

    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll(".msg").length >= 2, null, { timeout: 30000 });
    const history = await page.locator(".msg.me").first().innerText();
    if (!history.includes("domestic transfer")) fail("conversation not restored after reload: " + history);

    await page.selectOption("#lang", "ru");
    const send = await page.locator("#send").innerText();
    if (send !== "Отправить") fail("Russian UI not applied: " + send);
    if (await banner.isVisible()) fail("the demo banner is shown although the product's model answers");
    await page.screenshot({ path: shot, fullPage: true });
    console.log("OK " + JSON.stringify({ answer: answer.slice(0, 120), session }));
  }
} finally {
  await browser.close();
}
