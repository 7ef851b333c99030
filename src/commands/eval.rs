//! `novapay eval ...`: retrieval and answer quality on evaluation sets (BEIR, the knowledge base's
//! regression questions, answerability on SQuAD 2.0, doc2dial), and the fit of the weighing gate.

use std::path::{Path, PathBuf};

use anyhow::Context;
use novapay::embed::Embedder;
use novapay::eval::{answerability, answers, beir, doc2dial};
use novapay::index::{build_index, IndexJob, KnowledgeBase};

use super::options::{AssistantArgs, EmbedArgs, KbArgs, RagArgs, RuntimeArgs};

#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// nDCG@10, recall@10 and recall@100 on a BEIR dataset (corpus.jsonl, queries, qrels), as BEIR does.
    Retrieval(Retrieval),
    /// Knowledge-base regression questions through the whole answer path (the check a support team
    /// runs after every knowledge-base edit): right source, expected figures, forbidden strings,
    /// refusals, figures the sources do not state. `--data` is indexed afresh into a temporary folder.
    Answers(Answers),
    /// Refusal of unanswerable and false refusal of answerable questions over the gate's threshold,
    /// on SQuAD 2.0 (each question against its article) and on a questions file (per split).
    Answerability(Answerability),
    /// doc2dial: recall@5 of the gold passage for follow-up questions, with and without history.
    Dialogue(Dialogue),
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Retrieval(a) => retrieval(&a),
        Command::Answers(a) => answers_of_data(&a),
        Command::Answerability(a) => match &a.fit {
            Some(out) => fit_gate(&a, out),
            None => answerability(&a),
        },
        Command::Dialogue(a) => dialogue(&a),
    }
}

#[derive(clap::Args, Debug)]
pub struct Retrieval {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    embed: EmbedArgs,
    /// BEIR folder: corpus.jsonl, queries.jsonl (or queries-test.jsonl), qrels-test.tsv.
    #[arg(long)]
    beir: PathBuf,
    /// dense, bm25 or hybrid; all three when not given.
    #[arg(long)]
    mode: Option<String>,
    /// Evaluate only the first N test queries (quick checks).
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct Answers {
    #[command(flatten)]
    assistant: AssistantArgs,
    /// JSONL: {id, turns: [...], expect_source?, expect_any?: [...], expect_none?: [...],
    /// unanswerable?: bool, split?}
    #[arg(long)]
    questions: PathBuf,
    /// Only the questions with this `split` label.
    #[arg(long)]
    split: Option<String>,
    #[arg(long)]
    json: bool,
    /// Instead of answering: write each question's unfused scores (every chunk's cosine and BM25
    /// score, for the question alone and joined to its earlier turns) and the chunks to this JSONL
    /// file, to study the ranking offline.
    #[arg(long)]
    dump_candidates: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct Answerability {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    embed: EmbedArgs,
    #[command(flatten)]
    kb: KbArgs,
    #[command(flatten)]
    rag: RagArgs,
    /// squad2-sample folder (squad2-dev-sample300.jsonl, paragraphs.jsonl).
    #[arg(long)]
    squad: Option<PathBuf>,
    /// Questions file in `eval answers` format, asked of the knowledge base in `--data` (indexed
    /// afresh into a temporary folder).
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Only the first N SQuAD questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Fit the weighing gate, leaving one knowledge base out at a time (data/ with its question
    /// files, eval/tune-3/kb, eval/heldout-3/kb, and each doc2dial domain), print every fold and
    /// write the model that ships to this file (src/assistant/answerability/gate-model.json).
    #[arg(long, value_name = "MODEL.json")]
    fit: Option<PathBuf>,
    /// doc2dial folder for `--fit`.
    #[arg(long, default_value = "../shared/eval/doc2dial")]
    doc2dial: PathBuf,
    /// Opening questions per doc2dial domain for `--fit`.
    #[arg(long, default_value_t = 40)]
    per_domain: usize,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct Dialogue {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    embed: EmbedArgs,
    /// doc2dial folder: documents.jsonl, questions.jsonl.
    #[arg(long)]
    doc2dial: PathBuf,
    /// Use all 273 documents instead of the 200-document subset.
    #[arg(long)]
    all_documents: bool,
    /// Evaluate only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    json: bool,
}

fn progress(what: &str, done: usize, total: usize) {
    eprint!("\r{what}: {done}/{total}   ");
    if done >= total {
        eprintln!();
    }
}

fn retrieval(a: &Retrieval) -> anyhow::Result<()> {
    let (runtime, embed, dir) = (&a.runtime, &a.embed, a.beir.as_path());
    let (mode, limit, json) = (a.mode.as_deref(), a.limit, a.json);
    let modes: Vec<beir::Mode> = match mode {
        Some(m) => vec![m.parse().map_err(anyhow::Error::msg)?],
        None => vec![beir::Mode::Dense, beir::Mode::Bm25, beir::Mode::Hybrid],
    };
    let embedder = if modes.iter().any(|m| *m != beir::Mode::Bm25) {
        Some(super::load_embedder(runtime, embed, 32)?)
    } else {
        None
    };
    let report = beir::evaluate(dir, &modes, embedder.as_ref(), limit, &progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} documents, {} queries{}",
            report.dataset,
            report.documents,
            report.queries,
            report
                .embedder
                .as_deref()
                .map(|e| format!(", embedder {e}"))
                .unwrap_or_default()
        );
        for r in &report.results {
            println!(
                "  {:<7} nDCG@10 {:.4}  recall@10 {:.4}  recall@100 {:.4}",
                format!("{:?}", r.mode).to_lowercase(),
                r.ndcg_at_10,
                r.recall_at_10,
                r.recall_at_100
            );
        }
    }
    Ok(())
}

fn dialogue(a: &Dialogue) -> anyhow::Result<()> {
    let (runtime, embed, dir) = (&a.runtime, &a.embed, a.doc2dial.as_path());
    let (all_documents, limit, json) = (a.all_documents, a.limit, a.json);
    let embedder = super::load_embedder(runtime, embed, 32)?;
    let chunk = novapay::index::chunk::ChunkSettings::fitted(None, 30, embedder.max_length());
    let report = doc2dial::evaluate(dir, &embedder, chunk, all_documents, limit, &progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "doc2dial: {} documents, {} chunks; recall@{} of the gold passage",
            report.documents, report.chunks, report.k
        );
        for (name, r) in [
            ("all questions", &report.all),
            ("follow-ups", &report.follow_ups),
        ] {
            println!(
                "  {name:<14} ({:>4}): latest question alone {:.4}, with history {:.4}",
                r.questions, r.without_history, r.with_history
            );
        }
    }
    Ok(())
}

/// Indexes `--data` into a temporary folder (deleted when the returned guard drops) with the real
/// embedder, so that questions are asked of exactly that folder: no stale index after a
/// knowledge-base edit, and any knowledge base can be checked without touching the served index.
fn index_of_data(
    embedder: &Embedder,
    embed: &EmbedArgs,
    kb: &KbArgs,
) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("novapay-eval-index-")
        .tempdir()
        .context("creating a temporary index folder")?;
    let job = IndexJob {
        data_dir: kb.data_dir.clone(),
        index_dir: dir.path().to_path_buf(),
        settings: super::index_settings(embedder, embed, kb),
        rebuild: true,
        fail_after_files: None,
    };
    let report = build_index(&job, embedder, &|done, total| {
        progress("indexing chunks", done, total)
    })
    .with_context(|| format!("indexing {}", kb.data_dir.display()))?;
    for (file, reason) in &report.failed {
        eprintln!("skipped {file}: {reason}");
    }
    anyhow::ensure!(
        report.chunks > 0,
        "no documents to index in {} (give the knowledge base with --data DIR)",
        kb.data_dir.display()
    );
    Ok(dir)
}

/// `eval answers --dump-candidates`: the first line lists the chunks (id, source, language,
/// heading); then one line per question with the scores of its queries, built as retrieval builds
/// them (the question; the question after the customer's earlier turns).
fn dump_candidates(
    assistant: &novapay::assistant::Assistant,
    qs: &[answers::KbQuestion],
    out: &Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    let kb = assistant.knowledge_base();
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let chunks: Vec<serde_json::Value> = (0..kb.len())
        .filter_map(|id| {
            let c = kb.chunk(id)?;
            Some(serde_json::json!({
                "id": id,
                "source": c.source,
                "heading": c.heading,
                "language": kb.chunk_language(id),
            }))
        })
        .collect();
    writeln!(file, "{}", serde_json::json!({ "chunks": chunks }))?;
    for q in qs {
        let Some((question, earlier)) = q.turns.split_last() else {
            continue;
        };
        let mut queries = vec![question.clone()];
        if !earlier.is_empty() {
            let mut joined: Vec<&str> = earlier
                .iter()
                .rev()
                .take(2)
                .rev()
                .map(String::as_str)
                .collect();
            joined.push(question);
            queries.push(joined.join("\n"));
        }
        let vectors = assistant.embedder().embed_queries(&queries)?;
        // BM25 reads the question in the articles' words, as retrieval does.
        let stats = kb.term_stats();
        let scores: Vec<_> = vectors
            .iter()
            .zip(&queries)
            .map(|(v, t)| {
                let lexical = novapay::text::thesaurus::in_known_words(t, |s| stats.uses(s));
                kb.candidate_scores(v, lexical.as_deref().unwrap_or(t))
            })
            .collect();
        writeln!(
            file,
            "{}",
            serde_json::json!({
                "id": q.id,
                "question": question,
                "expect_source": q.expect_source,
                "unanswerable": q.unanswerable,
                "queries": scores,
            })
        )?;
    }
    file.flush()?;
    eprintln!("wrote {} questions to {}", qs.len(), out.display());
    Ok(())
}

fn answers_of_data(args: &Answers) -> anyhow::Result<()> {
    let (a, questions, split, json) = (
        &args.assistant,
        args.questions.as_path(),
        args.split.as_deref(),
        args.json,
    );
    let mut qs = answers::read_questions(questions)?;
    if let Some(split) = split {
        qs.retain(|q| q.split.as_deref() == Some(split));
    }
    anyhow::ensure!(!qs.is_empty(), "no questions in {}", questions.display());
    let index = {
        let embedder = super::load_embedder(&a.runtime, &a.embed, 32)?;
        index_of_data(&embedder, &a.embed, &a.kb)?
    };
    let mut a = a.clone();
    a.kb.index_dir = Some(index.path().to_path_buf());
    let assistant = super::load_assistant(&a, 1, false)?.assistant;
    if let Some(out) = &args.dump_candidates {
        return dump_candidates(&assistant, &qs, out);
    }
    let report = answers::evaluate(&assistant, &qs, &progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "answer mode {}; {} questions",
        report.answer_mode,
        report.results.len()
    );
    for r in &report.results {
        let mark = |ok: Option<bool>| match ok {
            Some(true) => "ok",
            Some(false) => "MISS",
            None => "-",
        };
        println!(
            "{} {:<4} source {:<4} figure {:<4} {}{}{}{}  [{}] {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.id,
            mark(r.source_in_top3),
            mark(r.expected_present),
            if r.unanswerable {
                if r.refused {
                    "refused "
                } else {
                    "NOT REFUSED "
                }
            } else if r.refused {
                "FALSE REFUSAL "
            } else {
                ""
            },
            if r.forbidden_found.is_empty() {
                String::new()
            } else {
                format!("forbidden {:?} ", r.forbidden_found)
            },
            if r.unsupported_figures.is_empty() {
                String::new()
            } else {
                format!("UNSUPPORTED {:?} ", r.unsupported_figures)
            },
            if r.sentences_removed > 0 {
                format!("({} sentence(s) removed) ", r.sentences_removed)
            } else {
                String::new()
            },
            r.elapsed_ms,
            r.question,
        );
        println!(
            "       → {}",
            r.answer
                .replace('\n', " ")
                .chars()
                .take(200)
                .collect::<String>()
        );
    }
    let show = |label: &str, t: &answers::Totals| {
        println!(
            "{label}: {} questions ({} answerable, {} unanswerable): passed {}; right source in top 3 \
             {}/{}, ranked first {}; expected figure {}/{}; forbidden string in {}; unanswerable refused {}/{}; \
             answerable refused {}/{}; answers with a figure not in their sources {}; sentences \
             removed {}; extractive {}; cached {}; mean {:.0} ms",
            t.questions,
            t.answerable,
            t.unanswerable,
            t.passed,
            t.source_in_top3,
            t.with_expected_source,
            t.source_ranked_first,
            t.expected_present,
            t.with_expected_figure,
            t.forbidden_found,
            t.unanswerable_refused,
            t.unanswerable,
            t.answerable_refused,
            t.answerable,
            t.answers_with_unsupported_figures,
            t.sentences_removed,
            t.extractive,
            t.cached,
            t.mean_ms
        );
        println!(
            "  outcomes — answerable: answered {}, suggested {}, handed off {}; right source in front \
             of the customer {}/{}; off-topic: answered {}, suggested {}, handed off {}",
            t.answerable_answered,
            t.answerable_suggested,
            t.answerable_handed_off,
            t.source_in_front,
            t.with_expected_source,
            t.unanswerable_answered,
            t.unanswerable_suggested,
            t.unanswerable_handed_off
        );
    };
    for (label, t) in &report.splits {
        show(label, t);
    }
    show("total", &report.totals);
    Ok(())
}

fn answerability(a: &Answerability) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.squad.is_some() || a.questions.is_some(),
        "give --squad DIR and/or --questions FILE"
    );
    let embedder = super::load_embedder(&a.runtime, &a.embed, 32)?;
    let config = a.rag.config(&a.embed.embedder, Default::default());
    let mut samples = Vec::new();
    if let Some(dir) = &a.squad {
        samples.extend(answerability::squad_samples(
            dir, &embedder, &config, a.limit, &progress,
        )?);
    }
    if let Some(file) = &a.questions {
        let qs = answers::read_questions(file)?;
        let index = index_of_data(&embedder, &a.embed, &a.kb)?;
        let settings = super::index_settings(&embedder, &a.embed, &a.kb);
        let kb = KnowledgeBase::open(index.path(), &settings)
            .context("opening the temporary index of --data")?;
        samples.extend(answerability::kb_samples(&kb, &embedder, &config, &qs)?);
    }
    let report = answerability::report(&samples, &config.gate);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "gate: rarity-weighted coverage >= {:.2} (stemmed words; a word of the same root counts), none \
         of the {} rarest words both missing from the excerpts and unknown to the knowledge base, \
         similarity >= {:.2}",
        report.gate.min_weighted_coverage, report.gate.rare_words, report.gate.min_similarity
    );
    println!(
        "meaning: a lexical refusal is rescued when a sentence of the top excerpts reaches cosine {}, \
         the question without its missing rare words gets at most {:.2} closer to the sentences and \
         the best excerpt stands {:.2} above the others ({})",
        report
            .gate
            .meaning
            .min_sentence_similarity
            .map_or("- (off for this embedder family)".to_string(), |t| format!("{t:.2}")),
        report.gate.meaning.max_gain_without_missing,
        report.gate.meaning.min_dense_margin,
        if report.gate.meaning.multilingual {
            "any language"
        } else {
            "English questions only: the embedder does not read Russian"
        }
    );
    for s in &report.splits {
        println!(
            "\n{}: {} answerable, {} unanswerable; at the operating point: refusal {:.1}%, false \
             refusal {:.1}%; dense/lexical top hits agree on {:.0}% of answerable, {:.0}% of \
             unanswerable",
            s.split,
            s.answerable,
            s.unanswerable,
            s.at_operating_point.refusal * 100.0,
            s.at_operating_point.false_refusal * 100.0,
            s.agreement_answerable * 100.0,
            s.agreement_unanswerable * 100.0
        );
        println!("  refusal and false refusal over the threshold:");
        println!("  threshold | coverage + rarest-   | coverage + former rule | best-excerpt BM25 +  | coverage alone");
        println!(
            "            | word rule (the gate) | (rarest words in the   | rarest-word rule     |"
        );
        println!(
            "            |                      | excerpts)              |                      |"
        );
        let cell = |p: &answerability::Point| {
            format!(
                "{:>5.1}% {:>5.1}%",
                p.refusal * 100.0,
                p.false_refusal * 100.0
            )
        };
        for (((p, f), b), w) in s
            .curve
            .iter()
            .zip(&s.curve_former_rare_rule)
            .zip(&s.curve_best_excerpt_bm25)
            .zip(&s.curve_without_rare_rule)
        {
            println!(
                "     {:.2}  | {:<20} | {:<22} | {:<20} | {}",
                p.threshold,
                cell(p),
                cell(f),
                cell(b),
                cell(w)
            );
        }
        println!("  the lexical gate, or a rescue by meaning, over the rescue's threshold:");
        println!("  threshold | best sentence        | missing rare words'");
        println!("            | (the gate's rescue)  | nearest excerpt word");
        for (p, w) in s.curve_sentence_rescue.iter().zip(&s.curve_word_rescue) {
            println!("     {:.2}  | {:<20} | {}", p.threshold, cell(p), cell(w));
        }
    }
    Ok(())
}

/// The question files of each knowledge base the gate is fitted on (paths from the repository root).
const FIT_FOLDS: &[(&str, &str, &[&str])] = &[
    (
        "data",
        "data",
        &[
            "eval/questions.jsonl",
            "eval/tune-3/data-questions.jsonl",
            "eval/heldout-3/data-questions.jsonl",
            "eval/heldout-4/data-questions.jsonl",
        ],
    ),
    (
        "tune-3-kb",
        "eval/tune-3/kb",
        &["eval/tune-3/kb-questions.jsonl"],
    ),
    (
        "kedr-kb",
        "eval/heldout-3/kb",
        &[
            "eval/heldout-3/kb-questions.jsonl",
            "eval/heldout-4/kb-questions.jsonl",
        ],
    ),
    (
        "lastochka-kb",
        "eval/heldout-5/kb",
        &["eval/heldout-5/kb-questions.jsonl"],
    ),
    (
        "tulpar-kb",
        "eval/heldout-6/kb",
        &["eval/heldout-6/kb-questions.jsonl"],
    ),
    (
        "zangak-kb",
        "eval/heldout-7/kb",
        &["eval/heldout-7/kb-questions.jsonl"],
    ),
    (
        "bura-kb",
        "eval/heldout-8/kb",
        &["eval/heldout-8/kb-questions.jsonl"],
    ),
];

/// `eval answerability --fit`: the weighing gate fitted leaving one knowledge base out, every fold
/// printed, the model written to `out`.
fn fit_gate(a: &Answerability, out: &Path) -> anyhow::Result<()> {
    let (runtime, embed, kb, rag) = (&a.runtime, &a.embed, &a.kb, &a.rag);
    let (doc2dial_dir, per_domain, json) = (a.doc2dial.as_path(), a.per_domain, a.json);
    let embedder = super::load_embedder(runtime, embed, 32)?;
    let mut config = rag.config(&embed.embedder, Default::default());
    config.gate.weighing = false;
    let mut folds = Vec::new();
    for (name, data, files) in FIT_FOLDS {
        let mut qs = Vec::new();
        for f in *files {
            qs.extend(answers::read_questions(Path::new(f))?);
        }
        let kb_args = KbArgs {
            data_dir: PathBuf::from(data),
            ..kb.clone()
        };
        let index = index_of_data(&embedder, embed, &kb_args)?;
        let settings = super::index_settings(&embedder, embed, &kb_args);
        let base = KnowledgeBase::open(index.path(), &settings)
            .with_context(|| format!("opening the temporary index of {data}"))?;
        folds.push(answerability::Fold {
            name: name.to_string(),
            samples: answerability::kb_samples(&base, &embedder, &config, &qs)?,
        });
    }
    let settings = super::index_settings(&embedder, embed, kb);
    for d in doc2dial::domain_folds(doc2dial_dir, &embedder, settings, per_domain, &progress)? {
        folds.push(answerability::Fold {
            name: format!("doc2dial-{}", d.domain),
            samples: answerability::kb_samples(&d.kb, &embedder, &config, &d.questions)?,
        });
    }
    for f in &folds {
        anyhow::ensure!(
            f.samples.iter().any(|s| s.answerable) && f.samples.iter().any(|s| !s.answerable),
            "fold {} needs answerable and off-topic questions",
            f.name
        );
    }
    // Every sample's signals, for studying the gate outside the fit (not a documented interface).
    if let Some(path) = std::env::var_os("NOVAPAY_FIT_DUMP") {
        let mut lines = String::new();
        for f in &folds {
            for s in &f.samples {
                let row = serde_json::json!({
                    "fold": f.name, "id": s.id, "answerable": s.answerable, "probe": s.probe,
                    "signals": s.signals, "follow_up_signals": s.follow_up_signals,
                    "lexical": s.signals.lexically_answerable(&config.gate),
                    "lexical_follow_up": s.follow_up_signals.as_ref().map(|g| g.lexically_answerable(&config.gate)),
                });
                lines.push_str(&format!("{row}\n"));
            }
        }
        std::fs::write(&path, lines).with_context(|| format!("writing {path:?}"))?;
    }
    let report = answerability::fit_leave_one_out(&folds, &config.gate, &embed.embedder)?;
    let text = serde_json::to_string_pretty(&report.model)?;
    std::fs::write(out, format!("{text}\n"))
        .with_context(|| format!("writing {}", out.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("fold | answerable: answered / suggested / handed off | off-topic: answered / suggested / handed off | AUC | answer at | leaks");
    for r in &report.folds {
        println!(
            "{} | {}: {} / {} / {} | {}: {} / {} / {} | {:.3} | {:.3} | {}",
            r.fold,
            r.answerable,
            r.answered,
            r.suggested,
            r.handed_off,
            r.off_topic,
            r.off_topic_answered,
            r.off_topic_suggested,
            r.off_topic_handed_off,
            r.auc,
            r.answer_at,
            r.leaks.join(" ")
        );
    }
    let m = &report.model;
    println!(
        "model (all folds): answer at {:.4}, suggest at {:.4}",
        m.answer_at, m.suggest_at
    );
    for (f, w) in m.features.iter().zip(&m.weights) {
        println!("  {f}: {w:+.3}");
    }
    println!("written to {}", out.display());
    Ok(())
}
