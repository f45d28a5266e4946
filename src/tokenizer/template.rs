//! Chat templates: the model's Jinja template (from GGUF metadata or `tokenizer_config.json`)
//! rendered with minijinja in the settings Hugging Face `transformers` uses for
//! `apply_chat_template` (`trim_blocks`, `lstrip_blocks`, no trailing newline kept), with
//! Python string/dict methods, `raise_exception`, `strftime_now` and a Python-faithful `tojson`.
//! Called from request handlers; a template's `raise_exception` is a client-facing error of
//! its own, never a half-rendered prompt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value as GgufValue};
use minijinja::{Environment, Value};
use serde_json::Value as Json;

use super::jinja_fns::{self, RaisedException};

const TEMPLATE_NAME: &str = "chat_template";

/// Why a chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template called `raise_exception(message)`: the messages break its rules (e.g.
    /// roles not alternating).
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    /// The template source does not compile.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// Rendering failed (a bad method call, an unsupported construct, a wrong type).
    #[error("rendering the chat template: {0}")]
    Render(String),
    /// A field that holds the template or a token text has the wrong shape.
    #[error("{source_name}: field `{field}` expected {expected}, found {found}")]
    WrongType {
        source_name: String,
        field: String,
        expected: &'static str,
        found: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid JSON.
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// A compiled chat template together with the special-token texts it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Whether the template reads the `tools` variable (renders tool definitions itself).
    uses_tools: bool,
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the texts the template sees.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", jinja_fns::raise_exception);
        env.add_function("strftime_now", jinja_fns::strftime_now);
        env.add_filter("tojson", jinja_fns::tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|err| TemplateError::Syntax(err.to_string()))?;
        let uses_tools = env
            .get_template(TEMPLATE_NAME)
            .map(|t| t.undeclared_variables(false).contains("tools"))
            .unwrap_or(false);
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            uses_tools,
        })
    }

    /// Whether the template renders tool definitions itself (reads `tools`); when it does not,
    /// the caller describes the tools in the system prompt.
    pub fn uses_tools(&self) -> bool {
        self.uses_tools
    }

    /// Renders OpenAI-style `messages`; `tools` (JSON tool specs) are passed through as
    /// `tools`, which is `none` when absent.
    pub fn render(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_vars(
            messages,
            tools,
            add_generation_prompt,
            &serde_json::Map::new(),
        )
    }

    /// [`Self::render`] with extra template variables (e.g. `enable_thinking`); the standard
    /// variables win over extras of the same name.
    pub fn render_with_vars(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, Json>,
    ) -> Result<String, TemplateError> {
        let mut vars: BTreeMap<String, Value> = extra
            .iter()
            .map(|(key, value)| (key.clone(), Value::from_serialize(value)))
            .collect();
        let standard = [
            ("messages", Value::from_serialize(messages)),
            (
                "tools",
                tools.map_or(Value::from(()), Value::from_serialize),
            ),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
        ];
        vars.extend(standard.into_iter().map(|(k, v)| (k.to_string(), v)));
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|err| TemplateError::Render(err.to_string()))?;
        template.render(Value::from(vars)).map_err(render_error)
    }

    /// The template of a GGUF (`tokenizer.chat_template`), with the texts of its bos/eos
    /// tokens; `None` when the file has no template.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Option<Self>, TemplateError> {
        let metadata = &content.metadata;
        let source = match metadata.get("tokenizer.chat_template") {
            None => return Ok(None),
            Some(GgufValue::String(source)) => source,
            Some(other) => {
                return Err(gguf_wrong_type(
                    "tokenizer.chat_template",
                    "a string",
                    other,
                ))
            }
        };
        let bos = gguf_token_text(metadata, "tokenizer.ggml.bos_token_id")?;
        let eos = gguf_token_text(metadata, "tokenizer.ggml.eos_token_id")?;
        Self::new(source, bos, eos).map(Some)
    }

    /// The template of a Hugging Face `tokenizer_config.json`: `chat_template` as a string, or
    /// a list of `{name, template}` (the one named "default"); failing that, a
    /// `chat_template.jinja` beside the config. `None` when there is neither.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>, TemplateError> {
        let text = read(path)?;
        let config: Json = serde_json::from_str(&text).map_err(|err| TemplateError::Parse {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        let wrong = |field: &str, expected, found: &Json| TemplateError::WrongType {
            source_name: path.display().to_string(),
            field: field.to_string(),
            expected,
            found: found.to_string(),
        };
        let source = match &config["chat_template"] {
            Json::String(source) => source.clone(),
            Json::Array(named) => named
                .iter()
                .find(|entry| entry["name"].as_str() == Some("default"))
                .and_then(|entry| entry["template"].as_str())
                .ok_or_else(|| {
                    let names: Vec<Json> =
                        named.iter().map(|entry| entry["name"].clone()).collect();
                    let expected = "a list with a {\"name\": \"default\", \"template\": ...} entry";
                    wrong("chat_template", expected, &Json::from(names))
                })?
                .to_string(),
            Json::Null => match path.parent().map(|dir| dir.join("chat_template.jinja")) {
                Some(sibling) if sibling.is_file() => read(&sibling)?,
                _ => return Ok(None),
            },
            other => return Err(wrong("chat_template", "a string or a list", other)),
        };
        let token = |field: &str| -> Result<&str, TemplateError> {
            match &config[field] {
                Json::Null => Ok(""),
                value => super::hf::token_text(value)
                    .ok_or_else(|| wrong(field, "a string or {\"content\": string}", value)),
            }
        };
        Self::new(&source, token("bos_token")?, token("eos_token")?).map(Some)
    }
}

fn read(path: &Path) -> Result<String, TemplateError> {
    std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A render error, with a template's own `raise_exception` told apart from everything else.
fn render_error(err: minijinja::Error) -> TemplateError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(current) = cause {
        if let Some(raised) = current.downcast_ref::<RaisedException>() {
            return TemplateError::Raised(raised.0.clone());
        }
        cause = current.source();
    }
    TemplateError::Render(err.to_string())
}

fn gguf_wrong_type(field: &str, expected: &'static str, found: &GgufValue) -> TemplateError {
    TemplateError::WrongType {
        source_name: "GGUF".into(),
        field: field.into(),
        expected,
        found: format!("{:?}", found.value_type()),
    }
}

/// Text of the token that `id_field` names; "" when the field or the token is absent.
fn gguf_token_text<'a>(
    metadata: &'a std::collections::HashMap<String, GgufValue>,
    id_field: &str,
) -> Result<&'a str, TemplateError> {
    let Some(value) = metadata.get(id_field) else {
        return Ok("");
    };
    let id = super::gguf::integer(value)
        .and_then(|id| usize::try_from(id).ok())
        .ok_or_else(|| gguf_wrong_type(id_field, "an unsigned integer", value))?;
    match metadata.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(tokens)) => match tokens.get(id) {
            Some(GgufValue::String(text)) => Ok(text),
            _ => Ok(""),
        },
        _ => Ok(""),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{content, strings};
    use super::*;
    use serde_json::json;

    fn render(source: &str, messages: Json, tools: Option<Json>) -> Result<String, TemplateError> {
        let template = ChatTemplate::new(source, "<s>", "</s>")?;
        let messages = messages.as_array().expect("a list").clone();
        let tools = tools.map(|t| t.as_array().expect("a list").clone());
        template.render(&messages, tools.as_deref(), true)
    }

    #[test]
    fn raise_exception_is_its_own_error() {
        let source = "{% if messages[0]['role'] != 'user' %}\
            {{ raise_exception('Conversation roles must start with user') }}{% endif %}ok";
        let err = render(source, json!([{"role": "assistant", "content": "x"}]), None)
            .expect_err("raises");
        match err {
            TemplateError::Raised(message) => {
                assert_eq!(message, "Conversation roles must start with user")
            }
            other => panic!("expected Raised, got {other:?}"),
        }
        let ok = render(source, json!([{"role": "user", "content": "x"}]), None);
        assert_eq!(ok.expect("renders"), "ok");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = ChatTemplate::new("{% for m in messages %}{{ m }", "", "").expect_err("bad");
        assert!(matches!(err, TemplateError::Syntax(_)), "{err:?}");
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    #[test]
    fn tools_are_passed_through_and_none_when_absent() {
        let source = "{% if tools is none %}no tools{% else %}\
            {% for tool in tools %}{{ tool.function.name }};{% endfor %}{% endif %}";
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
            {"type": "function", "function": {"name": "search", "parameters": {}}}
        ]);
        assert_eq!(
            render(source, json!([]), Some(tools)).expect("renders"),
            "get_weather;search;"
        );
        assert_eq!(
            render(source, json!([]), None).expect("renders"),
            "no tools"
        );
    }

    #[test]
    fn hf_settings_python_methods_and_special_tokens() {
        let source = "{{ bos_token }}\n{% for m in messages %}\n  {{ m.role.upper() }}: \
            {{ m.content.strip() }}|{{ m['content'] }}|\n{% endfor %}\n\
            {% if add_generation_prompt %}{{ eos_token }}{% endif %}\n";
        let messages =
            json!([{"role": "user", "content": "  hi  "}, {"role": "user", "content": ""}]);
        assert_eq!(
            render(source, messages, None).expect("renders"),
            "<s>\n  USER: hi|  hi  |\n  USER: ||\n</s>"
        );
    }

    #[test]
    fn extra_vars_are_visible_but_cannot_replace_messages() {
        let template = ChatTemplate::new("{{ enable_thinking }} {{ messages | length }}", "", "")
            .expect("compiles");
        let extra = json!({"enable_thinking": false, "messages": "hijack"});
        let rendered = template
            .render_with_vars(
                &[json!({"role": "user"})],
                None,
                false,
                extra.as_object().expect("map"),
            )
            .expect("renders");
        // Jinja2 prints Python's `False`; so does minijinja.
        assert_eq!(rendered, "False 1");
    }

    #[test]
    fn gguf_template_uses_the_token_texts() {
        let gguf = content(vec![
            ("tokenizer.ggml.tokens", strings(&["<unk>", "<s>", "</s>"])),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", GgufValue::U32(2)),
            (
                "tokenizer.chat_template",
                GgufValue::String("{{ bos_token }}|{{ eos_token }}".into()),
            ),
        ]);
        let template = ChatTemplate::from_gguf(&gguf)
            .expect("loads")
            .expect("present");
        assert_eq!(
            template.render(&[], None, false).expect("renders"),
            "<s>|</s>"
        );
        let without = content(vec![("tokenizer.ggml.tokens", strings(&["a"]))]);
        assert!(ChatTemplate::from_gguf(&without).expect("loads").is_none());
    }

    #[test]
    fn tokenizer_config_template_as_string_list_or_sibling_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokenizer_config.json");
        let load = |config: Json| {
            std::fs::write(&path, config.to_string()).expect("writes");
            ChatTemplate::from_tokenizer_config(&path)
        };
        let plain = load(json!({"chat_template": "{{ bos_token }}", "bos_token": "<s>"}));
        let plain = plain.expect("loads").expect("present");
        assert_eq!(plain.render(&[], None, false).expect("renders"), "<s>");

        let listed = load(json!({
            "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": "{{ eos_token }}"}
            ],
            "eos_token": {"content": "</s>", "special": true}
        }));
        let listed = listed.expect("loads").expect("present");
        assert_eq!(listed.render(&[], None, false).expect("renders"), "</s>");

        let no_default = load(json!({"chat_template": [{"name": "tool_use", "template": "x"}]}));
        assert!(matches!(no_default, Err(TemplateError::WrongType { .. })));

        assert!(load(json!({"bos_token": "<s>"})).expect("loads").is_none());
        std::fs::write(dir.path().join("chat_template.jinja"), "sibling").expect("writes");
        let sibling = load(json!({})).expect("loads").expect("present");
        assert_eq!(
            sibling.render(&[], None, false).expect("renders"),
            "sibling"
        );
    }

    /// Qwen 2.5's tool-calling template; the expected text is Jinja2's rendering in Hugging
    /// Face's settings (with HF's `tojson`); the tools' keys are given here in sorted order.
    const QWEN25_TEMPLATE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

    #[test]
    fn a_tool_calling_template_renders_as_jinja2_does() {
        let tools = json!([{"function": {"description": "Get weather <now> & 'then'", "name": "get_weather", "parameters": {"properties": {"city": {"type": "string"}, "days": {"default": 1.0, "type": "integer"}}, "required": ["city"], "type": "object"}}, "type": "function"}]);
        let messages = json!([{"content": "You are helpful.", "role": "system"}, {"content": "Weather in Paris? é 😀", "role": "user"}, {"content": null, "role": "assistant", "tool_calls": [{"function": {"arguments": {"city": "Paris", "days": 2}, "name": "get_weather"}, "id": "c1", "type": "function"}]}, {"content": "{\"temp\": 21}", "role": "tool", "tool_call_id": "c1"}, {"content": "It is 21C.", "role": "assistant"}]);
        let expected = r#"<|im_start|>system
You are helpful.

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"function": {"description": "Get weather <now> & 'then'", "name": "get_weather", "parameters": {"properties": {"city": {"type": "string"}, "days": {"default": 1.0, "type": "integer"}}, "required": ["city"], "type": "object"}}, "type": "function"}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
<|im_start|>user
Weather in Paris? é 😀<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
{"temp": 21}
</tool_response><|im_end|>
<|im_start|>assistant
It is 21C.<|im_end|>
<|im_start|>assistant
"#;
        assert_eq!(
            render(QWEN25_TEMPLATE, messages, Some(tools)).expect("renders"),
            expected
        );
    }
}
