//! The grounded-answer prompt: answer only from numbered excerpts, in the customer's language, and say
//! so plainly when the excerpts do not contain the answer.

use crate::engine::{ChatMessage, Role};

/// A piece of the knowledge base shown to the model.
#[derive(Debug, Clone)]
pub struct Excerpt {
    pub source: String,
    pub text: String,
}

pub const SYSTEM_PROMPT: &str = "You are NovaPay's customer-support assistant. Answer the customer's \
question using only the numbered excerpts below. Reply in the language of the question. Never invent \
fees, limits, dates, contacts or other facts that the excerpts do not state. If the excerpts do not \
contain the answer, say so plainly and suggest contacting NovaPay support. Name the excerpt numbers you \
used, like [1].";

/// System message with the instructions and the excerpts, the earlier turns of the conversation, then
/// the question as the last user turn. (SmolLM2-135M followed its excerpts far better here than with
/// them in the user turn.)
pub fn grounded_messages(
    question: &str,
    excerpts: &[Excerpt],
    history: &[ChatMessage],
) -> Vec<ChatMessage> {
    let mut system = String::from(SYSTEM_PROMPT);
    system.push_str("\n\nExcerpts:\n");
    for (i, e) in excerpts.iter().enumerate() {
        system.push_str(&format!(
            "[{}] ({})\n{}\n\n",
            i + 1,
            e.source,
            e.text.trim()
        ));
    }
    let mut messages = vec![ChatMessage::new(
        Role::System,
        system.trim_end().to_string(),
    )];
    messages.extend(history.iter().cloned());
    messages.push(ChatMessage::new(Role::User, question.trim().to_string()));
    messages
}
