//! `novapay mcp`: the MCP server on stdin/stdout for a local MCP client (an IDE or desktop assistant
//! that starts it). Logs go to stderr; stdout carries only the protocol.

use super::options::AssistantArgs;
use anyhow::Context;
use novapay::mcp::{local_caller, serve_stdio, KnowledgeServer, McpContext};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub assistant: AssistantArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Models load before the protocol starts: a client sees a working server or an exit with the
    // reason on stderr.
    let assistant = super::load_assistant(&args.assistant, 1, false)?.assistant;
    tracing::info!("MCP server on stdio ready");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let server = KnowledgeServer::new(McpContext {
        assistant,
        // Whoever runs the process: sessions it starts belong to the local user of stdio.
        caller: local_caller(),
    });
    runtime.block_on(serve_stdio(server))?;
    // A blocking read of stdin may still be pending; do not wait for it.
    runtime.shutdown_background();
    Ok(())
}
