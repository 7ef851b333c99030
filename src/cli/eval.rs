//! `novapay eval ...`: retrieval and answer quality on evaluation sets.

use std::path::PathBuf;

use clap::Subcommand;

use super::options::{AssistantArgs, EmbedArgs, KbArgs, RagArgs, RuntimeArgs};

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// nDCG@10, recall@10 and recall@100 on a BEIR dataset (corpus.jsonl, queries, qrels), as BEIR does.
    Retrieval {
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
    },
    /// Knowledge-base regression questions through the whole answer path (the check a support team
    /// runs after every knowledge-base edit): right source, expected figures, forbidden strings,
    /// refusals, figures the sources do not state. `--data` is indexed afresh into a temporary folder.
    Answers {
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
    },
    /// Refusal of unanswerable and false refusal of answerable questions over the gate's threshold,
    /// on SQuAD 2.0 (each question against its article) and on a questions file (per split).
    Answerability {
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
    },
    /// doc2dial: recall@5 of the gold passage for follow-up questions, with and without history.
    Dialogue {
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
    },
}
