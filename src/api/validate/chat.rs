//! `POST /v1/chat/completions` requests: messages (and tools) through the chat template,
//! `response_format` and forced tool calls compiled into the output grammar.

use serde_json::Value as Json;

use super::messages;
use super::tools::{self, Tools};
use super::{Draft, Output, Reply, TextRules, ValidationError, Validator};
use crate::api::openai::{ChatCompletionRequest, ChatMessage};
use crate::constraint::{Constraint, Grammar};
use crate::engine::ValidRequest;
use crate::tokenizer::{render_prompt, Prompt, PromptError};

/// A chat request, validated.
#[derive(Debug, Clone)]
pub struct ValidChat {
    pub request: ValidRequest,
    pub text: TextRules,
    pub reply: Reply,
}

/// The message as the template sees it: content flattened to one string.
pub fn flatten_message(m: &ChatMessage) -> Json {
    let mut obj = m.extra.clone();
    obj.insert("role".into(), m.role.clone().into());
    let content = messages::text_of(m.content.as_ref()).map_or(Json::Null, Json::String);
    obj.insert("content".into(), content);
    Json::Object(obj)
}

/// `response_format` -> the grammar it asks for (`None` for text).
pub fn response_format(v: Option<&Json>) -> Result<Option<Grammar>, ValidationError> {
    let p = "response_format";
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.get("type").and_then(Json::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::JsonObject)),
        Some("json_schema") => {
            let schema = v
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| {
                    ValidationError::invalid(
                        "response_format.json_schema.schema is required for type json_schema",
                        p,
                    )
                })?;
            match schema {
                Json::Object(_) => Ok(Some(Grammar::JsonSchema(schema.clone()))),
                Json::Bool(true) => Ok(Some(Grammar::JsonSchema(serde_json::json!({})))),
                other => Err(ValidationError::invalid(
                    format!("response_format.json_schema.schema must be a JSON Schema object, got {other}"),
                    p,
                )),
            }
        }
        _ => Err(ValidationError::invalid(
            format!("response_format.type must be \"text\", \"json_object\" or \"json_schema\", got {v}"),
            p,
        )),
    }
}

impl Validator {
    /// Renders and tokenizes `messages` with the generation prompt (special-token text in the
    /// template is parsed). With `tools`: passed to a template that renders tools, else
    /// described in the system prompt; tool calls and `tool` messages in the history are
    /// rendered as Hermes text for a template without tool support.
    pub fn chat_prompt(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[Json]>,
    ) -> Result<Prompt, ValidationError> {
        let param = "messages";
        if messages.is_empty() {
            return Err(ValidationError::invalid(
                "messages must not be empty",
                param,
            ));
        }
        let template = self.template.as_deref().ok_or_else(|| {
            ValidationError::invalid(
                "this model has no chat template: use /v1/completions",
                param,
            )
        })?;
        messages::check(messages)?;
        let mut msgs: Vec<_> = messages::system_first(messages.to_vec())
            .iter()
            .map(flatten_message)
            .collect();
        messages::legacy_history(&mut msgs);
        let template_tools = if template.uses_tools() {
            tools::history_for_template(&mut msgs);
            tools
        } else {
            tools::history_as_text(&mut msgs);
            if let Some(t) = tools {
                tools::inject_system(&mut msgs, t);
            }
            None
        };
        render_prompt(template, &self.tokenizer, &msgs, template_tools).map_err(|e| {
            let message = match e {
                // The template engine's own words ("tried to use + operator on ...") say
                // nothing to a client: they go to the log.
                PromptError::Template(_) => {
                    tracing::info!(error = %e, "the chat template refused the messages");
                    "the model's chat template cannot render these messages (check each \
                     message's role, content and tool calls)"
                        .to_string()
                }
                PromptError::Tokenizer(t) => t.to_string(),
            };
            ValidationError::invalid(message, param)
        })
    }

    /// The chat route's prompt for `messages` with `tools` and `tool_choice` (in the prompt
    /// unless `tool_choice` is `none`), as `POST /tokenize` counts it.
    pub fn chat_prompt_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Json>,
        tool_choice: Option<&Json>,
    ) -> Result<Prompt, ValidationError> {
        let tools = tools::parse(tools, tool_choice)?.filter(Tools::active);
        let raw = tools.as_ref().map(Tools::raw);
        self.chat_prompt(messages, raw.as_deref())
    }

    /// `tools`, `tool_choice` and `response_format` -> the tools for the prompt and the
    /// output constraint. A forced call (`required` or a named tool) wins over
    /// `response_format`: the output is then the calls, which cannot also be the requested
    /// JSON. Every tool's parameter schema is compiled once, whatever `tool_choice` is, so that
    /// a schema llguidance cannot follow is a 400 naming that tool, not a surprise later.
    fn output_rules(
        &self,
        req: &ChatCompletionRequest,
    ) -> Result<(Option<Tools>, Option<Constraint>), ValidationError> {
        let tools = tools::parse(req.tools.as_ref(), req.tool_choice.as_ref())?
            .map(|t| t.with_parallel(req.parallel_tool_calls != Some(false)));
        let format = response_format(req.response_format.as_ref())?;
        for (param, g) in tools.iter().flat_map(Tools::parameter_grammars) {
            self.compile(&g, &param)?;
        }
        let constraint = match (tools.as_ref().and_then(Tools::forced_grammar), format) {
            (Some(g), _) => Some(self.compile(&g, "tool_choice")?),
            (None, Some(g)) => Some(self.compile(&g, "response_format")?),
            (None, None) => None,
        };
        Ok((tools.filter(Tools::active), constraint))
    }

    /// Validates a chat request.
    pub fn chat(&self, mut req: ChatCompletionRequest) -> Result<ValidChat, ValidationError> {
        let legacy_functions = messages::legacy_functions(&mut req)?;
        let (tools, constraint) = self
            .output_rules(&req)
            .map_err(|e| match legacy_functions {
                true => messages::legacy_param(e),
                false => e,
            })?;
        let raw_tools = tools.as_ref().map(Tools::raw);
        let prompt = self.chat_prompt(&req.messages, raw_tools.as_deref())?;
        let logprobs = (req.logprobs == Some(true))
            .then(|| (req.top_logprobs.unwrap_or(0) as usize, "top_logprobs"));
        let output = match req.max_completion_tokens {
            Some(m) => Output::Generate {
                max_tokens: Some(m),
                param: "max_completion_tokens",
            },
            None => Output::Generate {
                max_tokens: req.common.max_tokens,
                param: "max_tokens",
            },
        };
        let mut request = self.request(Draft {
            prompt: prompt.ids,
            input: "messages",
            output,
            logprobs,
            prompt_logprobs: None,
            common: &req.common,
        })?;
        request.constraint = constraint;
        Ok(ValidChat {
            request,
            text: TextRules {
                stops: req.common.stops(),
                single_call: tools.as_ref().is_some_and(Tools::single_call),
                tool_names: tools.map(|t| t.specs.into_iter().map(|s| s.name).collect()),
            },
            reply: Reply {
                legacy_functions,
                ..Reply::of(&req.common, logprobs.is_some())
            },
        })
    }
}
