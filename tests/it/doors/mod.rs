//! The doors a question comes in by: the REST API, the OpenAI-compatible API, MCP, the Bitrix24 bot,
//! 1C, the command line, the web chat page, and one question through all of them.

mod bitrix24;
mod browser;
mod cli;
mod front_doors;
mod http;
mod integrations;
mod mcp;
mod openai;
