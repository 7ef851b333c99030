//! The MCP server (Model Context Protocol, with the official `rmcp` SDK): the door for IDE and desktop
//! assistants that staff use. Tools `search_knowledge_base` (ranked excerpts, no LLM) and `ask` (a
//! grounded answer with sources, in a conversation the caller owns); the knowledge-base documents as
//! resources. Served over stdio (`novapay mcp`, [`serve_stdio`]) and over streamable HTTP under `/mcp`
//! on `novapay serve` (mounted by `http`, which authenticates the caller first).
//!
//! A thin adapter over `assistant`: it names neither candle nor axum. Who calls, and what answers them, come
//! in an [`McpContext`]: fixed for stdio, put into each HTTP request by the HTTP layer. Answering,
//! admission, timeouts, question logging and metrics are `assistant`'s (`Assistant::ask`, `Door::Mcp`).

mod answer;
mod resources;

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Extensions, Implementation, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;

use crate::assistant::{self, AnswerError, Assistant};

pub use resources::{document_uri, RESOURCE_PREFIX};

/// Excerpts `search_knowledge_base` returns at most.
pub const MAX_SEARCH_RESULTS: usize = 20;

/// The owner of sessions started over stdio: whoever runs `novapay mcp` on this machine.
pub const LOCAL_OWNER: &str = "local:mcp";

/// The caller of `novapay mcp` (stdio): the local user, no administrator rights.
pub fn local_caller() -> assistant::Access {
    assistant::Access {
        owner: LOCAL_OWNER.into(),
        user_id: None,
        admin: false,
    }
}

/// What a call may use: the assistant and who calls (for the session rules of `assistant`, which also
/// admits, times out, logs and counts every answer).
#[derive(Clone)]
pub struct McpContext {
    pub assistant: Arc<Assistant>,
    pub caller: assistant::Access,
}

/// Finds the [`McpContext`] of a request in its extensions (the HTTP layer puts it there).
pub type ContextLookup = fn(&Extensions) -> Option<McpContext>;

#[derive(Clone)]
enum ContextSource {
    Fixed(McpContext),
    PerRequest(ContextLookup),
}

/// The MCP server handler: tools and resources over the knowledge base.
#[derive(Clone)]
pub struct KnowledgeServer {
    context: ContextSource,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchParams {
    /// What to look for, in the customer's words (English or Russian); at most 1000 characters.
    pub query: String,
    /// How many excerpts to return (1-20; default: as many as the assistant shows its model).
    #[serde(default)]
    pub top_k: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskParams {
    /// The customer's question; at most 1000 characters.
    pub question: String,
    /// Continue this conversation (returned by an earlier `ask` of the same caller); omit to start a
    /// new one.
    #[serde(default)]
    pub session_id: Option<String>,
}

const INSTRUCTIONS: &str = "NovaPay's customer-support knowledge base (fees, limits, cards, \
transfers, accounts). `search_knowledge_base` returns ranked excerpts with their source document \
and heading, without an answer. `ask` answers a customer question only from the knowledge base, with \
its sources; when no answer can be trusted it offers the closest sections (`outcome`: suggested, \
with `suggestions`) or gives the support contacts (`outcome`: handed_off); then do not guess figures \
yourself. Pass the returned session_id to `ask` for a follow-up question. The \
documents are available as resources.";

#[tool_router]
impl KnowledgeServer {
    /// A server whose every call uses `context` (stdio).
    pub fn new(context: McpContext) -> Self {
        Self {
            context: ContextSource::Fixed(context),
            tool_router: Self::tool_router(),
        }
    }

    /// A server that finds each call's [`McpContext`] in the request (streamable HTTP).
    pub fn per_request(lookup: ContextLookup) -> Self {
        Self {
            context: ContextSource::PerRequest(lookup),
            tool_router: Self::tool_router(),
        }
    }

    fn context(&self, extensions: &Extensions) -> Result<McpContext, ErrorData> {
        match &self.context {
            ContextSource::Fixed(c) => Ok(c.clone()),
            ContextSource::PerRequest(lookup) => lookup(extensions).ok_or_else(|| {
                tracing::error!("an MCP request reached the server without its caller");
                ErrorData::internal_error("internal error; see the server log", None)
            }),
        }
    }

    #[tool(
        description = "Search NovaPay's knowledge base. Returns the best-matching excerpts, best first, \
        each with its source document, heading and similarity score, and whether the knowledge base \
        looks able to answer the query. Retrieval only: no answer is written.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search_knowledge_base(
        &self,
        Parameters(params): Parameters<SearchParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let context = self.context(&ctx.extensions)?;
        let top_k = match params.top_k {
            None => context.assistant.config.top_k.clamp(1, MAX_SEARCH_RESULTS),
            Some(k) => k as usize,
        };
        answer::search(context, params.query, top_k).await
    }

    #[tool(
        description = "Answer a customer's question from NovaPay's knowledge base only, with the \
        sources used. When no answer can be trusted, the reply offers the closest sections instead \
        (`outcome`: suggested, with `suggestions`) or gives the support contacts (`outcome`: \
        handed_off); it never guesses. Returns a session_id: pass it back to ask a \
        follow-up question in the same conversation.",
        annotations(read_only_hint = false, open_world_hint = false)
    )]
    async fn ask(
        &self,
        Parameters(params): Parameters<AskParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let context = self.context(&ctx.extensions)?;
        answer::ask(context, params.question, params.session_id).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for KnowledgeServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("novapay", env!("CARGO_PKG_VERSION"))
                .with_title("NovaPay knowledge base"),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let context = self.context(&ctx.extensions)?;
        Ok(ListResourcesResult::with_all_items(resources::list(
            &context.assistant,
        )))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let context = self.context(&ctx.extensions)?;
        resources::read(&context.assistant, &request.uri).map(Into::into)
    }
}

/// Serves `server` on this process's stdin/stdout until the client closes them. Logs go to stderr.
pub async fn serve_stdio(server: KnowledgeServer) -> Result<(), McpError> {
    use rmcp::ServiceExt;
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| McpError(e.to_string()))?;
    Ok(())
}

/// The MCP session could not start or ended abnormally.
#[derive(Debug, thiserror::Error)]
#[error("MCP server: {0}")]
pub struct McpError(String);

/// A tool call that ran and failed in a way the calling model should read and act on.
fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// The one place an answering error becomes what an MCP caller sees: what to do, as text the calling
/// model reads (a tool error, not a protocol error).
fn from_answer_error(error: AnswerError) -> CallToolResult {
    match &error {
        AnswerError::Internal(detail) => {
            tracing::error!(error = %crate::logsafe::user_text(detail), "MCP call failed");
            tool_error("internal error; see the server log")
        }
        e => match e.retry_after() {
            Some(after) => tool_error(format!("{e}; retry in {} s", after.as_secs())),
            None => tool_error(e.to_string()),
        },
    }
}
