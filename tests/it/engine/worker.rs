//! The worker thread that owns the model: tokens stream then a summary with usage, dropping the
//! receiver cancels, a full queue is refused at once, and a bad model fails at spawn.

use std::sync::atomic::Ordering;
use std::time::Duration;

use novapay::engine::{
    ChatMessage, EngineError, GenerateRequest, GenerationEvent, LlmHandle, LlmOptions, Prompt,
    Role, SamplingParams,
};

use crate::smollm2_path;

fn long_request(max_new_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(
            Role::User,
            "Count from one to one hundred.",
        )]),
        params: SamplingParams {
            max_new_tokens,
            ignore_eos: true,
            ..SamplingParams::default()
        },
    }
}

async fn first_token(rx: &mut tokio::sync::mpsc::UnboundedReceiver<GenerationEvent>) {
    match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
        Ok(Some(GenerationEvent::Token(_))) => {}
        Ok(Some(other)) => panic!("expected a token first, got {other:?}"),
        Ok(None) => panic!("stream ended before any token"),
        Err(_) => panic!("no token within 120 s"),
    }
}

async fn until_done(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<GenerationEvent>,
) -> (String, novapay::engine::GenerationSummary) {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenerationEvent::Token(t) => text.push_str(&t),
            GenerationEvent::Done(s) => return (text, s),
            GenerationEvent::Error(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("stream ended without Done");
}

#[tokio::test]
async fn handle_streams_tokens_then_done_with_usage() {
    let handle = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 4).unwrap();
    assert_eq!(handle.info().config.n_layer, 30);
    let mut rx = handle
        .submit(GenerateRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, "Say hello.")]),
            params: SamplingParams {
                max_new_tokens: 8,
                ..SamplingParams::default()
            },
        })
        .unwrap();
    let (text, summary) = until_done(&mut rx).await;
    assert!(!text.is_empty());
    assert!(summary.usage.prompt_tokens > 5);
    assert!(summary.usage.completion_tokens >= 1 && summary.usage.completion_tokens <= 8);
    assert!(summary.timings.prompt_ms > 0.0);
}

#[tokio::test]
async fn dropping_the_receiver_cancels_the_generation() {
    let handle = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 4).unwrap();
    let mut rx = handle.submit(long_request(400)).unwrap();
    first_token(&mut rx).await;
    drop(rx);
    // The next job runs only once the worker has left the first one.
    let mut rx2 = handle
        .submit(GenerateRequest {
            prompt: Prompt::Tokens(vec![1, 2, 3]),
            params: SamplingParams {
                max_new_tokens: 1,
                ..SamplingParams::default()
            },
        })
        .unwrap();
    until_done(&mut rx2).await;
    let stats = handle.stats();
    assert_eq!(stats.jobs_cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(stats.jobs_finished.load(Ordering::SeqCst), 1);
    let tokens = stats.tokens_generated.load(Ordering::SeqCst);
    assert!(
        tokens < 400,
        "the cancelled job went on to generate {tokens} tokens"
    );
}

#[tokio::test]
async fn a_full_queue_answers_overloaded_at_once() {
    // One sequence at a time, so the second request waits in the queue (batching: `scheduler.rs`).
    let opts = LlmOptions {
        max_batch: 1,
        ..LlmOptions::new(smollm2_path())
    };
    let handle = LlmHandle::spawn(opts, 1).unwrap();
    let mut running = handle.submit(long_request(64)).unwrap();
    first_token(&mut running).await; // the worker is busy with it
    let waiting = handle.submit(long_request(4)).unwrap(); // takes the one queue slot
    assert_eq!(handle.queued(), 1);
    let err = handle.submit(long_request(4)).unwrap_err();
    assert!(
        matches!(err, EngineError::Overloaded { queue_depth: 1 }),
        "{err:?}"
    );
    // Refused without waiting for a place: the running job has not finished yet. (Compared with
    // the job on this host, not with a fixed time, which depends on the CPU.)
    while let Ok(event) = running.try_recv() {
        assert!(
            matches!(event, GenerationEvent::Token(_)),
            "the refusal waited for the running job: {event:?}"
        );
    }
    // Callers that went away are skipped, and the worker keeps serving.
    drop(waiting);
    drop(running);
    // The running job notices at its next token; until then the queue may still be full.
    let mut rx = None;
    for _ in 0..200 {
        match handle.submit(long_request(2)) {
            Ok(r) => {
                rx = Some(r);
                break;
            }
            Err(EngineError::Overloaded { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut rx = rx.expect("the queue frees up once the callers are gone");
    let (_, s) = until_done(&mut rx).await;
    assert_eq!(s.usage.completion_tokens, 2);
    assert_eq!(handle.stats().jobs_skipped.load(Ordering::SeqCst), 1);
}

#[test]
fn a_bad_model_fails_at_spawn_not_at_first_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-model.gguf");
    std::fs::write(&path, "hello").unwrap();
    let err = LlmHandle::spawn(LlmOptions::new(path), 4)
        .err()
        .expect("spawn fails");
    assert!(matches!(err, EngineError::BadModel { .. }), "{err:?}");
}
