//! Request -> [`ValidRequest`]: flattens messages, renders the chat template (with the tools),
//! tokenizes, checks limits, builds the sampling parameters and compiles the output grammar
//! (`response_format`, forced tool calls). CPU work: handlers run it on `spawn_blocking`, never
//! on the engine's worker.

use serde_json::Value as Json;

use crate::api::error::ApiError;
use crate::api::openai::{
    ChatCompletionRequest, ChatMessage, CommonParams, CompletionRequest, MessageContent,
    PromptField,
};
use crate::api::tools::{self, Tools};
use crate::constraint::{ConstraintError, Grammar, GrammarCompiler};
use crate::engine::ValidRequest;
use crate::sampling::SamplingParams;
use crate::tokenizer::{render_prompt, ChatTemplate, PromptError, Tokenizer};

/// What the engine needs plus what the API layer keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub valid: ValidRequest,
    /// Stop strings, scanned in the decoded text.
    pub stops: Vec<String>,
    /// The prompt's text (for `echo`).
    pub prompt_text: String,
    /// Parse `<tool_call>` blocks calling these functions out of the output (tools given,
    /// `tool_choice` not none).
    pub tool_names: Option<Vec<String>>,
}

/// The model facts validation needs.
pub struct Limits<'a> {
    pub tokenizer: Option<&'a Tokenizer>,
    pub template: Option<&'a ChatTemplate>,
    /// Compiles `response_format` and tool grammars; `None` without a tokenizer.
    pub grammar: Option<&'a GrammarCompiler>,
    /// Tokens a sequence may hold: the context length, capped by the KV cache.
    pub max_tokens_total: usize,
}

fn no_tokenizer() -> ApiError {
    ApiError::invalid(
        "this model has no tokenizer: send token ids",
        Some("prompt"),
    )
}

/// The message as the template sees it: content flattened to one string.
pub fn flatten_message(m: &ChatMessage) -> serde_json::Value {
    let mut obj = m.extra.clone();
    obj.insert("role".into(), m.role.clone().into());
    let content = match &m.content {
        None => serde_json::Value::Null,
        Some(MessageContent::Text(s)) => s.clone().into(),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter(|p| p.kind == "text")
            .filter_map(|p| p.text.as_deref())
            .collect::<Vec<_>>()
            .join("\n")
            .into(),
    };
    obj.insert("content".into(), content);
    serde_json::Value::Object(obj)
}

/// Renders and tokenizes `messages` (special-token text in the template is parsed).
pub fn chat_prompt(messages: &[ChatMessage], lim: &Limits) -> Result<(Vec<u32>, String), ApiError> {
    chat_prompt_with_tools(messages, None, lim)
}

/// [`chat_prompt`] with `tools`: passed to a template that renders tools, else described in
/// the system prompt. Tool calls and `tool` messages in the history are rendered as Hermes
/// text for a template without tool support.
fn chat_prompt_with_tools(
    messages: &[ChatMessage],
    tools: Option<&[Json]>,
    lim: &Limits,
) -> Result<(Vec<u32>, String), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let tok = lim.tokenizer.ok_or_else(no_tokenizer)?;
    let template = lim
        .template
        .ok_or_else(|| ApiError::invalid("this model has no chat template", Some("messages")))?;
    let mut msgs: Vec<_> = messages.iter().map(flatten_message).collect();
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
    let prompt = render_prompt(template, tok, &msgs, template_tools).map_err(|e| {
        let message = match e {
            PromptError::Template(_) => e.to_string(),
            PromptError::Tokenizer(t) => t.to_string(),
        };
        ApiError::invalid(message, Some("messages"))
    })?;
    Ok((prompt.ids, prompt.text))
}

/// `response_format` -> the grammar it asks for (`None` for text).
pub fn response_format(v: Option<&Json>) -> Result<Option<Grammar>, ApiError> {
    let p = Some("response_format");
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
                    ApiError::invalid(
                        "response_format.json_schema.schema is required for type json_schema",
                        p,
                    )
                })?;
            match schema {
                Json::Object(_) => Ok(Some(Grammar::JsonSchema(schema.clone()))),
                Json::Bool(true) => Ok(Some(Grammar::JsonSchema(serde_json::json!({})))),
                other => Err(ApiError::invalid(
                    format!("response_format.json_schema.schema must be a JSON Schema object, got {other}"),
                    p,
                )),
            }
        }
        _ => Err(ApiError::invalid(
            format!("response_format.type must be \"text\", \"json_object\" or \"json_schema\", got {v}"),
            p,
        )),
    }
}

/// Compiles `grammar`; a schema llguidance rejects is a 400 naming `param`.
fn compile(
    lim: &Limits,
    grammar: &Grammar,
    param: &str,
) -> Result<crate::constraint::Constraint, ApiError> {
    let compiler = lim.grammar.ok_or_else(|| {
        ApiError::invalid(
            "constrained output needs the model's tokenizer, which this model lacks",
            Some(param),
        )
    })?;
    compiler.compile(grammar).map_err(|e| match e {
        ConstraintError::Compile(m) => ApiError::invalid(
            format!("{param}: unsupported or invalid schema: {m}"),
            Some(param),
        ),
        other => ApiError::Internal(other.to_string()),
    })
}

/// `tools`, `tool_choice` and `response_format` -> the tools for the prompt and the output
/// constraint. A forced call (`required` or a named tool) wins over `response_format`: the
/// output is then the calls, which cannot also be the requested JSON.
fn output_rules(
    req: &ChatCompletionRequest,
    lim: &Limits,
) -> Result<(Option<Tools>, Option<crate::constraint::Constraint>), ApiError> {
    let tools = tools::parse(req.tools.as_ref(), req.tool_choice.as_ref())?;
    let format = response_format(req.response_format.as_ref())?;
    for (param, g) in tools.iter().flat_map(Tools::parameter_grammars) {
        compile(lim, &g, &param)?;
    }
    let constraint = match (tools.as_ref().and_then(Tools::forced_grammar), format) {
        (Some(g), _) => Some(compile(lim, &g, "tool_choice")?),
        (None, Some(g)) => Some(compile(lim, &g, "response_format")?),
        (None, None) => None,
    };
    Ok((tools.filter(Tools::active), constraint))
}

pub fn chat(req: &ChatCompletionRequest, lim: &Limits) -> Result<Prepared, ApiError> {
    let (tools, constraint) = output_rules(req, lim)?;
    let raw_tools = tools.as_ref().map(Tools::raw);
    let (prompt, text) = chat_prompt_with_tools(&req.messages, raw_tools.as_deref(), lim)?;
    let logprobs = match req.logprobs {
        Some(true) => Some(req.top_logprobs.unwrap_or(0) as usize),
        _ => None,
    };
    let max = req.max_completion_tokens.or(req.common.max_tokens);
    let mut p = build(prompt, text, max, logprobs, &req.common, lim)?;
    p.valid.constraint = constraint;
    p.tool_names = tools.map(|t| t.specs.into_iter().map(|s| s.name).collect());
    Ok(p)
}

/// One [`Prepared`] per prompt.
pub fn completion(req: &CompletionRequest, lim: &Limits) -> Result<Vec<Prepared>, ApiError> {
    let encode = |s: &str| -> Result<(Vec<u32>, String), ApiError> {
        let tok = lim.tokenizer.ok_or_else(no_tokenizer)?;
        // Special-token text is parsed, as llama.cpp and vLLM do: a client that formats its
        // own ChatML prompt means `<|im_start|>` as that token, not as its text.
        let ids = tok
            .encode_prompt(s, true)
            .map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?;
        Ok((ids, s.to_string()))
    };
    let ids_text = |ids: &[u32]| -> (Vec<u32>, String) {
        let text = lim
            .tokenizer
            .map(|t| t.decode(ids, false))
            .unwrap_or_default();
        (ids.to_vec(), text)
    };
    let prompts: Vec<(Vec<u32>, String)> = match &req.prompt {
        PromptField::Text(s) => vec![encode(s)?],
        PromptField::Texts(v) => v.iter().map(|s| encode(s)).collect::<Result<_, _>>()?,
        PromptField::Ids(ids) => vec![ids_text(ids)],
        PromptField::IdLists(v) => v.iter().map(|ids| ids_text(ids)).collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid(
            "prompt must not be empty",
            Some("prompt"),
        ));
    }
    let logprobs = req.logprobs.map(|n| n as usize);
    // `echo` with `max_tokens: 0` scores the prompt and generates nothing; `build` refuses 0,
    // so it sees 1 and the engine gets 0 back.
    let score_only = req.echo && req.common.max_tokens == Some(0);
    let max_tokens = if score_only {
        Some(1)
    } else {
        req.common.max_tokens
    };
    prompts
        .into_iter()
        .map(|(ids, text)| {
            let mut p = build(ids, text, max_tokens, logprobs, &req.common, lim)?;
            if req.echo {
                // Prompt logprobs go with the echoed prompt; scoring only needs them computed.
                p.valid.prompt_logprobs = logprobs.or(score_only.then_some(0));
            }
            if score_only {
                p.valid.max_tokens = 0;
            }
            Ok(p)
        })
        .collect()
}

fn build(
    prompt: Vec<u32>,
    prompt_text: String,
    max_tokens: Option<u64>,
    logprobs: Option<usize>,
    c: &CommonParams,
    lim: &Limits,
) -> Result<Prepared, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    let left = lim.max_tokens_total.saturating_sub(prompt.len());
    let max_tokens = match max_tokens {
        Some(0) => {
            return Err(ApiError::invalid(
                "max_tokens must be at least 1",
                Some("max_tokens"),
            ))
        }
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        None if left == 0 => {
            return Err(ApiError::context_length(format!(
                "prompt has {} tokens, which fills the context of {} tokens",
                prompt.len(),
                lim.max_tokens_total
            )))
        }
        None => left,
    };
    let mut logit_bias = Vec::new();
    for (k, v) in c.logit_bias.iter().flatten() {
        let id: u32 = k.parse().map_err(|_| {
            ApiError::invalid(
                format!("logit_bias keys must be token ids, got {k:?}"),
                Some("logit_bias"),
            )
        })?;
        logit_bias.push((id, *v));
    }
    let n = c.n.unwrap_or(1);
    let sampling = SamplingParams {
        temperature: c.temperature.unwrap_or(1.0),
        top_k: c.top_k.unwrap_or(0).max(0) as usize,
        top_p: c.top_p.unwrap_or(1.0),
        min_p: c.min_p.unwrap_or(0.0),
        repetition_penalty: c.repetition_penalty.unwrap_or(1.0),
        presence_penalty: c.presence_penalty.unwrap_or(0.0),
        frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
        logit_bias,
        seed: c.seed,
        logprobs,
    };
    let stop_ids = match (c.ignore_eos, lim.tokenizer) {
        (Some(true), _) | (_, None) => Vec::new(),
        (_, Some(t)) => t.stop_token_ids().to_vec(),
    };
    let stops = c.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    Ok(Prepared {
        valid: ValidRequest {
            prompt,
            max_tokens,
            sampling,
            stop_ids,
            n: usize::try_from(n).unwrap_or(usize::MAX),
            priority: 0,
            prompt_logprobs: None,
            constraint: None,
        },
        stops,
        prompt_text,
        tool_names: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits<'static> {
        Limits {
            tokenizer: None,
            template: None,
            grammar: None,
            max_tokens_total: 100,
        }
    }

    fn req(json: serde_json::Value) -> CompletionRequest {
        serde_json::from_value(json).expect("parses")
    }

    #[test]
    fn max_tokens_defaults_to_the_context_left() {
        let p = completion(&req(serde_json::json!({"prompt": [1, 2, 3]})), &lim()).expect("ok");
        assert_eq!(p[0].valid.max_tokens, 97);
        let p = completion(
            &req(serde_json::json!({"prompt": [[1], [2, 3]], "max_tokens": 5})),
            &lim(),
        )
        .expect("ok");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].valid.max_tokens, 5);
    }

    #[test]
    fn fields_map_to_sampling_and_errors_name_the_field() {
        let r = req(
            serde_json::json!({"prompt": [1], "temperature": 0, "logit_bias": {"5": -100},
            "stop": "x", "n": 2, "top_k": -1, "seed": 7, "logprobs": 3, "unknown": true}),
        );
        let p = &completion(&r, &lim()).expect("ok")[0];
        assert_eq!(p.valid.sampling.logit_bias, vec![(5, -100.0)]);
        assert_eq!(p.valid.sampling.top_k, 0);
        assert_eq!(p.valid.sampling.logprobs, Some(3));
        assert_eq!(p.stops, vec!["x".to_string()]);
        assert_eq!(p.valid.n, 2);
        let r = req(serde_json::json!({"prompt": [1], "logit_bias": {"a": 1}}));
        let e = completion(&r, &lim()).expect_err("bad key");
        assert!(matches!(e, ApiError::InvalidRequest { param: Some(p), .. } if p == "logit_bias"));
        let e =
            completion(&req(serde_json::json!({"prompt": "text"})), &lim()).expect_err("no tok");
        assert_eq!(e.parts().0.as_u16(), 400);
    }

    #[test]
    fn echo_asks_for_prompt_logprobs_and_allows_max_tokens_zero() {
        let p = completion(
            &req(serde_json::json!({"prompt": [1, 2], "echo": true, "logprobs": 2})),
            &lim(),
        )
        .expect("ok");
        assert_eq!(p[0].valid.prompt_logprobs, Some(2));
        let r = req(serde_json::json!({"prompt": [1, 2], "echo": true, "max_tokens": 0}));
        let p = completion(&r, &lim()).expect("ok");
        assert_eq!(
            (p[0].valid.max_tokens, p[0].valid.prompt_logprobs),
            (0, Some(0))
        );
        let p = completion(
            &req(serde_json::json!({"prompt": [1], "logprobs": 2})),
            &lim(),
        )
        .expect("ok");
        assert_eq!(p[0].valid.prompt_logprobs, None);
        let r = req(serde_json::json!({"prompt": [1], "max_tokens": 0}));
        assert!(completion(&r, &lim()).is_err(), "0 without echo");
    }

    #[test]
    fn content_parts_flatten_to_a_string() {
        let m: ChatMessage = serde_json::from_value(serde_json::json!({"role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]}))
        .expect("parses");
        assert_eq!(flatten_message(&m)["content"], "a\nb");
    }

    #[test]
    fn response_format_maps_to_a_grammar_or_a_400() {
        use serde_json::json;
        assert_eq!(response_format(None).expect("ok"), None);
        assert_eq!(
            response_format(Some(&json!({"type": "text"}))).expect("ok"),
            None
        );
        assert_eq!(
            response_format(Some(&json!({"type": "json_object"}))).expect("ok"),
            Some(Grammar::JsonObject)
        );
        let s = json!({"type": "object"});
        let v = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": true}});
        assert_eq!(
            response_format(Some(&v)).expect("ok"),
            Some(Grammar::JsonSchema(s))
        );
        for bad in [
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            json!({"type": "json_schema", "json_schema": {"schema": "str"}}),
            json!({"type": "xml"}),
            json!("json_object"),
        ] {
            let e = response_format(Some(&bad)).expect_err("400");
            assert!(
                matches!(&e, ApiError::InvalidRequest { param: Some(p), .. } if p == "response_format"),
                "{bad} -> {e:?}"
            );
        }
    }
}
