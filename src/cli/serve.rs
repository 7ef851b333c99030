//! Flags of `novapay serve`: the assistant, the HTTP server and the Bitrix24 bot.

use super::bitrix24::Bitrix24Args;
use super::options::AssistantArgs;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub assistant: AssistantArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub bitrix24: Bitrix24Args,
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    #[arg(long, env = "NOVAPAY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "NOVAPAY_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Comma-separated API keys; when set, every route but /health, /metrics, /openapi.json and the
    /// chat page needs one (Bearer, or Basic with the key as user name or password).
    #[arg(
        long,
        env = "NOVAPAY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Comma-separated administrator keys: valid API keys that may also read any caller's session
    /// (support staff). Other keys see only the sessions they created.
    #[arg(
        long,
        env = "NOVAPAY_ADMIN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_keys: Vec<String>,
    /// Serve without API keys on an address other than loopback (a warning is logged). Without it,
    /// `serve` refuses to listen on a public address with no keys.
    #[arg(long, env = "NOVAPAY_ALLOW_ANONYMOUS", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_anonymous: bool,
    /// Open connections at most; more clients wait to be accepted.
    #[arg(long, env = "NOVAPAY_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and an idle connection stays open).
    #[arg(long, env = "NOVAPAY_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "NOVAPAY_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Comma-separated allowed CORS origins, or * for any; none by default.
    #[arg(long, env = "NOVAPAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Generation jobs that may wait while one runs; beyond it requests get 429 at once.
    #[arg(long, env = "NOVAPAY_QUEUE_DEPTH", default_value_t = 8)]
    pub queue_depth: usize,
    /// Seconds a generation may take before the request gets 504.
    #[arg(long, env = "NOVAPAY_GENERATION_TIMEOUT_SECS", default_value_t = 120)]
    pub generation_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "NOVAPAY_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "NOVAPAY_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
    /// Log question text at info level (card-number-like digit runs are masked).
    #[arg(long, env = "NOVAPAY_LOG_QUERIES", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub log_queries: bool,
    /// Seconds between checks for a newly published index generation (`novapay index` run elsewhere);
    /// the server switches to it without a restart. 0 = never.
    #[arg(long, env = "NOVAPAY_INDEX_POLL_SECS", default_value_t = 5)]
    pub index_poll_secs: u64,
    /// Largest knowledge-base document accepted by `POST /api/v1/documents` (administrator keys), in
    /// bytes; a larger upload gets 413.
    #[arg(long, env = "NOVAPAY_MAX_UPLOAD_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// Re-index the data folder when its files change (debounced), and switch to the new generation.
    #[arg(long, env = "NOVAPAY_WATCH", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub watch: bool,
    /// Quiet time after the last change in the data folder before `--watch` re-indexes, in ms.
    #[arg(long, env = "NOVAPAY_WATCH_DEBOUNCE_MS", default_value_t = 1000)]
    pub watch_debounce_ms: u64,
    /// The LLM is a small demo model (scripts/run.sh sets it when the Hub cannot be reached): the
    /// start-up log, /health and the chat page say that answers are not reliable.
    #[arg(long, env = "NOVAPAY_DEMO_MODEL", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub demo_model: bool,
}
