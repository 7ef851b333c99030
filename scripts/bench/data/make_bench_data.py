#!/usr/bin/env python3
"""Deterministically (re)generates the benchmark inputs shared by `novapay bench` and
scripts/bench/compare-runtimes.py:
  prompt.txt  - ~500-token (SmolLM2 tokenizer) English support-style prompt, a fixed paragraph repeated
  chunks.txt  - 64 chunks of ~200 words each, one chunk per line, mixed English/Russian support text
No third-party packages needed. Usage: python scripts/bench/data/make_bench_data.py
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

PARAGRAPH = (
    "NovaPay support guide. Domestic transfers between NovaPay accounts are free, while transfers to "
    "cards of other banks cost 0.5% of the amount, with a minimum fee of 30 rubles. International "
    "transfers cost 1.5% plus a fixed fee of $2.00, and the exchange rate is locked at the moment you "
    "confirm the payment. Verified customers can send up to 150,000 rubles in a single transfer and up "
    "to 1,000,000 rubles per calendar month; unverified customers are limited to 15,000 rubles per "
    "transfer and 40,000 rubles per month. If a card payment is declined, check the expiry date, the "
    "CVV code and whether online payments are enabled in the app under Cards, then Security. Refunds "
    "are returned to the original card within three to five business days. Never share your PIN, "
    "password or one-time SMS code with anyone, including people who say they work for NovaPay."
)
PROMPT_REPEATS = 2
PROMPT_QUESTION = (
    "\n\nCustomer question: I sent 20,000 rubles to my friend's card at another bank and was charged "
    "a fee. How much was the fee, and what are my monthly limits if my account is verified? Also, how long "
    "will a refund take if the transfer is cancelled?\n\nAnswer:"
)

EN_SENTENCES = [
    "Domestic transfers between NovaPay accounts are free of charge.",
    "Transfers to cards of other banks cost {pct}% of the amount, with a minimum fee of {minfee} rubles.",
    "International transfers cost {pct2}% plus a fixed fee of ${fixed}.",
    "The exchange rate is locked at the moment you confirm the payment.",
    "Verified customers can send up to {lim} rubles in a single transfer.",
    "The monthly limit for verified accounts is {mlim} rubles.",
    "If your card payment is declined, check the expiry date and the CVV code.",
    "Refunds are usually returned to the original card within {d1} to {d2} business days.",
    "Never share your PIN, password or one-time SMS code with anyone.",
    "You can freeze your card instantly in the app under Cards, then Security.",
    "Cashback of {cb}% applies to eligible purchases above ${thr}.",
    "Business accounts get higher limits and access to the payments API.",
    "Webhooks are signed with HMAC-SHA256 so you can verify every notification.",
    "Our support team answers chats 24/7 and usually replies within {mins} minutes.",
    "A transfer marked as pending is normally completed within {hrs} hours.",
    "To dispute a charge, open the transaction and tap Report a problem.",
    "Card number {card} was added to your wallet on {date}.",
    "Contact support@novapay.com or check https://status.novapay.com for outages.",
]
RU_SENTENCES = [
    "Комиссия за внутренние переводы составляет {pctc}%.",
    "Переводы на карты других банков стоят {pctc}% от суммы, минимум {minfee} ₽.",
    "Лимит на один перевод для верифицированных клиентов — {lim} ₽.",
    "Месячный лимит составляет {mlim} ₽.",
    "Если платёж по карте отклонён, проверьте срок действия карты и код CVV.",
    "Возврат средств занимает от {d1} до {d2} рабочих дней.",
    "Никогда не сообщайте никому PIN-код, пароль или код из SMS.",
    "Карту можно мгновенно заморозить в приложении в разделе «Карты» → «Безопасность».",
    "Кэшбэк {cb}% начисляется за покупки от {thr} ₽.",
    "Служба поддержки работает круглосуточно и отвечает в течение {mins} минут.",
    "Перевод в статусе «в обработке» обычно завершается в течение {hrs} часов.",
    "Чтобы оспорить списание, откройте операцию и нажмите «Сообщить о проблеме».",
    "Ёжик оплатил подписку картой NovaPay и получил уведомление.",
    "Бизнес-счета получают повышенные лимиты и доступ к API платежей.",
]
N_CHUNKS = 64
WORDS_PER_CHUNK = 200
SEED = 20240601


def fill(s, rng):
    return s.format(
        pct=rng.choice(["0.5", "0.7", "1", "1.2"]),
        pctc=rng.choice(["0,5", "0,7", "1", "1,2"]),
        pct2=rng.choice(["1.5", "2", "2.5"]),
        minfee=rng.choice([30, 50, 100]),
        fixed=rng.choice(["2.00", "3.50", "5.00"]),
        lim=rng.choice(["15 000", "150 000", "600 000"]),
        mlim=rng.choice(["40 000", "1 000 000", "5 000 000"]),
        d1=rng.randint(1, 3), d2=rng.randint(4, 10),
        cb=rng.choice([1, 2, 5]),
        thr=rng.choice(["1,000", "5,000", "10,000"]),
        mins=rng.choice([2, 5, 10, 15]),
        hrs=rng.choice([1, 2, 24, 48]),
        card=" ".join(f"{rng.randint(0, 9999):04d}" for _ in range(4)),
        date=f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    )


def make_chunks():
    rng = random.Random(SEED)
    chunks = []
    for i in range(N_CHUNKS):
        ru_share = [0.0, 0.3, 0.6, 1.0][i % 4]  # some pure English, some pure Russian, some mixed
        words = []
        while len(words) < WORDS_PER_CHUNK:
            pool = RU_SENTENCES if rng.random() < ru_share else EN_SENTENCES
            words.extend(fill(rng.choice(pool), rng).split())
        chunks.append(" ".join(words[:WORDS_PER_CHUNK]))
    return chunks


def main():
    prompt = " ".join([PARAGRAPH] * PROMPT_REPEATS) + PROMPT_QUESTION
    with open(os.path.join(HERE, "prompt.txt"), "w", encoding="utf-8") as f:
        f.write(prompt + "\n")
    chunks = make_chunks()
    with open(os.path.join(HERE, "chunks.txt"), "w", encoding="utf-8") as f:
        for c in chunks:
            assert "\n" not in c
            f.write(c + "\n")
    print(f"prompt.txt: {len(prompt.split())} words; chunks.txt: {len(chunks)} chunks x {WORDS_PER_CHUNK} words")


if __name__ == "__main__":
    main()
