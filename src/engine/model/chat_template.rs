//! Chat prompts: renders the model's own Jinja chat template (`tokenizer.chat_template` in the GGUF) the
//! way Hugging Face transformers does, with built-in Llama 3, ChatML and Gemma templates as fallbacks, and turns
//! the rendered prompt into token ids with message contents encoded as plain text.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::engine::tokenizer::LlmTokenizer;
use crate::engine::EngineError;

pub const LLAMA3_TEMPLATE: &str = include_str!("templates/llama3.jinja");
pub const CHATML_TEMPLATE: &str = include_str!("templates/chatml.jinja");
/// Gemma 3 Instruct's template (its tokenizer_config.json): `<start_of_turn>user` / `model`, the system
/// text folded into the first user turn.
pub const GEMMA_TEMPLATE: &str = include_str!("templates/gemma.jinja");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// Which template to use: the GGUF's own, or a named built-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The model's template, or a built-in picked from its special tokens when it has none.
    Auto,
    Llama3,
    ChatMl,
    Gemma,
}

impl std::str::FromStr for TemplateChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "gguf" => Ok(Self::Auto),
            "llama3" => Ok(Self::Llama3),
            "chatml" => Ok(Self::ChatMl),
            "gemma" => Ok(Self::Gemma),
            other => Err(format!(
                "unknown chat template `{other}` (expected auto, llama3, chatml or gemma)"
            )),
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    pub name: &'static str,
}

impl ChatTemplate {
    /// `source` is Jinja text; `name` says where it came from (for logs and /health).
    pub fn new(
        source: String,
        name: &'static str,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source)
            .map_err(|e| EngineError::Template(format!("cannot parse chat template: {e}")))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
            name,
        })
    }

    /// Picks the template for a model: the GGUF's own unless `choice` names a built-in.
    pub fn select(
        choice: &TemplateChoice,
        gguf_template: Option<&str>,
        tokenizer: &LlmTokenizer,
    ) -> Result<Self, EngineError> {
        let token = |id: Option<u32>| id.map(|id| tokenizer.piece(id)).unwrap_or_default();
        let bos = token(tokenizer.bos);
        let eos = token(tokenizer.eos);
        let builtin_llama3 = || {
            Self::new(
                LLAMA3_TEMPLATE.to_string(),
                "llama3",
                "<|begin_of_text|>".to_string(),
                "<|eot_id|>".to_string(),
            )
        };
        let builtin_chatml = || {
            Self::new(
                CHATML_TEMPLATE.to_string(),
                "chatml",
                String::new(),
                "<|im_end|>".into(),
            )
        };
        let builtin_gemma = || {
            Self::new(
                GEMMA_TEMPLATE.to_string(),
                "gemma",
                "<bos>".to_string(),
                "<end_of_turn>".into(),
            )
        };
        match choice {
            TemplateChoice::Llama3 => builtin_llama3(),
            TemplateChoice::ChatMl => builtin_chatml(),
            TemplateChoice::Gemma => builtin_gemma(),
            TemplateChoice::Auto => match gguf_template {
                Some(src) if !src.trim().is_empty() => Self::new(src.to_string(), "gguf", bos, eos),
                _ if tokenizer.token_id("<|start_header_id|>").is_some() => builtin_llama3(),
                _ if tokenizer.token_id("<|im_start|>").is_some() => builtin_chatml(),
                _ if tokenizer.token_id("<start_of_turn>").is_some() => builtin_gemma(),
                _ => Err(EngineError::Template(
                    "the model has no chat template and no Llama 3, ChatML or Gemma tokens; \
                     choose one with --chat-template"
                        .into(),
                )),
            },
        }
    }

    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Template(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| EngineError::Template(format!("cannot render chat template: {e}")))
    }

    /// Renders and tokenizes a conversation. Each message's content is encoded as plain text, so control
    /// strings a customer types stay text; the template's own markers become control tokens. A BOS is
    /// added when the model wants one and the template did not already write it.
    pub fn encode(
        &self,
        tokenizer: &LlmTokenizer,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, EngineError> {
        let rendered = self.render(messages, add_generation_prompt)?;
        let mut ids = Vec::new();
        let mut cursor = 0;
        for message in messages {
            let content = message.content.trim();
            if content.is_empty() {
                continue;
            }
            let Some(offset) = rendered[cursor..].find(content) else {
                continue;
            };
            let start = cursor + offset;
            ids.extend(tokenizer.encode(&rendered[cursor..start], true)?);
            ids.extend(tokenizer.encode(content, false)?);
            cursor = start + content.len();
        }
        ids.extend(tokenizer.encode(&rendered[cursor..], true)?);
        if tokenizer.add_bos {
            if let Some(bos) = tokenizer.bos {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }
}
