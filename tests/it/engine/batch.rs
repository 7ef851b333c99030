//! Batched decoding on SmolLM2: sequences advanced together in one forward pass get exactly the
//! greedy tokens they get alone, whatever their lengths and whenever they joined the batch.

use std::ops::ControlFlow;

use novapay::engine::{ChatMessage, FinishReason, Llm, Role, SamplingParams, Sequence};

use crate::load_smollm2;

const TOKENS: usize = 6;

fn params() -> SamplingParams {
    SamplingParams {
        max_new_tokens: TOKENS,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

fn prompts(llm: &Llm) -> Vec<Vec<u32>> {
    [
        "What is the fee for an international transfer?",
        "Count from one to ten, please, and then say goodbye in French.",
        "Hi",
    ]
    .iter()
    .map(|q| {
        llm.encode_chat(&[ChatMessage::new(Role::User, *q)])
            .unwrap()
    })
    .collect()
}

/// Greedy tokens (all but the last) and text of `prompt` run alone, from an empty cache.
fn single(llm: &mut Llm, prompt: &[u32]) -> (Vec<u32>, String) {
    llm.forget();
    let mut text = String::new();
    let summary = llm
        .generate(prompt, &params(), &|| false, &mut |t| {
            text.push_str(t);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(summary.usage.completion_tokens, TOKENS);
    let generated = llm.cached_tokens()[prompt.len()..].to_vec();
    (generated, text)
}

struct Running {
    seq: Sequence,
    text: String,
    done: Option<FinishReason>,
}

/// Runs the whole prompt of `seq` (in `chunk`-token pieces) and takes its first token.
fn prefill(llm: &mut Llm, r: &mut Running, chunk: usize) {
    let logits = loop {
        if let Some(l) = llm.prefill(&mut r.seq, chunk).unwrap() {
            break l;
        }
    };
    let tokenizer = llm.tokenizer.clone();
    let text = &mut r.text;
    r.done = r
        .seq
        .accept(&logits, &tokenizer, &mut |t| {
            text.push_str(t);
            ControlFlow::Continue(())
        })
        .unwrap();
}

/// One batched step of every running sequence: a decode step, or the next `chunk` prompt tokens of
/// one still in its prompt, all in one forward pass.
fn step(llm: &mut Llm, running: &mut [Running], chunk: usize) {
    let mut live: Vec<&mut Running> = running.iter_mut().filter(|r| r.done.is_none()).collect();
    let mut seqs: Vec<&mut Sequence> = live.iter_mut().map(|r| &mut r.seq).collect();
    let logits = llm.advance(&mut seqs, chunk).unwrap();
    assert_eq!(logits.len(), live.len());
    let tokenizer = llm.tokenizer.clone();
    for (r, l) in live.iter_mut().zip(logits) {
        let Some(l) = l else { continue };
        let text = &mut r.text;
        r.done = r
            .seq
            .accept(&l, &tokenizer, &mut |t| {
                text.push_str(t);
                ControlFlow::Continue(())
            })
            .unwrap();
    }
}

#[test]
fn batched_greedy_tokens_are_identical_to_single_stream_runs() {
    let mut llm = load_smollm2();
    let prompts = prompts(&llm);
    let alone: Vec<(Vec<u32>, String)> = prompts.iter().map(|p| single(&mut llm, p)).collect();
    assert_ne!(alone[0].0, alone[1].0, "distinct prompts, distinct answers");

    // The first two start together; the third joins after two steps (other positions in one batch),
    // its prompt run 4 tokens at a time in the same forward passes as the others' decode steps.
    let start = |llm: &Llm, p: &Vec<u32>| Running {
        seq: llm.start(llm.new_conversation(), p.clone(), &params()),
        text: String::new(),
        done: None,
    };
    let mut running: Vec<Running> = prompts[..2].iter().map(|p| start(&llm, p)).collect();
    for r in &mut running {
        prefill(&mut llm, r, 512);
    }
    step(&mut llm, &mut running, 4);
    step(&mut llm, &mut running, 4);
    running.push(start(&llm, &prompts[2]));
    while running.iter().any(|r| r.done.is_none()) {
        step(&mut llm, &mut running, 4);
    }
    for (i, (r, (ids, text))) in running.iter().zip(&alone).enumerate() {
        assert_eq!(r.done, Some(FinishReason::Length), "sequence {i}");
        // Every token but the last is fed back to the cache (the last is in the text).
        assert_eq!(
            &r.seq.generated()[..TOKENS - 1],
            &ids[..],
            "sequence {i}'s tokens"
        );
        assert_eq!(&r.text, text, "sequence {i}'s text");
    }
}

#[test]
fn a_finished_conversation_is_reused_by_its_follow_up() {
    let mut llm = load_smollm2();
    let prompt = prompts(&llm).remove(0);
    let mut first = Running {
        seq: llm.start(llm.new_conversation(), prompt.clone(), &params()),
        text: String::new(),
        done: None,
    };
    prefill(&mut llm, &mut first, 512);
    let mut running = vec![first];
    while running[0].done.is_none() {
        step(&mut llm, &mut running, 512);
    }
    let r = running.pop().unwrap();
    let (_, conv) = r
        .seq
        .finish(FinishReason::Length, &mut |_| ControlFlow::Continue(()));
    let follow_up: Vec<u32> = conv.tokens().iter().chain(&[1, 2, 3]).copied().collect();
    let seq = llm.start(conv, follow_up.clone(), &params());
    // Everything the first turn cached is reused (all but the last 16 tokens where the kernels are
    // not split-invariant: `Llm::load`).
    let cached = seq.usage().cached_prompt_tokens;
    assert!(
        cached + 16 >= follow_up.len() && cached <= follow_up.len() - 3,
        "{cached}"
    );
    assert_eq!(seq.prompt_remaining(), follow_up.len() - cached);
}
