//! `novapay serve`: the HTTP API, the chat page, MCP over HTTP and the Bitrix24 bot, with the index
//! watched for new generations (and, with `--watch`, the data folder re-indexed on change).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use novapay::assistant::documents::Documents;
use novapay::assistant::Assistant;
use novapay::embed::Embedder;
use novapay::http::{self, ServerConfig, Services};
use novapay::index::{GenerationWatcher, IndexSettings, Library};
use novapay::integrations::bitrix24::{
    check_webhook_url, BotTexts, PollConfig, Poller, Portal, RetryPolicy, WebhookConfig,
    WebhookHandler,
};

use super::options::AssistantArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub assistant: AssistantArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub audit: super::options::AuditArgs,
    #[command(flatten)]
    pub bitrix24: Bitrix24Args,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on (0.0.0.0: every interface; then API keys are required, see
    /// --allow-anonymous).
    #[arg(long, env = "NOVAPAY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
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

/// The Bitrix24 chat bot in `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct Bitrix24Args {
    /// off; handler (Bitrix24 posts events to /integrations/bitrix24/events); or poll (novapay pulls
    /// bot API v2 events, for servers without a public URL).
    #[arg(
        long = "bitrix24",
        env = "NOVAPAY_BITRIX24_MODE",
        value_enum,
        default_value = "off"
    )]
    pub mode: Bitrix24Mode,
    /// Handler mode: the application token events must carry (default: the one sent at ONAPPINSTALL,
    /// kept in <state-dir>/bitrix24_application_token).
    #[arg(
        long,
        env = "NOVAPAY_BITRIX24_APPLICATION_TOKEN",
        hide_env_values = true
    )]
    pub bitrix24_application_token: Option<String>,
    /// Incoming-webhook URL (https://PORTAL/rest/USER/SECRET/): polling mode, and handler mode for a
    /// bot registered with `novapay bitrix24 register`.
    #[arg(long, env = "NOVAPAY_BITRIX24_WEBHOOK_URL", hide_env_values = true)]
    pub bitrix24_webhook_url: Option<String>,
    /// Handler mode with an incoming webhook: the CLIENT_ID printed by `novapay bitrix24 register`.
    #[arg(long, env = "NOVAPAY_BITRIX24_CLIENT_ID", hide_env_values = true)]
    pub bitrix24_client_id: Option<String>,
    /// Handler mode with a local application: novapay's public event URL
    /// (https://HOST/integrations/bitrix24/events); installing the application then registers the bot.
    #[arg(long, env = "NOVAPAY_BITRIX24_HANDLER_URL")]
    pub bitrix24_handler_url: Option<String>,
    /// Handler mode: the portal's address (https://PORTAL.bitrix24.ru). Replies go only to its REST
    /// endpoint (never to an address an event names), and without an application token an
    /// installation is accepted only from this portal, once.
    #[arg(long, env = "NOVAPAY_BITRIX24_PORTAL")]
    pub bitrix24_portal: Option<String>,
    /// Handler mode: the portal's member_id; when set, an installation must carry it.
    #[arg(long, env = "NOVAPAY_BITRIX24_MEMBER_ID", hide_env_values = true)]
    pub bitrix24_member_id: Option<String>,
    /// Allow plain http:// for the portal and the webhook URL (a test portal only; https otherwise).
    #[arg(long, env = "NOVAPAY_BITRIX24_ALLOW_HTTP", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub bitrix24_allow_http: bool,
    /// Polling mode: the bot id printed by `novapay bitrix24 register --poll`.
    #[arg(long, env = "NOVAPAY_BITRIX24_BOT_ID")]
    pub bitrix24_bot_id: Option<u64>,
    /// Polling mode: the bot token printed by `novapay bitrix24 register --poll`.
    #[arg(long, env = "NOVAPAY_BITRIX24_BOT_TOKEN", hide_env_values = true)]
    pub bitrix24_bot_token: Option<String>,
    /// Polling mode: milliseconds to wait once there are no more events (Bitrix24 recommends 5-30 s).
    #[arg(
        long,
        env = "NOVAPAY_BITRIX24_POLL_INTERVAL_MS",
        default_value_t = 5000
    )]
    pub bitrix24_poll_interval_ms: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitrix24Mode {
    Off,
    Handler,
    Poll,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (a, server, bitrix24) = (&args.assistant, &args.server, &args.bitrix24);
    // Thread pools are sized before tokio or candle start any; a GPU that cannot be used fails here.
    let (device, threads) = super::prepare_device(&a.runtime)?;
    tracing::info!(%device, threads, "compute device");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let audit = args.audit.clone();
    runtime.block_on(serve(a.clone(), server.clone(), audit, bitrix24.clone()))
}

/// The state directory holds conversations and tokens: created 700, and an existing one narrowed to
/// its owner (best effort: a directory novapay does not own keeps its mode, with a warning).
fn private_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                tracing::warn!(dir = %dir.display(), error = %e, "the state directory is readable by others");
            }
        }
    }
    #[cfg(not(unix))]
    builder
        .create(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    Ok(())
}

async fn serve(
    a: AssistantArgs,
    server_args: ServerArgs,
    audit: super::options::AuditArgs,
    bitrix24: Bitrix24Args,
) -> anyhow::Result<()> {
    private_state_dir(&a.kb.state_dir)?;
    // Administrators' reads of customer data and erasures are recorded, or the server does not start.
    let audit = Arc::new(
        audit
            .open(&a.kb)
            .context("set --audit-log / NOVAPAY_AUDIT_LOG to a file novapay may write")?,
    );
    // Configuration mistakes fail here, before minutes of model loading.
    let bitrix24_handler = match bitrix24.mode {
        Bitrix24Mode::Handler => Some(Arc::new(WebhookHandler::open(webhook_config(
            &bitrix24, &a,
        )?)?)),
        _ => None,
    };
    let poller = match bitrix24.mode {
        Bitrix24Mode::Poll => Some(Poller::new(poll_config(&bitrix24, &a)?)?),
        _ => None,
    };
    let keys = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()
    };
    let config = ServerConfig {
        api_keys: keys(&server_args.api_keys),
        admin_keys: keys(&server_args.admin_keys),
        max_connections: server_args.max_connections.max(1),
        header_read_timeout: Duration::from_secs(server_args.header_timeout_secs.max(1)),
        body_read_timeout: Duration::from_secs(server_args.body_timeout_secs.max(1)),
        cors_origins: server_args.cors_origins.clone(),
        generation_timeout: Duration::from_secs(server_args.generation_timeout_secs.max(1)),
        shutdown_timeout: Duration::from_secs(server_args.shutdown_timeout_secs),
        max_body_bytes: server_args.max_body_bytes.max(1024),
        bitrix24: bitrix24_handler,
        demo_model: server_args.demo_model,
        audit: Some(audit),
    };
    let addr = format!("{}:{}", server_args.host, server_args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (port in use? set NOVAPAY_PORT)"))?;
    let bound = listener.local_addr()?;
    let anonymous = config.api_keys.is_empty() && config.admin_keys.is_empty();
    if anonymous && !bound.ip().is_loopback() {
        if !server_args.allow_anonymous {
            anyhow::bail!(
                "refusing to serve {bound} without API keys: anyone who reaches this address could \
                 use the assistant and its conversations. Set NOVAPAY_API_KEYS (and NOVAPAY_ADMIN_KEYS \
                 for support staff), listen on 127.0.0.1 (NOVAPAY_HOST), or set \
                 NOVAPAY_ALLOW_ANONYMOUS=1 if an authenticating proxy stands in front"
            );
        }
        tracing::warn!(
            addr = %bound,
            "serving without API keys on a non-loopback address (NOVAPAY_ALLOW_ANONYMOUS=1)"
        );
        eprintln!(
            "novapay: WARNING: no API keys and listening on {bound} (NOVAPAY_ALLOW_ANONYMOUS=1)"
        );
    }
    let mut server = http::start(listener, config)?;
    tracing::info!(addr = %server.addr, "listening; loading models and index");
    eprintln!(
        "novapay: listening on http://{} (loading models and index...)",
        server.addr
    );

    if server_args.demo_model {
        tracing::warn!("demo model: answers are not reliable");
        eprintln!(
            "novapay: DEMO MODEL — answers are not reliable (a small test model stands in for the \
             product's; see scripts/run.sh)"
        );
    }
    let queue_depth = server_args.queue_depth;
    let log_questions = server_args.log_queries;
    let index_dir = a.kb.index_dir();
    let data_dir = a.kb.data_dir.clone();
    let loaded = tokio::task::spawn_blocking(move || load(&a, queue_depth, log_questions)).await?;
    let (services, index_settings, embedder) = match loaded {
        Ok(s) => s,
        Err(e) => {
            server.shutdown().await;
            return Err(e);
        }
    };
    tracing::info!(llm = %services.llm_name, embedder = %services.embedder_name, "ready");
    eprintln!(
        "novapay: ready ({} + {})",
        services.llm_name, services.embedder_name
    );
    let stop_polling = Arc::new(AtomicBool::new(false));
    let polling = poller.map(|poller| {
        let assistant = services.assistant.clone();
        let stop = stop_polling.clone();
        eprintln!("novapay: polling Bitrix24 for bot events");
        std::thread::Builder::new()
            .name("bitrix24-poll".into())
            .spawn(move || poller.run(assistant, stop))
    });
    // Knowledge-base management (documents API, --watch): one library, one change at a time.
    let library = Arc::new(Library::new(
        &data_dir,
        &index_dir,
        index_settings.clone(),
        embedder,
        server_args.max_upload_bytes.max(1024),
    ));
    let documents = Arc::new(Documents::new(library.clone(), services.assistant.clone()));
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watching = (server_args.index_poll_secs > 0).then(|| {
        let watcher = GenerationWatcher::new(
            &index_dir,
            index_settings,
            &services.assistant.knowledge_base().manifest.generation,
        );
        watch_index(
            watcher,
            services.assistant.clone(),
            library.clone(),
            Duration::from_secs(server_args.index_poll_secs),
            stop_watching.clone(),
        )
    });
    // Kept alive until shutdown: dropping the debouncer stops watching.
    let _data_watch = if server_args.watch {
        let debounce = Duration::from_millis(server_args.watch_debounce_ms.max(50));
        match watch_data_folder(documents.clone(), debounce) {
            Ok(w) => {
                eprintln!(
                    "novapay: watching {} for changes (re-index after {} ms of quiet)",
                    data_dir.display(),
                    debounce.as_millis()
                );
                Some(w)
            }
            Err(e) => {
                server.shutdown().await;
                return Err(e);
            }
        }
    } else {
        None
    };
    server.set_documents(documents);
    server.set_ready(services);

    tokio::select! {
        r = server.wait() => r.context("server stopped")?,
        _ = shutdown_signal() => {
            eprintln!("novapay: shutting down, finishing in-flight requests");
            server.shutdown().await;
        }
    }
    stop_polling.store(true, Ordering::Relaxed);
    stop_watching.store(true, Ordering::Relaxed);
    if let Some(Ok(thread)) = watching {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    if let Some(Ok(thread)) = polling {
        // The poller finishes the answer it is writing; its thread is not awaited beyond that.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    Ok(())
}

fn webhook_config(b: &Bitrix24Args, a: &AssistantArgs) -> anyhow::Result<WebhookConfig> {
    let portal = b
        .bitrix24_portal
        .as_deref()
        .filter(|p| !p.trim().is_empty())
        .map(|p| Portal::parse(p, b.bitrix24_allow_http))
        .transpose()
        .map_err(|e| anyhow::anyhow!("NOVAPAY_BITRIX24_PORTAL: {e}"))?;
    if let Some(url) = &b.bitrix24_webhook_url {
        check_webhook_url(url, b.bitrix24_allow_http)
            .map_err(|e| anyhow::anyhow!("NOVAPAY_BITRIX24_WEBHOOK_URL: {e}"))?;
    }
    if portal.is_none() && b.bitrix24_webhook_url.is_none() {
        anyhow::bail!(
            "Bitrix24 handler mode needs the portal replies go to: set NOVAPAY_BITRIX24_PORTAL \
             (https://PORTAL.bitrix24.ru) for a local application, or NOVAPAY_BITRIX24_WEBHOOK_URL \
             for a bot registered with `novapay bitrix24 register`"
        );
    }
    Ok(WebhookConfig {
        portal,
        member_id: b
            .bitrix24_member_id
            .clone()
            .filter(|m| !m.trim().is_empty()),
        application_token: b
            .bitrix24_application_token
            .clone()
            .filter(|t| !t.trim().is_empty()),
        token_file: a.kb.state_dir.join("bitrix24_application_token"),
        webhook_url: b.bitrix24_webhook_url.clone(),
        client_id: b.bitrix24_client_id.clone(),
        register_on_install: b.bitrix24_handler_url.clone(),
        texts: BotTexts::default(),
        retry: RetryPolicy::default(),
    })
}

fn poll_config(b: &Bitrix24Args, a: &AssistantArgs) -> anyhow::Result<PollConfig> {
    let missing = |what: &str| {
        anyhow::anyhow!(
            "Bitrix24 polling needs {what}; `novapay bitrix24 register --poll --webhook-url ...` prints \
             the settings"
        )
    };
    let bot_id = b
        .bitrix24_bot_id
        .ok_or_else(|| missing("NOVAPAY_BITRIX24_BOT_ID"))?;
    if let Some(url) = &b.bitrix24_webhook_url {
        check_webhook_url(url, b.bitrix24_allow_http)
            .map_err(|e| anyhow::anyhow!("NOVAPAY_BITRIX24_WEBHOOK_URL: {e}"))?;
    }
    Ok(PollConfig {
        webhook_url: b
            .bitrix24_webhook_url
            .clone()
            .ok_or_else(|| missing("NOVAPAY_BITRIX24_WEBHOOK_URL"))?,
        bot_id,
        bot_token: b
            .bitrix24_bot_token
            .clone()
            .ok_or_else(|| missing("NOVAPAY_BITRIX24_BOT_TOKEN"))?,
        batch: 50,
        idle_wait: Duration::from_millis(b.bitrix24_poll_interval_ms.max(100)),
        // Per bot: a bot registered anew starts from its own oldest unconfirmed event.
        offset_file: Some(
            a.kb.state_dir
                .join(format!("bitrix24_poll_offset_{bot_id}")),
        ),
        texts: BotTexts::default(),
        retry: RetryPolicy::default(),
    })
}

/// Switches the assistant to each newly published index generation: a `novapay index` run on the same
/// index folder (this or another machine) publishes, every replica follows within `every`.
fn watch_index(
    mut watcher: GenerationWatcher,
    assistant: Arc<Assistant>,
    library: Arc<Library>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("index-watch".into())
        .spawn(move || {
            let tick = Duration::from_millis(200).min(every);
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < every {
                    continue;
                }
                waited = Duration::ZERO;
                // Under the library's lock: an upload publishing a newer generation at the same time
                // cannot be switched back by this older one.
                library.exclusive(|| {
                    watcher.set_serving(assistant.knowledge_base().generation());
                    match watcher.poll() {
                        Ok(None) => {}
                        Ok(Some(kb)) => {
                            let (generation, chunks) = (kb.manifest.generation.clone(), kb.len());
                            let old = assistant.replace_knowledge_base(Arc::new(kb));
                            tracing::info!(%generation, chunks, previous = %old.manifest.generation, "switched to a new index generation");
                            eprintln!("novapay: switched to index generation {generation} ({chunks} chunks)");
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "a new index generation was published but cannot be used; still answering from the previous one"
                        ),
                    }
                });
            }
        })
}

/// `--watch`: re-indexes the data folder once it has been quiet for `debounce` after a change
/// (hidden files, such as an upload's temporary file, are ignored). Re-indexing embeds only changed
/// files and publishes nothing when nothing changed.
fn watch_data_folder(
    documents: Arc<Documents>,
    debounce: Duration,
) -> anyhow::Result<
    notify_debouncer_mini::Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
> {
    use notify_debouncer_mini::notify::RecursiveMode;
    let data_dir = documents.library().data_dir().to_path_buf();
    anyhow::ensure!(
        data_dir.is_dir(),
        "--watch: the data folder {} does not exist (NOVAPAY_DATA_DIR)",
        data_dir.display()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let mut debouncer = notify_debouncer_mini::new_debouncer(debounce, tx)
        .context("--watch: cannot watch the data folder")?;
    debouncer
        .watcher()
        .watch(&data_dir, RecursiveMode::Recursive)
        .with_context(|| format!("--watch: cannot watch {}", data_dir.display()))?;
    std::thread::Builder::new()
        .name("data-watch".into())
        .spawn(move || {
            // Ends when the debouncer (and its sender) is dropped at shutdown.
            for result in rx {
                let events = match result {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the data folder");
                        continue;
                    }
                };
                let relevant = events.iter().any(|e| {
                    e.path
                        .strip_prefix(&data_dir)
                        .unwrap_or(&e.path)
                        .components()
                        .all(|c| !c.as_os_str().to_string_lossy().starts_with('.'))
                });
                if !relevant {
                    continue;
                }
                match documents.reindex("data folder changed") {
                    Ok(change) if change.published => {
                        let r = &change.report;
                        eprintln!(
                            "novapay: data folder changed: index generation {} ({} added, {} updated, {} removed, {} chunks embedded)",
                            r.generation,
                            r.added.len(),
                            r.updated.len(),
                            r.removed.len(),
                            r.chunks_embedded
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "re-indexing after a data folder change failed; still answering from the previous generation"),
                }
            }
        })
        .context("--watch: cannot start the watcher thread")?;
    Ok(debouncer)
}

fn load(
    a: &AssistantArgs,
    queue_depth: usize,
    log_questions: bool,
) -> anyhow::Result<(Services, IndexSettings, Arc<Embedder>)> {
    let loaded = super::load_assistant(a, queue_depth, log_questions)?;
    let services = Services {
        assistant: loaded.assistant,
        llm_name: loaded.llm_name,
        embedder_name: loaded.embedder_name,
        models_pinned: loaded.models_pinned,
    };
    Ok((services, loaded.index_settings, loaded.embedder))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
