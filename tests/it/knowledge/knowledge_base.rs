//! The knowledge base: answers from the right document with sources, follow-ups that keep the topic,
//! the fallback without the LLM, history across a restart, incremental and failing re-indexing, odd
//! encodings and corrupt files, and index generations built with other settings. Also holds the shared
//! embedder and knowledge base other modules use.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use novapay::assistant::{AnswerKind, Assistant, Plan, RagConfig};
use novapay::embed::{Embedder, EmbedderOptions};
use novapay::engine::{LlmHandle, LlmOptions, SamplingParams};
use novapay::index::chunk::ChunkSettings;
use novapay::index::{
    build_index, Fusion, GenerationWatcher, IndexError, IndexJob, IndexReport, IndexSettings,
    KnowledgeBase,
};
use novapay::memory::{ConversationStore, SessionId, SqliteStore};

use crate::{minilm_dir, smollm2_path};

const CHUNK: ChunkSettings = ChunkSettings {
    max_tokens: 200,
    overlap_tokens: 30,
};

pub fn embedder() -> Arc<Embedder> {
    static E: OnceLock<Arc<Embedder>> = OnceLock::new();
    E.get_or_init(|| Arc::new(Embedder::load(EmbedderOptions::new(minilm_dir())).unwrap()))
        .clone()
}

fn settings() -> IndexSettings {
    IndexSettings::new(&embedder(), "", CHUNK)
}

fn repo_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn index(
    data: &Path,
    index_dir: &Path,
    fail_after_files: Option<usize>,
) -> Result<IndexReport, IndexError> {
    build_index(
        &IndexJob {
            data_dir: data.to_path_buf(),
            index_dir: index_dir.to_path_buf(),
            settings: settings(),
            rebuild: false,
            fail_after_files,
        },
        &embedder(),
        &|_, _| {},
    )
}

/// The repository's data/ indexed once for the read-only tests.
pub fn shared_kb() -> Arc<KnowledgeBase> {
    static KB: OnceLock<(tempfile::TempDir, Arc<KnowledgeBase>)> = OnceLock::new();
    KB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let report = index(&repo_data(), dir.path(), None).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(report.files >= 10);
        let kb = Arc::new(KnowledgeBase::open(dir.path(), &settings()).unwrap());
        (dir, kb)
    })
    .1
    .clone()
}

fn assistant(memory_path: &Path) -> Arc<Assistant> {
    let llm = LlmHandle::spawn(LlmOptions::new(smollm2_path()), 2).unwrap();
    let memory = Arc::new(SqliteStore::open(memory_path).unwrap());
    Arc::new(Assistant::new(
        shared_kb(),
        embedder(),
        llm,
        memory,
        RagConfig {
            sampling: SamplingParams {
                max_new_tokens: 48,
                ..SamplingParams::default()
            },
            ..RagConfig::default()
        },
    ))
}

fn copy_dir(from: &Path, to: &Path, only: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for name in only {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

#[test]
fn fee_question_is_answered_from_the_fees_document_with_sources() {
    let state = tempfile::tempdir().unwrap();
    let a = assistant(&state.path().join("m.sqlite"));
    let session = SessionId::new_random();
    let answer = a
        .answer_blocking(
            &session,
            "How much does a domestic transfer cost?",
            &mut |_| {},
        )
        .unwrap();
    assert!(!answer.fallback());
    assert_eq!(
        answer.sources[0].source,
        "fees-and-limits.md",
        "sources: {:?}",
        answer.sources.iter().map(|s| &s.source).collect::<Vec<_>>()
    );
    assert!(
        answer.sources[0].heading.contains("Domestic"),
        "{:?}",
        answer.sources[0]
    );
    assert!(answer.text.contains("0.5"), "answer: {:?}", answer.text);
    assert!(answer.usage.unwrap().completion_tokens > 0);
}

#[test]
fn follow_up_question_retrieves_the_previous_topic() {
    let state = tempfile::tempdir().unwrap();
    let a = assistant(&state.path().join("m.sqlite"));
    let session = SessionId::new_random();
    a.record(
        &session,
        "How much does a domestic transfer cost?",
        "Domestic transfers cost 0.5% of the amount.",
        &[],
    )
    .unwrap();
    let history = a.memory().history(&session, 8).unwrap();
    let follow_up = "And for international ones?";
    let with = a.retrieve(follow_up, &history).unwrap();
    let alone = a.retrieve(follow_up, &[]).unwrap();
    let about_international_fees = |r: &novapay::assistant::Retrieval| {
        r.hits
            .iter()
            .take(4)
            .any(|h| h.chunk.heading.contains("International") && h.chunk.text.contains("1.5%"))
    };
    assert!(
        with.relevant,
        "the follow-up is answerable with its history"
    );
    assert!(
        about_international_fees(&with),
        "top hits with history: {:?}",
        with.hits
            .iter()
            .take(4)
            .map(|h| &h.chunk.heading)
            .collect::<Vec<_>>()
    );
    assert!(
        with.best_similarity_with_history > alone.best_similarity,
        "history must help: {} vs {}",
        with.best_similarity_with_history,
        alone.best_similarity
    );
}

#[test]
fn unanswerable_question_gets_the_fallback_without_calling_the_llm() {
    let state = tempfile::tempdir().unwrap();
    let a = assistant(&state.path().join("m.sqlite"));
    let session = SessionId::new_random();
    let en = a
        .answer_blocking(&session, "How do I bake a chocolate cake?", &mut |_| {})
        .unwrap();
    assert_eq!(en.kind, AnswerKind::HandedOff, "{en:?}");
    assert!(en.sources.is_empty());
    assert!(en.text.contains("support@novapay.com"));
    let ru = a
        .answer_blocking(
            &session,
            "Кто выиграл чемпионат мира по футболу?",
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(ru.kind, AnswerKind::HandedOff, "{ru:?}");
    assert!(ru.text.contains("поддержку"), "{}", ru.text);
    let stats = a.llm().stats();
    assert_eq!(
        stats.jobs_finished.load(Ordering::SeqCst),
        0,
        "the LLM was called"
    );
    assert_eq!(stats.tokens_generated.load(Ordering::SeqCst), 0);
    // The exchange is still part of the conversation.
    assert_eq!(a.memory().history(&session, 10).unwrap().len(), 4);
}

#[test]
fn history_survives_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("m.sqlite");
    let session = SessionId::parse("restart-test").unwrap();
    {
        let a = assistant(&db);
        a.record(
            &session,
            "What is the daily limit?",
            "$1,000 unverified, $10,000 verified.",
            &[],
        )
        .unwrap();
    }
    let reopened = SqliteStore::open(&db).unwrap();
    let history = reopened.history(&session, 10).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].content, "What is the daily limit?");
    assert!(history[1].content.contains("$10,000"));
}

#[test]
fn reindex_after_editing_one_file_embeds_only_that_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, idx) = (tmp.path().join("data"), tmp.path().join("index"));
    copy_dir(
        &repo_data(),
        &data,
        &["fees-and-limits.md", "cards.md", "faq.txt"],
    );
    let first = index(&data, &idx, None).unwrap();
    assert_eq!(first.added.len(), 3);
    let first_chunks = first.chunks;

    let mut text = std::fs::read_to_string(data.join("cards.md")).unwrap();
    text.push_str("\n## Lost card hotline\nBlock a lost card in the app under Cards > Block.\n");
    std::fs::write(data.join("cards.md"), text).unwrap();
    std::fs::remove_file(data.join("faq.txt")).unwrap();
    let second = index(&data, &idx, None).unwrap();
    assert_eq!(second.updated, vec!["cards.md".to_string()]);
    assert_eq!(second.unchanged, 1);
    assert_eq!(second.removed, vec!["faq.txt".to_string()]);
    let cards_chunks = KnowledgeBase::open(&idx, &settings())
        .unwrap()
        .manifest
        .files["cards.md"]
        .chunks;
    assert_eq!(
        second.chunks_embedded, cards_chunks,
        "only cards.md was embedded again"
    );
    assert!(second.chunks < first_chunks + 3);

    let third = index(&data, &idx, None).unwrap();
    assert_eq!(
        third.chunks_embedded, 0,
        "nothing changed, nothing embedded"
    );
    assert_eq!(third.unchanged, 2);
}

#[test]
fn a_failure_mid_index_leaves_the_previous_index_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, idx) = (tmp.path().join("data"), tmp.path().join("index"));
    copy_dir(&repo_data(), &data, &["fees-and-limits.md", "cards.md"]);
    let good = index(&data, &idx, None).unwrap();
    // Leftovers of a crashed run must not confuse anything and are cleaned by the next good run.
    std::fs::create_dir_all(idx.join("gen-0-crashed")).unwrap();

    std::fs::write(data.join("new.md"), "# New\nThe new fee is 9.9%.\n").unwrap();
    std::fs::write(data.join("cards.md"), "# Cards\nAll card text replaced.\n").unwrap();
    let err = index(&data, &idx, Some(1)).unwrap_err();
    assert!(matches!(err, IndexError::InjectedFailure(1)), "{err}");

    let kb = KnowledgeBase::open(&idx, &settings()).unwrap();
    assert_eq!(kb.manifest.generation, good.generation);
    assert_eq!(kb.len(), good.chunks);
    assert!(!kb.manifest.files.contains_key("new.md"));
    let q = embedder()
        .embed_queries(&["How do I block my card?"])
        .unwrap();
    let hits = kb
        .search(&q, &["How do I block my card?"], 3, Fusion::default())
        .hits;
    assert_eq!(hits[0].chunk.source, "cards.md");
    assert_ne!(hits[0].chunk.text, "All card text replaced.");

    let recovered = index(&data, &idx, None).unwrap();
    assert_eq!(recovered.added, vec!["new.md".to_string()]);
    assert!(!idx.join("gen-0-crashed").exists());
}

#[test]
fn windows_1251_text_and_a_corrupt_pdf_are_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, idx) = (tmp.path().join("data"), tmp.path().join("index"));
    copy_dir(&repo_data(), &data, &["cards.md"]);
    let text = "Выгрузка из 1С. Лимит снятия наличных в банкоматах партнёров составляет 777 рублей в сутки.";
    let (cp1251, _, unmappable) = encoding_rs::WINDOWS_1251.encode(text);
    assert!(!unmappable);
    assert!(
        std::str::from_utf8(&cp1251).is_err(),
        "the file really is not UTF-8"
    );
    std::fs::create_dir_all(data.join("1c")).unwrap();
    std::fs::write(data.join("1c/limity.txt"), &cp1251).unwrap();
    std::fs::write(
        data.join("broken.pdf"),
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage",
    )
    .unwrap();

    let report = index(&data, &idx, None).unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].0, "broken.pdf");
    assert!(report.added.contains(&"1c/limity.txt".to_string()));

    let kb = KnowledgeBase::open(&idx, &settings()).unwrap();
    let query = "банкоматах партнёров 777 рублей";
    let v = embedder().embed_queries(&[query]).unwrap();
    let hits = kb.search(&v, &[query], 3, Fusion::default()).hits;
    assert_eq!(hits[0].chunk.source, "1c/limity.txt");
    assert!(
        hits[0].chunk.text.contains("Лимит снятия наличных"),
        "{}",
        hits[0].chunk.text
    );
}

#[test]
fn a_second_concurrent_index_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, idx) = (tmp.path().join("data"), tmp.path().join("index"));
    copy_dir(&repo_data(), &data, &["faq.txt"]);
    std::fs::create_dir_all(&idx).unwrap();
    let held = std::fs::File::create(idx.join("index.lock")).unwrap();
    held.try_lock().unwrap();
    let err = index(&data, &idx, None).unwrap_err();
    assert!(matches!(err, IndexError::Locked(_)), "{err}");
    held.unlock().unwrap();
    index(&data, &idx, None).unwrap();
}

#[test]
fn a_watcher_follows_new_generations_and_refuses_one_built_with_other_settings_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, idx) = (tmp.path().join("data"), tmp.path().join("index"));
    copy_dir(&repo_data(), &data, &["faq.txt"]);
    let first = index(&data, &idx, None).unwrap();
    let kb = KnowledgeBase::open(&idx, &settings()).unwrap();
    assert!(kb.is_leased());
    let mut watcher = GenerationWatcher::new(&idx, settings(), &kb.manifest.generation);
    assert!(watcher.poll().unwrap().is_none());

    std::fs::write(data.join("new.md"), "# New\nThe new fee is 9.9%.\n").unwrap();
    let second = index(&data, &idx, None).unwrap();
    assert_eq!(
        second.cleanup.in_use,
        std::slice::from_ref(&first.generation)
    );
    let next = watcher.poll().unwrap().expect("the new generation");
    assert_eq!(next.manifest.generation, second.generation);
    assert!(next.manifest.files.contains_key("new.md") && next.is_leased());
    assert!(watcher.poll().unwrap().is_none());
    drop(kb);

    // Published with other chunk settings: the watcher refuses it once and keeps what it has.
    let mut other = settings();
    other.chunk.max_tokens = 100;
    let third = build_index(
        &IndexJob {
            data_dir: data.clone(),
            index_dir: idx.clone(),
            settings: other,
            rebuild: true,
            fail_after_files: None,
        },
        &embedder(),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(
        third.cleanup.deleted,
        std::slice::from_ref(&first.generation)
    );
    assert_eq!(
        third.cleanup.in_use,
        std::slice::from_ref(&second.generation)
    );
    let err = watcher.poll().err().expect("other settings are refused");
    assert!(matches!(err, IndexError::Mismatch { .. }), "{err}");
    assert!(watcher.poll().unwrap().is_none());
    drop(next);
}

#[test]
fn an_index_built_with_other_settings_asks_for_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, idx) = (tmp.path().join("data"), tmp.path().join("index"));
    copy_dir(&repo_data(), &data, &["faq.txt"]);
    index(&data, &idx, None).unwrap();
    let mut other = settings();
    other.chunk.max_tokens = 100;
    let err = KnowledgeBase::open(&idx, &other)
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("--rebuild"), "{err}");
    let missing = KnowledgeBase::open(&tmp.path().join("nowhere"), &settings())
        .err()
        .unwrap();
    assert!(missing.to_string().contains("novapay index"), "{missing}");
}

#[test]
fn fallback_plan_is_chosen_before_any_generation() {
    let state = tempfile::tempdir().unwrap();
    let a = assistant(&state.path().join("m.sqlite"));
    let p = novapay::assistant::testing::prepare(
        &a,
        &SessionId::new_random(),
        "What's the weather in Paris tomorrow?",
    )
    .unwrap();
    assert!(matches!(p.plan, Plan::HandOff(_)));
    assert!(!p.retrieval.relevant);
    let p = novapay::assistant::testing::prepare(
        &a,
        &SessionId::new_random(),
        "What is the daily transfer limit for verified accounts?",
    )
    .unwrap();
    assert!(matches!(p.plan, Plan::Generate(_)));
    assert!(
        p.sources.iter().any(|s| s.snippet.contains("$10,000")),
        "{:?}",
        p.sources
    );
}
