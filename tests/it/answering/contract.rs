//! The one entry point (`Assistant::ask` and its blocking and collected forms) on the real small
//! models: stateless history, retrieval only, errors that say what to do, admission, the event
//! stream, and the answer metrics by door.

use std::sync::Arc;

use novapay::assistant::{
    Access, AnswerError, AnswerEvent, AnswerMode, Ask, Assistant, Conversation, Door, FinishReason,
    PastTurn, SessionId, Speaker, WhenBusy,
};
use novapay::engine::SamplingParams;

use crate::support::{test_assistant, test_assistant_in_mode};

const FEE_QUESTION: &str = "How much does a domestic transfer cost?";
const FOLLOW_UP: &str = "And for international ones?";

fn assistant(dir: &std::path::Path, queue_depth: usize) -> Arc<Assistant> {
    test_assistant(
        dir,
        queue_depth,
        SamplingParams {
            max_new_tokens: 24,
            ..SamplingParams::default()
        },
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn key(owner: &str) -> Access {
    Access {
        owner: owner.into(),
        user_id: None,
        admin: false,
    }
}

#[test]
fn a_stateless_caller_passes_the_history_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let a = assistant(dir.path(), 2);
    let history = vec![
        PastTurn {
            role: Speaker::User,
            content: FEE_QUESTION.into(),
        },
        PastTurn {
            role: Speaker::Assistant,
            content: "Domestic transfers cost 0.5% of the amount.".into(),
        },
    ];
    // Retrieval only (the MCP search tool): the follow-up finds the international fees with the
    // history it was given.
    let rt = runtime();
    let found = rt
        .block_on(a.search(FOLLOW_UP, history.clone(), 3, Door::Mcp))
        .unwrap();
    assert!(found.sources.len() <= 3 && !found.sources.is_empty());
    assert!(
        found
            .sources
            .iter()
            .any(|s| s.heading.contains("International")),
        "{:?}",
        found.sources
    );
    let answered = rt
        .block_on(a.ask_collected(Ask::new(
            FOLLOW_UP,
            Conversation::Stateless(history),
            Door::OpenAi,
        )))
        .unwrap();
    assert_eq!(answered.session, None);
    assert!(!answered.answer.fallback(), "{:?}", answered.answer);
    assert!(
        answered
            .answer
            .sources
            .iter()
            .any(|s| s.heading.contains("International")),
        "{:?}",
        answered.answer.sources
    );
    let db = rusqlite::Connection::open(dir.path().join("m.sqlite")).unwrap();
    let turns: i64 = db
        .query_row("SELECT COUNT(*) FROM turns", [], |r| r.get(0))
        .unwrap();
    assert_eq!(turns, 0, "a stateless turn is not stored");
    let m = a.metrics();
    assert_eq!(m.answers_by("openai"), 1);
    assert_eq!(m.searches.with_label_values(&["mcp"]).get(), 1);
}

#[test]
fn errors_before_the_first_event_say_what_the_caller_should_do() {
    let dir = tempfile::tempdir().unwrap();
    let a = assistant(dir.path(), 0);
    let rt = runtime();
    let ask = |q: &str, c: Conversation| rt.block_on(a.ask(Ask::new(q, c, Door::Rest)));

    let e = ask("   ", Conversation::New(key("k1"))).err().unwrap();
    assert!(matches!(e, AnswerError::InvalidQuestion(_)), "{e:?}");
    assert!(e.is_caller_error() && e.retry_after().is_none());
    let long = "a".repeat(1001);
    let e = ask(&long, Conversation::New(key("k1"))).err().unwrap();
    assert_eq!(e.code(), "invalid_query");

    // A session that does not exist, and one that is another key's, are the same "unknown".
    let unknown = SessionId::parse("nobody-s-session").unwrap();
    let e = ask(
        FEE_QUESTION,
        Conversation::Continue {
            id: unknown.clone(),
            access: key("k1"),
        },
    )
    .err()
    .unwrap();
    assert!(matches!(e, AnswerError::UnknownSession(ref id) if *id == unknown));
    let mine = a.create_session(&key("k1")).unwrap().id;
    let e = ask(
        FEE_QUESTION,
        Conversation::Continue {
            id: mine.clone(),
            access: key("k2"),
        },
    )
    .err()
    .unwrap();
    assert_eq!(e.code(), "not_found");

    // Queue depth 0: one answer in progress at most. While it runs, the next is refused at once
    // with a retry hint, or answered extractively when the caller accepts a quote.
    let running = ask(
        FEE_QUESTION,
        Conversation::Continue {
            id: mine.clone(),
            access: key("k1"),
        },
    )
    .unwrap();
    let e = ask(FEE_QUESTION, Conversation::New(key("k1")))
        .err()
        .unwrap();
    assert!(matches!(e, AnswerError::Overloaded { .. }), "{e:?}");
    assert!(e.retry_after().is_some() && !e.is_caller_error());
    let quoted = rt
        .block_on(
            a.ask_collected(
                Ask::new(FEE_QUESTION, Conversation::New(key("k1")), Door::Rest)
                    .when_busy(WhenBusy::Extract),
            ),
        )
        .unwrap();
    assert!(quoted.answer.extractive() && !quoted.answer.cached);
    assert!(!quoted.answer.sources.is_empty());
    let first = rt.block_on(running.collect()).unwrap();
    assert_eq!(first.session.as_ref(), Some(&mine));
    assert!(first.usage().unwrap().completion_tokens > 0);
    let m = a.metrics();
    assert_eq!(
        m.failures.with_label_values(&["rest", "overloaded"]).get(),
        1
    );
    assert_eq!(
        m.failures.with_label_values(&["rest", "not_found"]).get(),
        2
    );
    // The running answer is the model's checked text, or the quotes that replaced it when the
    // figure check left nothing of it: which one depends on what the model said on this CPU.
    let first_quoted = u64::from(first.kind() == "extractive");
    assert!(
        first.kind() == "generated" || first_quoted == 1,
        "{first:?}"
    );
    assert_eq!(
        m.answers.with_label_values(&["rest", "extractive"]).get(),
        1 + first_quoted
    );
    assert_eq!(
        m.answers.with_label_values(&["rest", "generated"]).get(),
        1 - first_quoted
    );
}

#[test]
fn the_stream_shows_the_answer_piece_by_piece_then_stores_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = assistant(dir.path(), 2);
    let session = SessionId::new_random();
    let mut shown = String::new();
    let mut events = Vec::new();
    let answered = a
        .ask_blocking(
            Ask::new(
                FEE_QUESTION,
                Conversation::Trusted(session.clone()),
                Door::Cli,
            ),
            &mut |e| {
                events.push(match e {
                    AnswerEvent::Preview(_) => "preview",
                    AnswerEvent::Text(t) => {
                        shown.push_str(t);
                        "text"
                    }
                    AnswerEvent::Replaced(t) => {
                        shown = t.clone();
                        "replaced"
                    }
                    AnswerEvent::Done(_) => "done",
                    AnswerEvent::Error(_) => "error",
                })
            },
        )
        .unwrap();
    assert_eq!(events.last(), Some(&"done"), "{events:?}");
    assert_eq!(shown.trim(), answered.answer.text, "{events:?}");
    // The model's checked text piece by piece, or (when the figure check left nothing of what this
    // CPU's model said) the quotes replacing it: never both kinds mixed up.
    if events.contains(&"replaced") {
        assert_eq!(answered.kind(), "extractive", "{events:?}");
    } else {
        assert!(events.contains(&"text"), "{events:?}");
        assert_eq!(answered.kind(), "generated");
    }
    assert!(answered.usage().unwrap().completion_tokens > 0);
    assert_eq!(answered.session.as_ref(), Some(&session));
    let turns = a.memory().history(&session, 10).unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0].content, FEE_QUESTION);
    assert_eq!(turns[1].content, answered.answer.text);
    assert_eq!(a.metrics().answers_by("cli"), 1);
    assert_eq!(a.metrics().answers_by("rest"), 0);
}

#[test]
fn a_served_answer_says_why_its_generation_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // Generate mode: the figure check cannot replace the two tokens by quotes, whatever this CPU's
    // model says first (issue 25).
    let a = test_assistant_in_mode(
        dir.path(),
        2,
        SamplingParams {
            max_new_tokens: 24,
            ..SamplingParams::default()
        },
        AnswerMode::Generate,
    );
    let rt = runtime();
    let ask = |question: &str, cap: Option<usize>| {
        rt.block_on(a.ask_collected(Ask {
            max_new_tokens: cap,
            ..Ask::new(question, Conversation::Stateless(Vec::new()), Door::OpenAi)
        }))
        .unwrap()
    };
    // Cut by the caller's token cap: the worker's own reason, not a guess from the token count.
    let cut = ask(FEE_QUESTION, Some(2));
    assert_eq!(cut.kind(), "generated", "{cut:?}");
    assert_eq!(cut.usage().unwrap().completion_tokens, 2);
    assert_eq!(cut.finish_reason, Some(FinishReason::Length), "{cut:?}");
    // No generation, no reason: the fallback is a complete text.
    let fallback = ask("How do I bake a chocolate cake?", None);
    assert!(fallback.answer.fallback(), "{fallback:?}");
    assert_eq!(fallback.finish_reason, None);
}
