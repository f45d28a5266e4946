//! `tools` and `tool_choice`: validation, the prompt (the template's own tool rendering, or a
//! Hermes-style system block for templates that know nothing of tools), and the grammar that
//! forces a valid call under `required` or a named tool. Pure functions, run in validation on
//! `spawn_blocking`; the parsing of calls out of generated text is `api/tool_parse.rs`.
//!
//! The call format for templates without tool support is Hermes' (what Qwen 2.5, Hermes and
//! vLLM's `hermes` parser use): the model writes
//! `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`, one block per call.

use serde_json::{json, Map, Value as Json};

use super::ValidationError;

mod refs;
use crate::constraint::{with_compact_whitespace, Grammar};

/// The tag that opens a call in the generated text.
pub const CALL_OPEN: &str = "<tool_call>";
/// The tag that closes a call.
pub const CALL_CLOSE: &str = "</tool_call>";

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    /// JSON Schema of the arguments object (`{"type": "object"}` when the request gave none).
    pub parameters: Json,
    /// The tool as the request sent it, for templates and the system prompt.
    pub raw: Json,
}

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// No tools in the prompt; plain text.
    None,
    /// The model decides; calls are parsed out of its text.
    Auto,
    /// At least one call, to any tool (grammar-forced).
    Required,
    /// Exactly one call to this tool (grammar-forced).
    Named(String),
}

/// The most calls a forced `required` choice with parallel calls may make: the grammar ends
/// the output after this many, so that a model repeating its call cannot run to `max_tokens`.
pub const MAX_PARALLEL_CALLS: usize = 8;

/// The validated tools of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub specs: Vec<ToolSpec>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default `true`); `false` allows one call at most.
    pub parallel: bool,
}

fn bad(message: impl Into<String>, param: &str) -> ValidationError {
    ValidationError::invalid(message, param)
}

/// Validates `tools` and `tool_choice`. `None` when there are no tools (a `tool_choice` of
/// `none` or `auto` alone is allowed, as OpenAI allows it).
pub fn parse(
    tools: Option<&Json>,
    tool_choice: Option<&Json>,
) -> Result<Option<Tools>, ValidationError> {
    let specs = match tools {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| tool_spec(i, t))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(bad(format!("tools must be a list, got {other}"), "tools")),
    };
    let choice = parse_choice(tool_choice, &specs)?;
    if specs.is_empty() {
        return match choice {
            ToolChoice::None | ToolChoice::Auto => Ok(None),
            _ => Err(bad(
                "tool_choice requires tools: send the functions in `tools`",
                "tool_choice",
            )),
        };
    }
    Ok(Some(Tools {
        specs,
        choice,
        parallel: true,
    }))
}

fn tool_spec(i: usize, t: &Json) -> Result<ToolSpec, ValidationError> {
    let param = format!("tools[{i}]");
    let kind = t.get("type").and_then(Json::as_str);
    if kind != Some("function") {
        let got = t.get("type").map_or("nothing".to_string(), Json::to_string);
        return Err(bad(
            format!("{param}.type must be \"function\", got {got}"),
            &format!("{param}.type"),
        ));
    }
    let Some(f) = t.get("function").filter(|f| f.is_object()) else {
        return Err(bad(
            format!("{param}.function must be an object"),
            &format!("{param}.function"),
        ));
    };
    let name = f.get("name").and_then(Json::as_str).unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !name_ok {
        return Err(bad(
            format!("{param}.function.name must be 1-64 of a-z, A-Z, 0-9, _, - or ., got {name:?}"),
            &format!("{param}.function.name"),
        ));
    }
    let parameters = match f.get("parameters") {
        None | Some(Json::Null) => json!({"type": "object", "properties": {}}),
        // The forced-call grammar embeds the schema as it is: drop what it cannot enforce.
        Some(p @ Json::Object(_)) => crate::constraint::without_unenforced(p.clone()),
        Some(other) => {
            return Err(bad(
                format!("{param}.function.parameters must be a JSON Schema object, got {other}"),
                &format!("{param}.function.parameters"),
            ))
        }
    };
    Ok(ToolSpec {
        name: name.to_string(),
        parameters,
        raw: t.clone(),
    })
}

fn parse_choice(v: Option<&Json>, specs: &[ToolSpec]) -> Result<ToolChoice, ValidationError> {
    let p = "tool_choice";
    match v {
        None | Some(Json::Null) => Ok(if specs.is_empty() {
            ToolChoice::None
        } else {
            ToolChoice::Auto
        }),
        Some(Json::String(s)) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(
                format!("tool_choice must be \"none\", \"auto\", \"required\" or an object naming a function, got {other:?}"),
                p,
            )),
        },
        Some(obj @ Json::Object(_)) => {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Json::as_str);
            match (obj.get("type").and_then(Json::as_str), name) {
                (Some("function"), Some(name)) => {
                    if !specs.is_empty() && !specs.iter().any(|s| s.name == name) {
                        return Err(bad(
                            format!("tool_choice names the function {name:?}, which is not in tools"),
                            p,
                        ));
                    }
                    Ok(ToolChoice::Named(name.to_string()))
                }
                _ => Err(bad(
                    "tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    p,
                )),
            }
        }
        Some(other) => Err(bad(format!("tool_choice has the wrong type: {other}"), p)),
    }
}

impl Tools {
    /// Whether the tools go into the prompt and calls are parsed out of the output.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The tools as the template and the system prompt see them.
    pub fn raw(&self) -> Vec<Json> {
        self.specs.iter().map(|s| s.raw.clone()).collect()
    }

    /// `parallel_tool_calls` as the request gave it.
    pub fn with_parallel(self, parallel: bool) -> Self {
        Self { parallel, ..self }
    }

    /// At most one call: a named tool, or parallel calls turned off.
    pub fn single_call(&self) -> bool {
        matches!(self.choice, ToolChoice::Named(_)) || !self.parallel
    }

    /// The grammar that forces calls: under `required` one to [`MAX_PARALLEL_CALLS`] calls to
    /// any tool (one with `parallel_tool_calls: false`), under a named tool exactly one call
    /// to it; each call then either another or the end. `None` otherwise.
    pub fn forced_grammar(&self) -> Option<Grammar> {
        match &self.choice {
            ToolChoice::Required => {
                let most = if self.parallel { MAX_PARALLEL_CALLS } else { 1 };
                Some(calls_grammar(&self.specs, most))
            }
            ToolChoice::Named(name) => {
                let one: Vec<ToolSpec> = self
                    .specs
                    .iter()
                    .filter(|s| &s.name == name)
                    .cloned()
                    .collect();
                Some(calls_grammar(&one, 1))
            }
            ToolChoice::None | ToolChoice::Auto => None,
        }
    }

    /// Each tool's parameters as a grammar with the request field it came from, compiled in
    /// validation only to reject schemas llguidance does not accept, whatever `tool_choice` is.
    pub fn parameter_grammars(&self) -> Vec<(String, Grammar)> {
        self.specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let param = format!("tools[{i}].function.parameters");
                (param, Grammar::JsonSchema(s.parameters.clone()))
            })
            .collect()
    }
}

/// The JSON Schema of one call: `{"name": <const>, "arguments": <parameters>}`, name first so
/// that a stream can name the function early.
fn call_schema(spec: &ToolSpec, base: &str, tool: usize, defs: &mut Map<String, Json>) -> Json {
    json!({
        "type": "object",
        "properties": {
            "name": {"const": spec.name},
            "arguments": refs::hoisted(&spec.parameters, &format!("{base}/properties/arguments"), tool, defs),
        },
        "required": ["name", "arguments"],
        "additionalProperties": false,
    })
}

/// `<tool_call>\n{call}\n</tool_call>`, one to `most` times, newline separated, where `{call}`
/// is any of `specs`' call schemas.
fn calls_grammar(specs: &[ToolSpec], most: usize) -> Grammar {
    let mut defs = Map::new();
    let mut schema = match specs {
        [one] => call_schema(one, "#", 0, &mut defs),
        _ => json!({"anyOf": specs
            .iter()
            .enumerate()
            .map(|(i, s)| call_schema(s, &format!("#/anyOf/{i}"), i, &mut defs))
            .collect::<Vec<_>>()}),
    };
    if let (false, Some(root)) = (defs.is_empty(), schema.as_object_mut()) {
        root.insert("$defs".into(), Json::Object(defs));
    }
    let schema = with_compact_whitespace(schema);
    let open = serde_json::to_string(&format!("{CALL_OPEN}\n")).unwrap_or_default();
    let close = serde_json::to_string(&format!("\n{CALL_CLOSE}")).unwrap_or_default();
    let start = match most {
        0 | 1 => "start: call".to_string(),
        n => format!("start: call (\"\\n\" call){{0,{}}}", n - 1),
    };
    Grammar::Lark(format!("{start}\ncall: {open} %json {schema} {close}\n"))
}

/// The system-prompt block that describes the tools to a template without tool support.
pub fn system_block(tools: &[Json]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&t.to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// Adds [`system_block`] to the first system message, or prepends a system message.
/// `messages` are flattened (content a string or null).
pub fn inject_system(messages: &mut Vec<Json>, tools: &[Json]) {
    let block = system_block(tools);
    if let Some(first) = messages
        .first_mut()
        .filter(|m| m.get("role").and_then(Json::as_str) == Some("system"))
    {
        let old = first.get("content").and_then(Json::as_str).unwrap_or("");
        let merged = if old.is_empty() {
            block
        } else {
            format!("{old}\n\n{block}")
        };
        first["content"] = Json::String(merged);
    } else {
        messages.insert(0, json!({"role": "system", "content": block}));
    }
}

/// An assistant's `tool_calls` as Hermes blocks.
fn calls_as_text(calls: &[Json]) -> String {
    calls
        .iter()
        .map(|c| {
            let f = c.get("function").unwrap_or(c);
            let name = f.get("name").cloned().unwrap_or(Json::Null);
            let args = arguments_value(f.get("arguments"));
            let call = json!({"name": name, "arguments": args});
            format!("{CALL_OPEN}\n{call}\n{CALL_CLOSE}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// OpenAI sends `arguments` as a JSON string; templates and prompts want the object.
fn arguments_value(a: Option<&Json>) -> Json {
    match a {
        Some(Json::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone()))
        }
        Some(v) => v.clone(),
        None => json!({}),
    }
}

/// History for a template without tool support: an assistant's `tool_calls` become Hermes
/// blocks after its content, and `tool` messages become user turns wrapped in
/// `<tool_response>` (as Hermes-style templates render them).
pub fn history_as_text(messages: &mut [Json]) {
    for m in messages.iter_mut() {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        let role = obj.get("role").and_then(Json::as_str).unwrap_or("");
        let content = obj
            .get("content")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        if role == "tool" {
            obj.insert("role".into(), "user".into());
            let text = format!("<tool_response>\n{content}\n</tool_response>");
            obj.insert("content".into(), text.into());
            obj.remove("tool_call_id");
        } else if let Some(Json::Array(calls)) = obj.remove("tool_calls") {
            let blocks = calls_as_text(&calls);
            let text = match content.is_empty() {
                true => blocks,
                false => format!("{content}\n{blocks}"),
            };
            obj.insert("content".into(), text.into());
        }
    }
}

/// History for a template with tool support: `arguments` strings become objects, as
/// Hugging Face templates expect.
pub fn history_for_template(messages: &mut [Json]) {
    for m in messages.iter_mut() {
        let Some(Json::Array(calls)) = m.get_mut("tool_calls") else {
            continue;
        };
        for c in calls.iter_mut() {
            if let Some(f) = c.get_mut("function").and_then(Json::as_object_mut) {
                let args = arguments_value(f.get("arguments"));
                f.insert("arguments".into(), args);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Json {
        json!({"type": "function", "function": {"name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}})
    }

    fn param_of(e: ValidationError) -> String {
        e.param().to_string()
    }

    #[test]
    fn tools_and_tool_choice_validate_with_the_right_param() {
        let tools = json!([weather()]);
        let t = parse(Some(&tools), None).expect("ok").expect("some");
        assert_eq!(t.choice, ToolChoice::Auto);
        assert_eq!(t.specs[0].name, "get_weather");
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let t = parse(Some(&tools), Some(&named))
            .expect("ok")
            .expect("some");
        assert_eq!(t.choice, ToolChoice::Named("get_weather".into()));
        assert!(parse(None, Some(&json!("auto"))).expect("ok").is_none());

        let cases = [
            (json!([{"type": "retrieval"}]), None, "tools[0].type"),
            (json!([{"type": "function"}]), None, "tools[0].function"),
            (
                json!([{"type": "function", "function": {"name": "a b"}}]),
                None,
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]),
                None,
                "tools[0].function.parameters",
            ),
            (json!({"a": 1}), None, "tools"),
            (tools.clone(), Some(json!("sometimes")), "tool_choice"),
            (
                tools.clone(),
                Some(json!({"type": "function", "function": {"name": "nope"}})),
                "tool_choice",
            ),
            (json!([]), Some(json!("required")), "tool_choice"),
        ];
        for (tools, choice, param) in cases {
            let e = parse(Some(&tools), choice.as_ref()).expect_err("400");
            assert_eq!(param_of(e), param, "{tools} {choice:?}");
        }
    }

    #[test]
    fn the_tool_block_is_merged_into_the_system_message_or_prepended() {
        let tools = vec![weather()];
        let mut msgs = vec![json!({"role": "user", "content": "hi"})];
        inject_system(&mut msgs, &tools);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0]["role"], "system");
        let block = msgs[0]["content"].as_str().expect("text");
        assert!(block.starts_with("# Tools"), "{block}");
        assert!(block.contains(r#""name":"get_weather""#), "{block}");
        assert!(
            block.contains("<tool_call>\n{\"name\": <function-name>"),
            "{block}"
        );

        let mut msgs = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "hi"}),
        ];
        inject_system(&mut msgs, &tools);
        assert_eq!(msgs.len(), 2);
        let sys = msgs[0]["content"].as_str().expect("text");
        assert!(sys.starts_with("Be brief.\n\n# Tools"), "{sys}");
    }

    #[test]
    fn tool_history_renders_as_hermes_text() {
        let mut msgs = vec![
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather",
                "arguments": "{\"city\": \"Paris\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "22C"}),
        ];
        history_as_text(&mut msgs);
        assert_eq!(
            msgs[0]["content"],
            "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>"
        );
        assert!(msgs[0].get("tool_calls").is_none());
        assert_eq!(msgs[1]["role"], "user");
        assert_eq!(msgs[1]["content"], "<tool_response>\n22C\n</tool_response>");

        let mut msgs = vec![json!({"role": "assistant", "tool_calls": [{"function":
            {"name": "f", "arguments": "{\"x\": 1}"}}]})];
        history_for_template(&mut msgs);
        assert_eq!(msgs[0]["tool_calls"][0]["function"]["arguments"]["x"], 1);
    }

    #[test]
    fn forced_grammars_compile_and_name_the_tools() {
        let tools = json!([weather(), {"type": "function", "function": {"name": "noop"}}]);
        let compiler = crate::constraint::tests::ascii_compiler(96);
        for choice in [
            json!("required"),
            json!({"type": "function", "function": {"name": "noop"}}),
        ] {
            let t = parse(Some(&tools), Some(&choice))
                .expect("ok")
                .expect("some");
            let g = t.forced_grammar().expect("forced");
            let Grammar::Lark(src) = &g else {
                panic!("a lark grammar")
            };
            assert!(src.contains(r#""const":"noop""#), "{src}");
            compiler
                .compile(&g)
                .unwrap_or_else(|e| panic!("{src}: {e}"));
            for (_, g) in t.parameter_grammars() {
                compiler.compile(&g).expect("compiles");
            }
        }
        let auto = parse(Some(&tools), None).expect("ok").expect("some");
        assert!(auto.forced_grammar().is_none());
    }

    /// A nested pydantic model's parameters (`$defs` and `$ref`s) compile as a forced call,
    /// alone and beside another tool with a `$defs` entry of the same name.
    #[test]
    fn forced_calls_with_nested_models_compile() {
        let nested = |name: &str| {
            json!({"type": "function", "function": {"name": name, "parameters": {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
                "required": ["items"],
                "$defs": {"Item": {"type": "object", "properties": {"name": {"type": "string"}},
                                   "required": ["name"]}},
            }}})
        };
        let compiler = crate::constraint::tests::ascii_compiler(96);
        for tools in [json!([nested("a")]), json!([nested("a"), nested("b")])] {
            let t = parse(Some(&tools), Some(&json!("required")))
                .expect("ok")
                .expect("some");
            let g = t.forced_grammar().expect("forced");
            compiler
                .compile(&g)
                .unwrap_or_else(|e| panic!("{tools}: {e}"));
        }
    }

    /// A byte-level compiler over printable ASCII and `\n` (id 96); id 0 ends.
    fn newline_compiler() -> crate::constraint::GrammarCompiler {
        let mut words = crate::constraint::tests::ascii_vocab(96);
        words.push(b"\n".to_vec());
        let special: Vec<bool> = (0..words.len()).map(|i| i == 0).collect();
        crate::constraint::GrammarCompiler::from_token_bytes(words, &special, &[0])
            .expect("compiler builds")
    }

    fn byte_id(b: u8) -> u32 {
        match b {
            b'\n' => 96,
            b => u32::from(b - 32 + 1),
        }
    }

    /// Whether the end and a newline may come after `text`.
    fn next_allowed(c: &mut crate::constraint::Constraint, text: &str) -> (bool, bool) {
        for b in text.bytes() {
            c.commit(byte_id(b))
                .unwrap_or_else(|e| panic!("{text:?} at {b}: {e}"));
        }
        if c.is_finished() {
            // Nothing may follow but the end.
            return (true, false);
        }
        let mut logits = vec![0.0f32; 97];
        c.apply(&mut logits).expect("mask");
        (logits[0].is_finite(), logits[96].is_finite())
    }

    /// Issue 16.1: a named choice and `parallel_tool_calls: false` allowed more calls than
    /// one, and `required` an unbounded run of them.
    #[test]
    fn forced_grammars_bound_the_number_of_calls() {
        let tools = json!([{"type": "function", "function": {"name": "noop"}}]);
        let one = "<tool_call>\n{\"name\": \"noop\", \"arguments\": {}}\n</tool_call>";
        let compiler = newline_compiler();
        let named = json!({"type": "function", "function": {"name": "noop"}});
        let cases = [
            (json!("required"), true, MAX_PARALLEL_CALLS),
            (json!("required"), false, 1),
            (named.clone(), true, 1),
            (named, false, 1),
        ];
        for (choice, parallel, most) in cases {
            let t = parse(Some(&tools), Some(&choice))
                .expect("ok")
                .expect("some")
                .with_parallel(parallel);
            assert_eq!(t.single_call(), most == 1, "{choice} {parallel}");
            let mut c = compiler
                .compile(&t.forced_grammar().expect("forced"))
                .expect("compiles");
            let (end, _) = next_allowed(&mut c, "");
            assert!(!end, "no end before the first call");
            for k in 1..=most {
                let call = match k {
                    1 => one.to_string(),
                    _ => format!("\n{one}"),
                };
                let (end, newline) = next_allowed(&mut c, &call);
                assert!(end, "{choice}: the end may follow call {k}");
                assert_eq!(newline, k < most, "{choice}: another call after {k}?");
            }
        }
    }
}
