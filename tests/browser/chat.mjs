// Usage: node chat.mjs <base-url> <screenshot.png> [demo]
// Opens the chat page, asks a question, waits for the streamed answer and its sources, reloads the page
// to check the conversation is kept (localStorage session), and switches the UI to Russian; rates the
// answer with the thumbs-down button.
// With "demo": only checks that the page warns that a demo model answers (in English and Russian).
// With "suggest" (a server whose gate answers nothing): the sections offered come as cards that expand
// to the section's text; "this answered my question" on the first answer's first card and "talk to
// an operator" under the second answer send feedback; the page's Markdown renders as elements, HTML
// in the text stays text, and nothing breaks the Content-Security-Policy.
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
  const violations = [];
  page.on("console", (m) => { if (/Content.Security.Policy|Refused to/i.test(m.text())) violations.push(m.text()); });
  if (mode === "suggest") {
    await page.fill("#q", "How much does a domestic transfer cost?");
    await page.click("#send");
    const first = page.locator(".msg.bot").last();
    await first.locator(".cards details.card").first().waitFor({ timeout: 120000 });
    const cards = first.locator("details.card");
    const count = await cards.count();
    if (count < 1 || count > 3) fail("cards: " + count);
    const intro = await first.locator("p").first().innerText();
    if (!intro.includes("closest")) fail("intro: " + intro);
    // Collapsed: the section's text is hidden until the card is opened.
    const card = cards.first();
    if (await card.locator(".section").isVisible()) fail("a card is open before it is clicked");
    await card.locator("summary").click();
    await card.locator(".section").waitFor({ state: "visible", timeout: 5000 });
    const section = await card.locator(".section").innerText();
    if (!section.trim()) fail("empty section text");
    if (section.includes("**") || /^#+ /m.test(section)) fail("Markdown shown raw: " + section);
    const helpedReq = page.waitForRequest((r) => r.url().endsWith("/api/v1/feedback"));
    const helpedResp = page.waitForResponse((r) => r.url().endsWith("/api/v1/feedback"));
    await card.locator('button[data-action="helped"]').click();
    const helpedBody = JSON.parse((await helpedReq).postData());
    if ((await helpedResp).status() !== 200) fail("helped feedback answered " + (await helpedResp).status());
    if (helpedBody.suggestion !== 1 || helpedBody.rating !== "up") fail("helped feedback: " + JSON.stringify(helpedBody));
    await card.locator(".thanks").waitFor({ timeout: 10000 });

    await page.fill("#q", "Как перевести деньги на карту другого банка?");
    await page.click("#send");
    await page.waitForFunction(() => document.querySelectorAll(".msg.bot .cards").length >= 2, null, { timeout: 120000 });
    const second = page.locator(".msg.bot").last();
    const opReq = page.waitForRequest((r) => r.url().endsWith("/api/v1/feedback"));
    const opResp = page.waitForResponse((r) => r.url().endsWith("/api/v1/feedback"));
    await second.locator('.cards > .actions button[data-action="operator"]').click();
    const opBody = JSON.parse((await opReq).postData());
    if ((await opResp).status() !== 200) fail("operator feedback answered " + (await opResp).status());
    if (opBody.operator !== true) fail("operator feedback: " + JSON.stringify(opBody));
    await page.locator(".msg.bot.operator").waitFor({ timeout: 10000 });
    const contacts = await page.locator(".msg.bot.operator").innerText();
    if (!contacts.includes("support@novapay.com")) fail("operator text: " + contacts);

    // The page's Markdown: elements for headings, bold and lists; HTML in the text stays text.
    const rendered = await page.evaluate(() => {
      const d = document.createElement("div");
      renderMarkdown(d, "## Комиссия за перевод\n**1,5% от суммы**, не менее *30 ₽*\n- one\n- two\n<img src=x onerror=\"window.pwned=1\">");
      document.body.appendChild(d);
      return { html: d.innerHTML, pwned: window.pwned === 1 };
    });
    for (const part of ["<h4>Комиссия за перевод</h4>", "<strong>1,5% от суммы</strong>", "<em>30 ₽</em>",
                        "<ul><li>one</li><li>two</li></ul>", "&lt;img src=x"]) {
      if (!rendered.html.includes(part)) fail("rendered Markdown lacks " + part + ": " + rendered.html);
    }
    if (rendered.pwned || rendered.html.includes("<img")) fail("HTML in the text was parsed: " + rendered.html);
    if (violations.length) fail("CSP violations: " + violations.join("; "));
    await page.screenshot({ path: shot, fullPage: true });
    console.log("OK suggest " + JSON.stringify({ cards: count, helped: helpedBody.query_id, operator: opBody.query_id }));
  } else if (mode === "demo") {
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
