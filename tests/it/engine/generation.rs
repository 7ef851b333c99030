//! Generation on SmolLM2: greedy answers grounded in the context, reproducible seeded sampling, stops,
//! whole UTF-8 characters when streaming, clear errors, cancellation, and logits that do not depend on
//! how the prompt is split, on what ran before or on the thread count.

use std::ops::ControlFlow;

use novapay::assistant::prompt::{grounded_messages, Excerpt};
use novapay::assistant::testing::token_pieces;
use novapay::engine::llama::LoadOptions;
use novapay::engine::{
    ChatMessage, EngineError, FinishReason, Llm, LlmOptions, Role, SamplingParams,
};

use crate::{load_smollm2, smollm2_path};

fn run(
    llm: &mut Llm,
    prompt: &[u32],
    params: &SamplingParams,
) -> (String, Vec<String>, novapay::engine::GenerationSummary) {
    let mut pieces = Vec::new();
    let summary = llm
        .generate(prompt, params, &|| false, &mut |t| {
            pieces.push(t.to_string());
            ControlFlow::Continue(())
        })
        .expect("generation succeeds");
    (pieces.concat(), pieces, summary)
}

/// Log-probability of `continuation` after `prompt`, teacher-forced.
fn continuation_logprob(llm: &mut Llm, prompt: &[u32], continuation: &str) -> f64 {
    let tail = llm.tokenizer.encode(continuation, false).unwrap();
    let tokens: Vec<u32> = prompt.iter().chain(&tail).copied().collect();
    let rows = llm.logits_all_positions(&tokens).unwrap();
    tail.iter()
        .enumerate()
        .map(|(i, &t)| {
            let row = &rows[prompt.len() + i - 1];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
            row[t as usize] as f64 - max - sum.ln()
        })
        .sum()
}

#[test]
fn greedy_answer_quotes_the_fee_from_the_context() {
    let mut llm = load_smollm2();
    let messages = grounded_messages(
        "What is the fee for a domestic transfer?",
        &[Excerpt {
            source: "fees.md".into(),
            text:
                "NovaPay fees. Domestic transfers cost 0.5% of the amount. International transfers \
                   cost 1.5% of the amount."
                    .into(),
        }],
        &[],
    );
    let prompt = llm.encode_chat(&messages).unwrap();
    let params = SamplingParams {
        max_new_tokens: 40,
        ..SamplingParams::default()
    };
    let (answer, _, summary) = run(&mut llm, &prompt, &params);
    assert!(!answer.trim().is_empty());
    assert_eq!(summary.usage.prompt_tokens, prompt.len());
    assert!(summary.usage.completion_tokens <= 40);

    // Greedy decoding is deterministic on one host.
    let (again, _, _) = run(&mut llm, &prompt, &params);
    assert_eq!(answer, again);

    // Which words the greedy answer picks differs between CPUs (issue 25: a near tie flips with the
    // kernels' rounding); that the model reads the fee from the context does not: stating the
    // context's own fee for domestic transfers is likelier than the other line's (by about 1 nat
    // on the host this was written on; asserted with a margin well above rounding differences).
    let right = continuation_logprob(
        &mut llm,
        &prompt,
        "Domestic transfers cost 0.5% of the amount.",
    );
    let wrong = continuation_logprob(
        &mut llm,
        &prompt,
        "Domestic transfers cost 1.5% of the amount.",
    );
    eprintln!("log p: context's fee {right:.2}, the other line's {wrong:.2}");
    assert!(right > wrong + 0.25, "{right} vs {wrong} ({answer:?})");
}

#[test]
fn seeded_sampling_is_reproducible_and_differs_by_seed() {
    let mut llm = load_smollm2();
    let prompt = llm
        .encode_chat(&[ChatMessage::new(
            Role::User,
            "Write a short poem about money.",
        )])
        .unwrap();
    let params = |seed| SamplingParams {
        temperature: 1.0,
        top_p: Some(0.95),
        top_k: Some(50),
        seed,
        max_new_tokens: 24,
        ..SamplingParams::default()
    };
    let (a, _, _) = run(&mut llm, &prompt, &params(1));
    let (b, _, _) = run(&mut llm, &prompt, &params(1));
    let (c, _, _) = run(&mut llm, &prompt, &params(2));
    let (d, _, _) = run(&mut llm, &prompt, &params(3));
    assert_eq!(a, b, "same seed, same text");
    assert!(
        a != c || a != d,
        "different seeds gave identical text three times: {a:?}"
    );
}

#[test]
fn stops_at_max_new_tokens_and_at_end_of_turn() {
    let mut llm = load_smollm2();
    let prompt = llm
        .encode_chat(&[ChatMessage::new(Role::User, "Say hello.")])
        .unwrap();
    let (_, _, s) = run(
        &mut llm,
        &prompt,
        &SamplingParams {
            max_new_tokens: 3,
            ..SamplingParams::default()
        },
    );
    assert_eq!(s.finish_reason, FinishReason::Length);
    assert_eq!(s.usage.completion_tokens, 3);

    let (text, _, s) = run(
        &mut llm,
        &prompt,
        &SamplingParams {
            max_new_tokens: 200,
            ..SamplingParams::default()
        },
    );
    assert_eq!(s.finish_reason, FinishReason::Stop, "text: {text:?}");
    assert!(
        !text.contains("<|im_end|>"),
        "control tokens are not shown: {text:?}"
    );
}

#[test]
fn russian_output_streams_whole_characters() {
    let mut llm = load_smollm2();
    let prompt = llm
        .encode_chat(&[ChatMessage::new(
            Role::User,
            "Переведи на русский: \"The transfer fee is small.\" Ответь по-русски.",
        )])
        .unwrap();
    let (text, pieces, _) = run(
        &mut llm,
        &prompt,
        &SamplingParams {
            max_new_tokens: 48,
            ..SamplingParams::default()
        },
    );
    // Whether the greedy answer is Russian, and how, differs between CPUs (issue 25); what it says
    // is not asserted. A known Russian text, cut into this model's tokens: byte-level tokens split
    // its letters, and the stream decoder the engine uses never shows half of one.
    let known = "Комиссия за перевод небольшая: всего 0,5% от суммы.";
    let ids = llm.tokenizer.encode(known, false).unwrap();
    assert!(
        ids.iter()
            .any(|&id| std::str::from_utf8(llm.tokenizer.output_bytes(id)).is_err()),
        "no token of {known:?} splits a letter"
    );
    let known_pieces = token_pieces(&llm.tokenizer, known).unwrap();
    assert_eq!(known_pieces.concat(), known);
    assert!(known_pieces.len() > 5, "{known_pieces:?}");
    // Byte-level tokens split Cyrillic letters; the stream must never show half of one.
    for p in known_pieces.iter().chain(&pieces) {
        assert!(
            !p.contains('\u{FFFD}'),
            "broken character in piece {p:?} of {text:?}"
        );
    }
    // The pieces are exactly the decode of the whole sequence.
    assert_eq!(pieces.concat(), text);
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let mut opts = LlmOptions::new(smollm2_path());
    opts.load = LoadOptions {
        max_context: 64,
        ..LoadOptions::default()
    };
    let mut llm = Llm::load(&opts).unwrap();
    assert_eq!(llm.context_length(), 64);
    let prompt = llm.tokenizer.encode(&"word ".repeat(200), false).unwrap();
    let err = llm
        .generate(&prompt, &SamplingParams::default(), &|| false, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
    match err {
        EngineError::ContextOverflow { tokens, limit } => {
            assert_eq!(limit, 64);
            assert!(tokens > 64);
        }
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    // A prompt that fits but leaves little room ends with ContextFull, not a panic.
    let short = &prompt[..60];
    let s = llm
        .generate(
            short,
            &SamplingParams {
                max_new_tokens: 100,
                ignore_eos: true,
                ..SamplingParams::default()
            },
            &|| false,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(s.finish_reason, FinishReason::ContextFull);
    assert_eq!(s.usage.prompt_tokens + s.usage.completion_tokens, 65);
}

#[test]
fn caller_breaking_the_stream_stops_generation() {
    let mut llm = load_smollm2();
    let prompt = llm
        .encode_chat(&[ChatMessage::new(
            Role::User,
            "Count from one to one hundred.",
        )])
        .unwrap();
    let mut seen = 0;
    let s = llm
        .generate(
            &prompt,
            &SamplingParams {
                max_new_tokens: 200,
                ignore_eos: true,
                ..SamplingParams::default()
            },
            &|| false,
            &mut |_| {
                seen += 1;
                if seen == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
    assert_eq!(s.finish_reason, FinishReason::Cancelled);
    assert!(s.usage.completion_tokens < 10, "{:?}", s.usage);
}

#[test]
fn invalid_sampling_parameters_are_rejected() {
    let mut llm = load_smollm2();
    let bad = SamplingParams {
        top_p: Some(1.5),
        ..SamplingParams::default()
    };
    let err = llm
        .generate(&[1, 2, 3], &bad, &|| false, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidInput(_)), "{err:?}");
    let err = llm
        .generate(
            &[u32::MAX],
            &SamplingParams::default(),
            &|| false,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidInput(_)), "{err:?}");
}

// ------------------------------------------------------------------------------------ determinism
//
// A token's logits must not depend on how the prompt reached the model: in one forward pass, as a
// reused prefix plus a tail, in prefill chunks, one token at a time, after another prompt was run and
// cut back, on one thread or two. Every check compares two runs on this host, bit for bit.

/// Greedy tokens the determinism checks generate after a prompt.
const GREEDY_TOKENS: usize = 24;

/// Where the engine guarantees split invariance (the packed kernels: AVX-512 VNNI); elsewhere the
/// checks below only report.
pub(crate) fn split_invariance_guaranteed() -> bool {
    let ok = novapay::engine::packed::available();
    if !ok {
        eprintln!("no AVX-512 VNNI on this CPU: split invariance is not guaranteed, not checked");
    }
    ok
}

/// Fails unless `got` and `want` are the same bits, naming how many logits differ and by how much.
pub(crate) fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let differ: Vec<f32> = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .map(|(a, b)| (a - b).abs())
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} of {} logits differ, by up to {}",
        differ.len(),
        got.len(),
        differ.iter().copied().fold(0f32, f32::max)
    );
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The last position's logits of `prompt` in one forward pass equal, bit for bit, those of the same
/// prompt split as prefix + tail (1-token tails and prefixes, tails shorter and longer than the
/// packed kernels' 4-row units and than the old 16-row dense batch), in three passes, one token at
/// a time, and after `other` ran and was cut back to the prefix the two share.
pub(crate) fn assert_logits_independent_of_the_split(llm: &mut Llm, prompt: &[u32], other: &[u32]) {
    let n = prompt.len();
    assert!(n > 40, "a prompt long enough to split in many ways");
    llm.forget();
    let full = llm.logits_after(0, prompt).unwrap();
    let mut splits = vec![1, 2, 9, n / 2, n - 20, n - 16, n - 5, n - 4, n - 3, n - 1];
    splits.sort_unstable();
    splits.dedup();
    for split in splits {
        llm.logits_after(0, &prompt[..split]).unwrap();
        let got = llm.logits_after(split, &prompt[split..]).unwrap();
        assert_same_bits(
            &got,
            &full,
            &format!("{n}-token prompt as {split} + {} tokens", n - split),
        );
    }
    llm.logits_after(0, &prompt[..7]).unwrap();
    llm.logits_after(7, &prompt[7..n - 6]).unwrap();
    let got = llm.logits_after(n - 6, &prompt[n - 6..]).unwrap();
    assert_same_bits(&got, &full, "three passes");

    llm.forget();
    let mut got = Vec::new();
    for (i, t) in prompt.iter().enumerate() {
        got = llm.logits_after(i, &[*t]).unwrap();
    }
    assert_same_bits(&got, &full, "one token at a time");

    llm.logits_after(0, other).unwrap();
    let shared = common_prefix(other, prompt);
    assert!(shared > 0 && shared < n);
    let got = llm.logits_after(shared, &prompt[shared..]).unwrap();
    assert_same_bits(
        &got,
        &full,
        "after another prompt, cut back to the shared prefix",
    );
}

/// The greedy continuation as (token ids fed back to the cache, text) and the run's summary.
type Continuation = (Vec<u32>, String);

fn greedy(llm: &mut Llm, prompt: &[u32]) -> (Continuation, novapay::engine::GenerationSummary) {
    let params = SamplingParams {
        max_new_tokens: GREEDY_TOKENS,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let (text, _, summary) = run(llm, prompt, &params);
    let ids = llm.cached_tokens()[prompt.len()..].to_vec();
    assert_eq!(
        ids.len(),
        GREEDY_TOKENS - 1,
        "every token but the last is fed back"
    );
    ((ids, text), summary)
}

/// The same prompt gives the same greedy continuation whatever the worker ran before: from an empty
/// cache, asked again four times (the cache holds the prompt and its answer: all but the last token
/// reused), after another prompt sharing its beginning, and in 7-token prefill chunks.
pub(crate) fn assert_answer_independent_of_history(
    opts: &LlmOptions,
    prompt: &[u32],
    other: &[u32],
) {
    let mut llm = Llm::load(opts).unwrap();
    let (fresh, s) = greedy(&mut llm, prompt);
    assert_eq!(s.usage.cached_prompt_tokens, 0);
    for ask in 2..=4 {
        let (again, s) = greedy(&mut llm, prompt);
        assert_eq!(
            s.usage.cached_prompt_tokens,
            prompt.len() - 1,
            "ask {ask}: everything but the last prompt token comes from the cache"
        );
        assert_eq!(again, fresh, "ask {ask} of the same prompt");
    }
    let (_, s) = greedy(&mut llm, other);
    assert!(
        s.usage.cached_prompt_tokens > 0,
        "the other prompt reused the shared part"
    );
    let (after_other, s) = greedy(&mut llm, prompt);
    assert_eq!(
        s.usage.cached_prompt_tokens,
        common_prefix(other, prompt),
        "only the shared part is reused"
    );
    assert_eq!(after_other, fresh, "after another prompt");

    let mut chunked = Llm::load(&LlmOptions {
        prefill_chunk: 7,
        ..opts.clone()
    })
    .unwrap();
    assert_eq!(
        greedy(&mut chunked, prompt).0,
        fresh,
        "in 7-token prefill chunks"
    );
}

/// Last-position logits and the greedy continuation on one thread and on two, bit for bit.
pub(crate) fn assert_same_on_one_and_two_threads(opts: &LlmOptions, prompt: &[u32]) {
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // Forward passes on this pool rather than candle's (sized once per process).
        let opts = LlmOptions {
            pool_context: false,
            ..opts.clone()
        };
        pool.install(|| {
            let mut llm = Llm::load(&opts).unwrap();
            let logits = llm.logits_after(0, prompt).unwrap();
            let (text, _) = greedy(&mut llm, prompt);
            (logits, text)
        })
    };
    let (one, text_one) = on(1);
    let (two, text_two) = on(2);
    assert_same_bits(&two, &one, "2 threads vs 1");
    assert_eq!(text_two, text_one, "greedy text, 2 threads vs 1");
}

/// A grounded prompt of the product's shape (system part, excerpt, question) and another question
/// over the same system part.
fn grounded_pair(llm: &Llm) -> (Vec<u32>, Vec<u32>) {
    let excerpt = Excerpt {
        source: "fees.md".into(),
        text: "NovaPay fees. Domestic transfers cost 0.5% of the amount, at least 0.30 EUR. \
               International transfers cost 1.5% of the amount. Card replacement is free once a \
               year, then 5 EUR. Cash withdrawals abroad cost 2 EUR each."
            .into(),
    };
    let ask = |q: &str| {
        llm.encode_chat(&grounded_messages(q, std::slice::from_ref(&excerpt), &[]))
            .unwrap()
    };
    (
        ask("What is the fee for a domestic transfer?"),
        ask("How much does a new card cost?"),
    )
}

#[test]
fn smollm2_prompt_logits_do_not_depend_on_how_the_prompt_is_split() {
    if !split_invariance_guaranteed() {
        return;
    }
    let mut llm = load_smollm2();
    let (prompt, other) = grounded_pair(&llm);
    assert_logits_independent_of_the_split(&mut llm, &prompt, &other);
}

#[test]
fn smollm2_same_question_gives_the_same_greedy_answer_whatever_ran_before() {
    if !split_invariance_guaranteed() {
        return;
    }
    let llm = load_smollm2();
    let (prompt, other) = grounded_pair(&llm);
    drop(llm);
    assert_answer_independent_of_history(&LlmOptions::new(smollm2_path()), &prompt, &other);
}

#[test]
fn smollm2_logits_are_the_same_on_one_and_two_threads() {
    if !split_invariance_guaranteed() {
        return;
    }
    let llm = load_smollm2();
    let (prompt, _) = grounded_pair(&llm);
    drop(llm);
    assert_same_on_one_and_two_threads(&LlmOptions::new(smollm2_path()), &prompt);
}
