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
