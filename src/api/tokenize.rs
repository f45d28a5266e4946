//! `POST /tokenize` (a text, or chat messages through the template) and `POST /detokenize`.
//! Handlers on the HTTP tasks; the encoding runs on `spawn_blocking`.
//!
//! `/tokenize` takes vLLM's fields and llama.cpp's alike:
//! - the input: `prompt` (vLLM) or `content` (llama.cpp), not both; or `messages`, whose ids
//!   are exactly the chat route's prompt (BOS as the model wants it, whatever the flags say), with
//!   `tools` (and `tool_choice`) in it as the chat route puts them.
//! - BOS: `add_special_tokens` (vLLM) or `add_special` (llama.cpp); both given must agree.
//!   Neither given, the API whose text field was used decides: `prompt` adds BOS (vLLM's
//!   default), `content` does not (llama.cpp's). Either way only where the model asks for one.
//! - `parse_special` (default true, as both servers do): special-token text such as
//!   `<|im_start|>` becomes its id; false tokenizes it as text. `messages` need it on.
//! - `with_pieces` (default false): `tokens` holds `{"id", "piece"}` objects as llama.cpp's
//!   server returns them, the piece being the token's bytes as a string when they are valid
//!   UTF-8, else as a list of byte values.
//!
//! The response is `{tokens, count, max_model_len}`. A field of the wrong type, or fields that
//! contradict each other, are a 400 naming the field.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{OpenAiJson, WireRequest};
use super::openai::{ChatMessage, DetokenizeRequest, TokenizeRequest};
use super::AppState;
use crate::tokenizer::Tokenizer;

/// `POST /tokenize`'s answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenizeResponse {
    pub tokens: Tokens,
    pub count: usize,
    pub max_model_len: usize,
}

/// The ids, or with `with_pieces` llama.cpp's `{"id", "piece"}` objects. Its schema is an
/// `anyOf`: `[]` is both.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Tokens {
    Ids(Vec<u32>),
    Pieces(Vec<TokenPiece>),
}

/// One token with its text.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TokenPiece {
    pub id: u32,
    pub piece: Piece,
}

/// A token's bytes: as a string when they are valid UTF-8, else as their values.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Piece {
    Text(String),
    Bytes(Vec<u8>),
}

/// `POST /detokenize`'s answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DetokenizeResponse {
    /// The text of the ids.
    pub prompt: String,
}

impl utoipa::PartialSchema for Tokens {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder};
        AnyOfBuilder::new()
            .item(ArrayBuilder::new().items(u32::schema()))
            .item(ArrayBuilder::new().items(Ref::from_schema_name(TokenPiece::name())))
            .into()
    }
}

impl ToSchema for Tokens {
    /// The schemas [`Tokens`] refers to, for the document's components.
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((TokenPiece::name().into(), TokenPiece::schema()));
        TokenPiece::schemas(schemas);
    }
}

/// What to tokenize, resolved from either API's fields.
#[derive(Debug)]
enum Input {
    /// `prompt` or `content` (`field` names which, for errors).
    Text {
        text: String,
        field: &'static str,
        add_special: bool,
        parse_special: bool,
    },
    /// Chat messages, with the tools and `tool_choice` the chat route would put in the prompt.
    Messages {
        messages: Vec<ChatMessage>,
        tools: Option<Value>,
        tool_choice: Option<Value>,
    },
}

/// A resolved `/tokenize` request.
#[derive(Debug)]
struct Ask {
    input: Input,
    with_pieces: bool,
}

impl WireRequest for TokenizeRequest {
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// serde's message for a wrong type names only a line and column, so the fields are then
    /// tried one by one to name the one at fault (every field is optional, so each alone
    /// parses unless it is the bad one).
    fn from_json(value: Value) -> Result<Self, ApiError> {
        TokenizeRequest::deserialize(&value).map_err(|e| {
            let alone = |(key, v): &(&String, &Value)| {
                let one = serde_json::Map::from_iter([((*key).clone(), (*v).clone())]);
                TokenizeRequest::deserialize(&Value::Object(one)).is_err()
            };
            let field = value.as_object().and_then(|o| o.iter().find(alone));
            match field {
                Some((key, _)) => ApiError::invalid(format!("`{key}`: {e}"), Some(key)),
                None => ApiError::invalid(format!("invalid request: {e}"), None),
            }
        })
    }
}

fn resolve(req: TokenizeRequest) -> Result<Ask, ApiError> {
    let text = match (req.prompt, req.content) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give the text as `prompt` (vLLM) or `content` (llama.cpp), not both",
                Some("content"),
            ))
        }
        (Some(text), None) => Some((text, "prompt", true)),
        (None, Some(text)) => Some((text, "content", false)),
        (None, None) => None,
    };
    let add_special = match (req.add_special_tokens, req.add_special) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                format!("`add_special_tokens` is {a} but `add_special` is {b}; give one"),
                Some("add_special"),
            ))
        }
        (a, b) => a.or(b),
    };
    let parse_special = req.parse_special.unwrap_or(true);
    // The first of the chat-only fields the request sets.
    let tool_field = [("tools", &req.tools), ("tool_choice", &req.tool_choice)]
        .into_iter()
        .find(|(_, v)| v.as_ref().is_some_and(|v| !v.is_null()))
        .map(|(name, _)| name);
    let input = match (req.messages, text) {
        (Some(_), Some((_, field, _))) => {
            return Err(ApiError::invalid(
                format!("give `messages` or `{field}`, not both"),
                Some("messages"),
            ))
        }
        (Some(_), None) if !parse_special => {
            return Err(ApiError::invalid(
                "`parse_special` must be true with `messages`: the chat template writes \
                 special tokens on purpose",
                Some("parse_special"),
            ))
        }
        (Some(messages), None) => Input::Messages {
            messages,
            tools: req.tools,
            tool_choice: req.tool_choice,
        },
        (None, Some((_, field, _))) if tool_field.is_some() => {
            let param = tool_field.unwrap_or("tools");
            return Err(ApiError::invalid(
                format!("`{param}` goes with `messages`, not with `{field}`"),
                Some(param),
            ));
        }
        (None, Some((text, field, default))) => Input::Text {
            text,
            field,
            add_special: add_special.unwrap_or(default),
            parse_special,
        },
        (None, None) => {
            return Err(ApiError::invalid(
                "give `prompt` (or `content`) or `messages`",
                Some("prompt"),
            ))
        }
    };
    Ok(Ask {
        input,
        with_pieces: req.with_pieces.unwrap_or(false),
    })
}

/// `ids`, or with `with_pieces` llama.cpp's `[{"id", "piece"}]`.
fn tokens(tok: &Tokenizer, ids: Vec<u32>, with_pieces: bool) -> Tokens {
    if !with_pieces {
        return Tokens::Ids(ids);
    }
    let piece = |id: u32| match std::str::from_utf8(tok.token_bytes(id)) {
        Ok(text) => Piece::Text(text.to_string()),
        Err(_) => Piece::Bytes(tok.token_bytes(id).to_vec()),
    };
    Tokens::Pieces(
        ids.into_iter()
            .map(|id| TokenPiece {
                id,
                piece: piece(id),
            })
            .collect(),
    )
}

/// A text, or chat messages through the template, to token ids.
#[utoipa::path(
    post, path = "/tokenize", operation_id = "tokenize", tag = "tokenize",
    request_body = TokenizeRequest,
    responses(
        (status = 200, description = "The ids (or pieces).", body = TokenizeResponse),
        (status = 400, response = ErrorEnvelope),
        (status = 404, response = ErrorEnvelope),
        (status = 413, response = ErrorEnvelope),
        (status = 503, response = ErrorEnvelope),
    ),
)]
pub async fn tokenize(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let model = req.model.clone();
    let ask = resolve(req)?;
    let validator = state.served_for(model.as_deref()).await?.validator.clone();
    let max = validator.limits().max_context;
    let (count, tokens) = super::blocking(move || {
        let tok = validator.tokenizer();
        let ids = match &ask.input {
            Input::Messages {
                messages,
                tools,
                tool_choice,
            } => {
                validator
                    .chat_prompt_with_tools(messages, tools.as_ref(), tool_choice.as_ref())?
                    .ids
            }
            Input::Text {
                text,
                field,
                add_special,
                parse_special,
            } => match add_special {
                true => tok.encode_prompt(text, *parse_special),
                false => tok.encode(text, *parse_special),
            }
            .map_err(|e| ApiError::invalid(e.to_string(), Some(field)))?,
        };
        Ok::<_, ApiError>((ids.len(), tokens(tok, ids, ask.with_pieces)))
    })
    .await?;
    Ok(Json(TokenizeResponse {
        tokens,
        count,
        max_model_len: max,
    }))
}

/// Token ids to text.
#[utoipa::path(
    post, path = "/detokenize", operation_id = "detokenize", tag = "tokenize",
    request_body = DetokenizeRequest,
    responses(
        (status = 200, description = "The text.", body = DetokenizeResponse),
        (status = 400, response = ErrorEnvelope),
        (status = 404, response = ErrorEnvelope),
        (status = 413, response = ErrorEnvelope),
        (status = 503, response = ErrorEnvelope),
    ),
)]
pub async fn detokenize(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<DetokenizeRequest>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let tok = state
        .served_for(req.model.as_deref())
        .await?
        .validator
        .tokenizer()
        .clone();
    let prompt = super::blocking(move || Ok::<_, ApiError>(tok.decode(&req.tokens, false))).await?;
    Ok(Json(DetokenizeResponse { prompt }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::testing::byte_level;
    use serde_json::json;

    fn parsed(body: Value) -> Result<TokenizeRequest, ApiError> {
        TokenizeRequest::from_json(body)
    }

    fn ask(body: Value) -> Result<Ask, ApiError> {
        parsed(body).and_then(resolve)
    }

    fn param(e: &ApiError) -> Option<&str> {
        match e {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// `(text, field, add_special, parse_special)` of a text input.
    fn text(a: &Ask) -> (&str, &str, bool, bool) {
        match &a.input {
            Input::Text {
                text,
                field,
                add_special,
                parse_special,
            } => (text, field, *add_special, *parse_special),
            Input::Messages { .. } => panic!("messages, not a text: {a:?}"),
        }
    }

    #[test]
    fn each_api_gets_its_own_defaults() {
        let a = ask(json!({"prompt": "x"})).expect("ok");
        assert_eq!(text(&a), ("x", "prompt", true, true));
        assert!(!a.with_pieces);
        let a = ask(json!({"content": "x", "with_pieces": true})).expect("ok");
        assert_eq!(text(&a), ("x", "content", false, true));
        assert!(a.with_pieces);
        let a = ask(json!({"content": "x", "add_special": true, "parse_special": false}));
        assert_eq!(text(&a.expect("ok")), ("x", "content", true, false));
        let a = ask(json!({"prompt": "x", "add_special_tokens": false, "add_special": false}));
        assert_eq!(text(&a.expect("ok")), ("x", "prompt", false, true));
        // The other API's flag applies too; unknown fields are ignored.
        let a = ask(json!({"prompt": "x", "add_special": false, "return_token_strs": true}));
        assert_eq!(text(&a.expect("ok")), ("x", "prompt", false, true));
        let a = ask(json!({"messages": [{"role": "user", "content": "hi"}],
            "add_special_tokens": false}));
        assert!(
            matches!(a.expect("ok").input, Input::Messages { messages: m, .. } if m.len() == 1)
        );
    }

    #[test]
    fn contradictions_and_missing_input_are_400s_naming_the_field() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        for (body, field) in [
            (json!({"prompt": "a", "content": "b"}), "content"),
            (
                json!({"prompt": "a", "add_special_tokens": true, "add_special": false}),
                "add_special",
            ),
            (json!({"messages": msgs, "prompt": "a"}), "messages"),
            (json!({"messages": msgs, "content": "a"}), "messages"),
            (
                json!({"messages": msgs, "parse_special": false}),
                "parse_special",
            ),
            (json!({"add_special": true}), "prompt"),
        ] {
            let e = ask(body.clone()).expect_err("400");
            assert_eq!(e.parts().0.as_u16(), 400, "{body}");
            assert_eq!(param(&e), Some(field), "{body} -> {e:?}");
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        for (body, field) in [
            (json!({"prompt": 5}), "prompt"),
            (json!({"content": ["a"]}), "content"),
            (
                json!({"prompt": "a", "add_special_tokens": "yes"}),
                "add_special_tokens",
            ),
            (json!({"content": "a", "add_special": 1}), "add_special"),
            (
                json!({"content": "a", "parse_special": "false"}),
                "parse_special",
            ),
            (
                json!({"content": "a", "with_pieces": null, "model": 3}),
                "model",
            ),
            (
                json!({"content": "a", "with_pieces": "true"}),
                "with_pieces",
            ),
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": [{"content": "no role"}]}), "messages"),
        ] {
            let e = parsed(body.clone()).expect_err("400");
            assert_eq!(e.parts().0.as_u16(), 400, "{body}");
            assert_eq!(param(&e), Some(field), "{body} -> {e:?}");
            assert!(e.to_string().starts_with(&format!("`{field}`: ")), "{e}");
        }
        let e = parsed(json!(["not", "an", "object"])).expect_err("400");
        assert_eq!((e.parts().0.as_u16(), param(&e)), (400, None));
        let e =
            crate::api::extract::parse::<TokenizeRequest>(b"{\"prompt\": ").expect_err("malformed");
        assert_eq!((e.parts().0.as_u16(), param(&e)), (400, None));
    }

    #[test]
    fn pieces_are_text_or_bytes_as_llama_cpp_writes_them() {
        let tok = byte_level(96);
        let ids = tok.encode("<|im_start|>Hi\n", true).expect("encodes");
        let tokens_json = |tok: &Tokenizer, ids: &[u32], pieces: bool| {
            serde_json::to_value(tokens(tok, ids.to_vec(), pieces)).expect("serializes")
        };
        assert_eq!(tokens_json(&tok, &ids, false), json!(ids));
        assert_eq!(
            tokens_json(&tok, &ids, true),
            json!([{"id": 1, "piece": "<|im_start|>"}, {"id": ids[1], "piece": "H"},
                {"id": ids[2], "piece": "i"}, {"id": 3, "piece": "\n"}])
        );
        // A token whose bytes are not UTF-8 (a split char) comes out as its byte values.
        let split = crate::tokenizer::testing::bytes_only_gpt2();
        let ids = split.encode("é", false).expect("encodes");
        assert_eq!(
            tokens_json(&split, &ids, true),
            json!([{"id": ids[0], "piece": [0xC3]}, {"id": ids[1], "piece": [0xA9]}])
        );
    }
}
