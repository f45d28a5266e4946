//! Grammar-constrained decoding with llguidance: `response_format` JSON and forced tool calls.
//!
//! Two halves on two threads. The HTTP side builds one [`GrammarCompiler`] per model at start
//! (the token trie over the vocabulary's byte strings and llguidance's `ParserFactory`) and
//! compiles each request's [`Grammar`] into a [`Constraint`] on `spawn_blocking` during
//! validation, so that an unsupported schema is a 400 before anything is queued. The
//! [`Constraint`] travels in the `ValidRequest` to the worker, which owns one per choice and,
//! per sampled token, calls [`Constraint::apply`] (forbidden logits to `-inf`) and
//! [`Constraint::commit`]. Nothing here panics on the worker: llguidance catches its own panics
//! and reports them as errors, which fail that sequence only.

use std::fmt;
use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value as Json;

use crate::tokenizer::Tokenizer;

/// What a request constrains its output to.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON document valid against this schema.
    JsonSchema(Json),
    /// A Lark grammar in llguidance's dialect (may embed `%json {...}` schemas).
    Lark(String),
}

/// JSON is generated compactly, with one space after `,` and `:`: flexible whitespace lets a
/// small model pad forever with newlines. A schema's own `x-guidance` options win.
fn compact_json_options() -> Json {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// Adds [`compact_json_options`] to a schema object that sets no `x-guidance` of its own.
pub fn with_compact_whitespace(mut schema: Json) -> Json {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(compact_json_options);
    }
    schema
}

/// Keywords the grammar accepts in a schema without enforcing them: dropped before
/// llguidance sees the schema (which refuses what it cannot enforce). `uniqueItems` is what
/// pydantic writes for a `set[...]` field; other servers accept it the same way.
pub const UNENFORCED_KEYWORDS: [&str; 1] = ["uniqueItems"];

/// Keywords whose value is a map of names to subschemas.
const SCHEMA_MAPS: [&str; 5] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// `schema` without the [`UNENFORCED_KEYWORDS`], at every level where a subschema can be
/// (a property *named* `uniqueItems` is kept: only schema keywords go).
pub fn without_unenforced(mut schema: Json) -> Json {
    strip_unenforced(&mut schema);
    schema
}

fn strip_unenforced(schema: &mut Json) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    for k in UNENFORCED_KEYWORDS {
        obj.remove(k);
    }
    for (key, value) in obj.iter_mut() {
        match (SCHEMA_MAPS.contains(&key.as_str()), value) {
            (true, Json::Object(map)) => map.values_mut().for_each(strip_unenforced),
            (false, Json::Array(items)) => items.iter_mut().for_each(strip_unenforced),
            (false, v @ Json::Object(_)) => strip_unenforced(v),
            _ => {}
        }
    }
}

impl Grammar {
    fn to_llguidance(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(with_compact_whitespace(
                serde_json::json!({"type": "object"}),
            )),
            Grammar::JsonSchema(s) => TopLevelGrammar::from_json_schema(with_compact_whitespace(
                without_unenforced(s.clone()),
            )),
            Grammar::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    /// The grammar or schema is invalid or uses what llguidance does not support: the client's
    /// mistake.
    #[error("{0}")]
    Compile(String),
    /// The token environment could not be built from the vocabulary.
    #[error("building the grammar token environment: {0}")]
    Env(String),
    /// Computing a mask or committing a token failed mid-generation.
    #[error("constrained decoding failed: {0}")]
    Step(String),
}

/// llguidance's view of our vocabulary: the byte string of every token (special tokens marked
/// with llguidance's 0xFF prefix, so grammar text can never produce them) and, when there is
/// one, our tokenizer for canonical tokenization of forced text.
struct WickTokEnv {
    trie: TokTrie,
    tokenizer: Option<Arc<Tokenizer>>,
}

impl TokenizerEnv for WickTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let encoded = match (&self.tokenizer, std::str::from_utf8(s)) {
            (Some(t), Ok(text)) => t.encode(text, false).ok(),
            _ => None,
        };
        encoded.unwrap_or_else(|| self.trie.greedy_tokenize(s))
    }

    fn tokenize_is_canonical(&self) -> bool {
        self.tokenizer.is_some()
    }
}

/// Compiles grammars for one model. Built once at start (it indexes the whole vocabulary);
/// shared as `Arc` by the request handlers.
pub struct GrammarCompiler {
    factory: ParserFactory,
}

impl fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("vocab", &self.factory.tok_env().tok_trie().vocab_size())
            .finish()
    }
}

impl GrammarCompiler {
    /// The compiler for a loaded tokenizer; its stop tokens end a finished grammar.
    pub fn from_tokenizer(tok: Arc<Tokenizer>) -> Result<Self, ConstraintError> {
        let n = tok.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32).map(|i| tok.token_bytes(i).to_vec()).collect();
        let special: Vec<bool> = (0..n as u32).map(|i| tok.is_special(i)).collect();
        let mut stops = tok.stop_token_ids().to_vec();
        if stops.is_empty() {
            stops.extend(tok.eos_token().map(|(id, _)| id));
        }
        Self::build(words, &special, &stops, Some(tok))
    }

    /// A compiler over raw token byte strings (tests, models without a tokenizer): `special`
    /// tokens are never produced by grammar text; `stops` end a finished grammar.
    pub fn from_token_bytes(
        words: Vec<Vec<u8>>,
        special: &[bool],
        stops: &[u32],
    ) -> Result<Self, ConstraintError> {
        Self::build(words, special, stops, None)
    }

    fn build(
        mut words: Vec<Vec<u8>>,
        special: &[bool],
        stops: &[u32],
        tokenizer: Option<Arc<Tokenizer>>,
    ) -> Result<Self, ConstraintError> {
        let vocab = u32::try_from(words.len())
            .map_err(|_| ConstraintError::Env("the vocabulary is too large".into()))?;
        let Some(&eos) = stops.first() else {
            return Err(ConstraintError::Env(
                "the model declares no end-of-generation token".into(),
            ));
        };
        if let Some(&bad) = stops.iter().find(|&&s| s >= vocab) {
            return Err(ConstraintError::Env(format!(
                "stop token {bad} is outside the vocabulary of {vocab}"
            )));
        }
        for (w, &is_special) in words.iter_mut().zip(special) {
            if is_special {
                w.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
        }
        let info = TokRxInfo::new(vocab, eos);
        // llguidance asserts on malformed input; keep a panic off the caller's thread.
        let trie = std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(stops))
            .map_err(|_| ConstraintError::Env("the token trie could not be built".into()))?;
        let env: TokEnv = Arc::new(WickTokEnv { trie, tokenizer });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Env(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// Compiles `grammar`; an invalid or unsupported grammar is [`ConstraintError::Compile`].
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        let parser = self
            .factory
            .create_parser(grammar.to_llguidance())
            .map_err(|e| ConstraintError::Compile(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Compile(e));
        }
        Ok(Constraint {
            matcher: Box::new(matcher),
            grammar: Arc::new(grammar.clone()),
        })
    }
}

/// One choice's grammar state: which tokens may come next. Cloning gives an independent state
/// at the same position (the lexer caches are shared, which is safe: one thread steps them).
#[derive(Clone)]
pub struct Constraint {
    /// Boxed: the matcher is over a kilobyte, and requests move through channels.
    matcher: Box<Matcher>,
    /// What it was compiled from (for `Debug` and equality of requests).
    grammar: Arc<Grammar>,
}

impl fmt::Debug for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Constraint")
            .field("grammar", &self.grammar)
            .field("finished", &self.matcher.is_stopped())
            .finish()
    }
}

/// Two constraints are equal when they come from the same grammar (their positions are not
/// compared: requests are compared before generation).
impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.grammar == other.grammar
    }
}

impl Constraint {
    /// Sets the logits (`[vocab]`, raw model output) of every token the grammar forbids now to
    /// `-inf`. Ids past the grammar's vocabulary (a model's padding rows) are forbidden too.
    /// Once the grammar is accepting, the stop tokens are allowed.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let mask = self
            .matcher
            .compute_mask()
            .map_err(|e| ConstraintError::Step(e.to_string()))?;
        let allowed = mask.len();
        for (i, x) in logits.iter_mut().enumerate() {
            if i >= allowed || !mask.get(i) {
                *x = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past the sampled token `id`.
    pub fn commit(&mut self, id: u32) -> Result<(), ConstraintError> {
        self.matcher
            .consume_token(id)
            .map_err(|e| ConstraintError::Step(e.to_string()))
    }

    /// The grammar is complete and allows nothing more: the choice ends with `stop`.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A byte-level vocabulary of `n` ids: id 0 the special end token, then printable ASCII.
    pub(crate) fn ascii_vocab(n: usize) -> Vec<Vec<u8>> {
        let mut words = vec![b"<end>".to_vec()];
        words.extend((32u8..127).map(|b| vec![b]));
        words.truncate(n);
        while words.len() < n {
            words.push(format!("<pad{}>", words.len()).into_bytes());
        }
        words
    }

    pub(crate) fn ascii_compiler(n: usize) -> GrammarCompiler {
        let words = ascii_vocab(n);
        let special: Vec<bool> = (0..n).map(|i| i == 0 || i > 95).collect();
        GrammarCompiler::from_token_bytes(words, &special, &[0]).expect("compiler builds")
    }

    fn id_of(c: u8) -> u32 {
        u32::from(c - 32 + 1)
    }

    /// Greedy walk: at each step the lowest allowed id (forced text goes through as it is).
    fn walk(c: &mut Constraint, prefer: &[u8]) -> String {
        let mut out = Vec::new();
        let mut prefer = prefer.iter();
        for _ in 0..200 {
            if c.is_finished() {
                break;
            }
            let mut logits = vec![0.0f32; 96];
            if let Some(&p) = prefer.next() {
                logits[id_of(p) as usize] = 10.0;
            }
            c.apply(&mut logits).expect("mask");
            let id = crate::sampling::argmax(&logits);
            if id == 0 {
                break;
            }
            c.commit(id).expect("commit");
            out.push(id as u8 - 1 + 32);
        }
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn supported_schemas_compile_and_unsupported_ones_are_compile_errors() {
        let g = ascii_compiler(96);
        assert!(g.compile(&Grammar::JsonObject).is_ok());
        let schema = serde_json::json!({"type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                           "kind": {"enum": ["a", "b"]}},
            "required": ["name", "age", "kind"], "additionalProperties": false});
        assert!(g.compile(&Grammar::JsonSchema(schema)).is_ok());
        let local_ref = serde_json::json!({"$defs": {"p": {"type": "integer"}},
            "type": "object", "properties": {"x": {"$ref": "#/$defs/p"}}});
        assert!(g.compile(&Grammar::JsonSchema(local_ref)).is_ok());
        for bad in [
            serde_json::json!({"not": {"type": "string"}}),
            serde_json::json!({"$ref": "https://example.com/schema.json"}),
            serde_json::json!({"type": "strin"}),
            serde_json::json!({"type": "string", "pattern": "(unclosed"}),
            serde_json::json!({"$ref": "#/$defs/missing"}),
            serde_json::json!({"type": "integer", "minimum": 5, "maximum": 1}),
        ] {
            let e = g.compile(&Grammar::JsonSchema(bad.clone()));
            assert!(
                matches!(e, Err(ConstraintError::Compile(_))),
                "{bad} -> {e:?}"
            );
        }
        let e = g.compile(&Grammar::Lark("start: undefined_rule".into()));
        assert!(matches!(e, Err(ConstraintError::Compile(_))), "{e:?}");
    }

    /// Regression (issue 16): `uniqueItems` (pydantic's `set[...]`) was a 400.
    #[test]
    fn unique_items_is_accepted_and_dropped_only_where_it_is_a_keyword() {
        let g = ascii_compiler(96);
        let schema = serde_json::json!({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
            "uniqueItems": {"type": "integer"}},
            "$defs": {"s": {"type": "array", "uniqueItems": true}},
            "anyOf": [{"uniqueItems": false}]});
        let stripped = without_unenforced(schema.clone());
        assert!(stripped["properties"]["tags"].get("uniqueItems").is_none());
        assert!(stripped["$defs"]["s"].get("uniqueItems").is_none());
        assert!(stripped["anyOf"][0].get("uniqueItems").is_none());
        assert_eq!(stripped["properties"]["uniqueItems"]["type"], "integer");
        assert!(g.compile(&Grammar::JsonSchema(schema)).is_ok());
    }

    #[test]
    fn the_mask_keeps_the_output_on_the_grammar_and_ends_it() {
        let g = ascii_compiler(96);
        let schema = serde_json::json!({"type": "object",
            "properties": {"a": {"type": "integer"}}, "required": ["a"],
            "additionalProperties": false});
        let mut c = g.compile(&Grammar::JsonSchema(schema)).expect("compiles");
        // The model "prefers" text that is not JSON; the mask overrules it.
        let text = walk(&mut c, b"hello");
        let v: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        // `-0` is an integer to JSON Schema (serde reads it as a float).
        assert!(v["a"].as_f64().is_some_and(|a| a.fract() == 0.0), "{text}");
        let mut c = g.compile(&Grammar::JsonObject).expect("compiles");
        let text = walk(&mut c, b"{\"k\": [1, \"x\"]}");
        assert!(
            serde_json::from_str::<Json>(&text).is_ok_and(|v| v.is_object()),
            "{text:?}"
        );
    }

    #[test]
    fn a_token_the_grammar_forbids_is_a_step_error_not_a_panic() {
        let g = ascii_compiler(96);
        let mut c = g.compile(&Grammar::JsonObject).expect("compiles");
        let e = c.commit(id_of(b'x'));
        assert!(matches!(e, Err(ConstraintError::Step(_))), "{e:?}");
        let mut logits = vec![0.0; 96];
        assert!(
            c.apply(&mut logits).is_err(),
            "an errored matcher stays errored"
        );
    }

    #[test]
    fn ids_past_the_grammar_vocabulary_are_forbidden() {
        let g = ascii_compiler(96);
        let mut c = g.compile(&Grammar::JsonObject).expect("compiles");
        let mut logits = vec![0.0f32; 100];
        c.apply(&mut logits).expect("mask");
        assert!(logits[96..].iter().all(|x| *x == f32::NEG_INFINITY));
        assert_eq!(logits[id_of(b'{') as usize], 0.0);
        assert_eq!(logits[0], f32::NEG_INFINITY, "no end before the object");
    }
}
