//! The worker's continuous batching on SmolLM2: concurrent requests are advanced together and get
//! exactly their single-stream greedy answers; a client leaving mid-batch, a prompt over the KV
//! budget, a burst of requests and a request that fails do not disturb the others.

use std::sync::atomic::Ordering;
use std::time::Duration;

use novapay::engine::worker::GenerationEvent;
use novapay::engine::{
    ChatMessage, EngineError, GenerateRequest, GenerationSummary, LlmHandle, LlmOptions, Prompt,
    Role, SamplingParams,
};
use tokio::sync::mpsc::UnboundedReceiver;

use super::single_stream_answers;
use crate::{load_smollm2, smollm2_path};

const TOKENS: usize = 8;

fn questions() -> Vec<&'static str> {
    vec![
        "What is the fee for an international transfer?",
        "How do I block my card?",
        "Count from one to ten, please, and then say goodbye in French.",
    ]
}

fn request(question: &str, max_new_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, question)]),
        params: SamplingParams {
            max_new_tokens,
            ignore_eos: true,
            ..SamplingParams::default()
        },
    }
}

async fn until_done(
    rx: &mut UnboundedReceiver<GenerationEvent>,
) -> Result<(String, GenerationSummary), EngineError> {
    let mut text = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(300), rx.recv()).await {
            Ok(Some(GenerationEvent::Token(t))) => text.push_str(&t),
            Ok(Some(GenerationEvent::Done(s))) => return Ok((text, s)),
            Ok(Some(GenerationEvent::Error(e))) => return Err(e),
            Ok(None) => panic!("stream ended without Done"),
            Err(_) => panic!("no event within 300 s"),
        }
    }
}

#[tokio::test]
async fn concurrent_requests_get_their_single_stream_answers() {
    let mut llm = load_smollm2();
    let alone = single_stream_answers(&mut llm, &questions(), &request("", TOKENS).params);
    drop(llm);

    let handle = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 8).unwrap();
    // A long answer already running, so the others join a batch whatever the timing.
    let mut hog = handle
        .submit(request("Tell me a long story.", 200))
        .unwrap();
    match hog.recv().await {
        Some(GenerationEvent::Token(_)) => {}
        other => panic!("expected a token, got {other:?}"),
    }
    let mut rxs: Vec<_> = questions()
        .iter()
        .map(|q| handle.submit(request(q, TOKENS)).unwrap())
        .collect();
    for (rx, want) in rxs.iter_mut().zip(&alone) {
        let (text, summary) = until_done(rx).await.unwrap();
        assert_eq!(summary.usage.completion_tokens, TOKENS);
        assert_eq!(&text, want);
    }
    assert!(
        handle.stats().batched_steps() > 0,
        "no step advanced two sequences"
    );
    until_done(&mut hog).await.unwrap();
    assert_eq!(handle.stats().jobs_finished.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_client_leaving_mid_batch_frees_its_slot_and_the_others_finish() {
    let handle = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 8).unwrap();
    let mut leaving = handle.submit(request(questions()[0], 400)).unwrap();
    let mut staying = handle.submit(request(questions()[1], 24)).unwrap();
    match leaving.recv().await {
        Some(GenerationEvent::Token(_)) => {}
        other => panic!("expected a token, got {other:?}"),
    }
    drop(leaving);
    let (_, summary) = until_done(&mut staying).await.unwrap();
    assert_eq!(summary.usage.completion_tokens, 24);
    let stats = handle.stats();
    // The cancelled one left at the next step, long before its 400 tokens.
    for _ in 0..100 {
        if stats.jobs_cancelled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.jobs_cancelled.load(Ordering::SeqCst), 1);
    assert!(stats.tokens_generated.load(Ordering::SeqCst) < 400);
}

#[tokio::test]
async fn a_prompt_over_the_kv_budget_is_refused_and_others_still_run() {
    let per_token = 30 * 3 * 64 * 2 * 2; // SmolLM2-135M: layers x KV heads x head_dim x (K,V) x f16
    let opts = LlmOptions {
        kv_budget_bytes: Some(256 * per_token), // one 256-position block
        ..LlmOptions::new(smollm2_path())
    };
    let handle = LlmHandle::spawn(opts, 8).unwrap();
    assert_eq!(handle.info().kv_bytes_per_token, per_token);
    let long = "Tell me about international transfers and their fees. ".repeat(40);
    let mut rx = handle.submit(request(&long, 4)).unwrap();
    let err = until_done(&mut rx).await.unwrap_err();
    assert!(matches!(err, EngineError::OverBudget { .. }), "{err:?}");
    // An answer that would outgrow the budget is cut short; short requests run.
    let mut a = handle.submit(request(questions()[0], 400)).unwrap();
    let (_, s) = until_done(&mut a).await.unwrap();
    assert!(
        s.usage.prompt_tokens + s.usage.completion_tokens <= 256,
        "{s:?}"
    );
    assert!(handle.stats().kv_bytes.load(Ordering::SeqCst) <= 256 * per_token);
}

#[tokio::test]
async fn a_burst_of_requests_is_answered_or_refused_never_dropped() {
    let handle = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 4).unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..50 {
        match handle.submit(request(questions()[i % 3], 2)) {
            Ok(rx) => accepted.push(rx),
            Err(EngineError::Overloaded { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "50 at once into a queue of 4");
    for rx in &mut accepted {
        let (_, s) = until_done(rx).await.unwrap();
        assert_eq!(s.usage.completion_tokens, 2);
    }
    assert_eq!(
        handle.stats().jobs_finished.load(Ordering::SeqCst),
        accepted.len()
    );
}

#[tokio::test]
async fn a_failing_request_fails_alone() {
    let handle = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 8).unwrap();
    let mut good = handle.submit(request(questions()[0], 16)).unwrap();
    match good.recv().await {
        Some(GenerationEvent::Token(_)) => {}
        other => panic!("expected a token, got {other:?}"),
    }
    // Joins the running batch with a token the model has no embedding row for.
    let mut bad = handle
        .submit(GenerateRequest {
            prompt: Prompt::Tokens(vec![1, 2, 10_000_000]),
            params: SamplingParams::default(),
        })
        .unwrap();
    let err = until_done(&mut bad).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidInput(_)), "{err:?}");
    let (_, s) = until_done(&mut good).await.unwrap();
    assert_eq!(s.usage.completion_tokens, 16);
}
