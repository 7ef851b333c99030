//! `novapay index`: builds or updates the knowledge-base index from the data folder (only changed files are embedded again).

use super::options::{EmbedArgs, KbArgs, RuntimeArgs};
use indicatif::{ProgressBar, ProgressStyle};
use novapay::index::{build_index, IndexJob};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub embed: EmbedArgs,
    #[command(flatten)]
    pub kb: KbArgs,
    /// Re-embed every file, e.g. after changing the embedder or the chunk size.
    #[arg(long)]
    pub rebuild: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let Args {
        runtime,
        embed,
        kb,
        rebuild,
        json,
    } = a;
    let (rebuild, json) = (*rebuild, *json);
    let embedder = super::load_embedder(runtime, embed, 32)?;
    let job = IndexJob {
        data_dir: kb.data_dir.clone(),
        index_dir: kb.index_dir(),
        settings: super::index_settings(&embedder, embed, kb),
        rebuild,
        fail_after_files: None,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "embedding {bar:40} {pos}/{len} chunks ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = build_index(&job, &embedder, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for (file, reason) in &report.failed {
        eprintln!("skipped {file}: {reason}");
    }
    println!(
        "indexed {} files into {} ({} chunks): {} added, {} updated, {} unchanged, {} removed, {} failed; \
         {} chunks embedded in {:.1} s",
        report.files,
        job.index_dir.display(),
        report.chunks,
        report.added.len(),
        report.updated.len(),
        report.unchanged,
        report.removed.len(),
        report.failed.len(),
        report.chunks_embedded,
        report.elapsed_ms as f64 / 1000.0
    );
    if !report.cleanup.in_use.is_empty() {
        println!(
            "kept {} older generation(s) that a running server still answers from ({}); the next run \
             deletes them once no server holds them (running servers switch to {} by themselves)",
            report.cleanup.in_use.len(),
            report.cleanup.in_use.join(", "),
            report.generation
        );
    }
    Ok(())
}
