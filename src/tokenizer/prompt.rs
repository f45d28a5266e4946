//! The one chat-prompt builder: OpenAI-style messages (and tools) -> the chat template's text,
//! with the generation prompt -> prompt token ids. `wick run` and request validation both build
//! their prompts here, so a change to templating is made once.
//!
//! Plain CPU work, run by the caller (the main thread for `wick run`, a `spawn_blocking` thread
//! for a request); never on the engine's model thread.

use super::{ChatTemplate, TemplateError, Tokenizer, TokenizerError};

/// A rendered and tokenized chat prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The prompt's token ids, BOS included where the model wants one.
    pub ids: Vec<u32>,
    /// The template's output that `ids` encode.
    pub text: String,
}

/// Why a chat prompt could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The template failed to render the messages (or raised an exception).
    #[error("chat template: {0}")]
    Template(#[from] TemplateError),
    /// The tokenizer could not encode the rendered text.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
}

/// Renders `messages` (and `tools`, for a template that takes them) with the generation prompt
/// appended, then encodes the text for the model, parsing special-token text: a template
/// writes `<|im_start|>` and the like on purpose.
pub fn render_prompt(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[serde_json::Value],
    tools: Option<&[serde_json::Value]>,
) -> Result<Prompt, PromptError> {
    let text = template.render(messages, tools, true)?;
    let ids = tokenizer.encode_prompt(&text, true)?;
    Ok(Prompt { ids, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::testing::bytes_only_gpt2;
    use serde_json::json;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}\
        <|im_end|>\n{% endfor %}{% if tools %}tools: {{ tools | length }}\n{% endif %}\
        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    #[test]
    fn renders_with_the_generation_prompt_and_parses_special_tokens() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").expect("compiles");
        let tok = bytes_only_gpt2();
        let messages = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Hi"}),
        ];
        let prompt = render_prompt(&template, &tok, &messages, None).expect("renders");
        assert_eq!(
            prompt.text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            prompt.ids,
            tok.encode_prompt(&prompt.text, true).expect("encodes")
        );
        // `<|im_start|>` (id 1) and `<|im_end|>` (id 2) are one token each, not their bytes.
        assert_eq!(prompt.ids.iter().filter(|&&id| id == 1).count(), 3);
        assert_eq!(prompt.ids.iter().filter(|&&id| id == 2).count(), 2);
        assert_eq!(tok.decode(&prompt.ids, false), prompt.text);
    }

    #[test]
    fn tools_reach_the_template() {
        let template = ChatTemplate::new(CHATML, "", "").expect("compiles");
        let tools = [json!({"type": "function", "function": {"name": "f"}})];
        let messages = [json!({"role": "user", "content": "x"})];
        let prompt =
            render_prompt(&template, &bytes_only_gpt2(), &messages, Some(&tools)).expect("ok");
        assert!(prompt.text.contains("tools: 1\n"), "{}", prompt.text);
    }

    #[test]
    fn template_errors_are_template_errors() {
        let template = ChatTemplate::new("{{ raise_exception('no') }}", "", "").expect("compiles");
        let err = render_prompt(&template, &bytes_only_gpt2(), &[], None).expect_err("raises");
        assert!(matches!(err, PromptError::Template(_)), "{err:?}");
        assert!(err.to_string().starts_with("chat template: "), "{err}");
    }
}
