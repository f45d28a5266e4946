//! The tokenizer and chat template of SmolLM2-135M-Instruct against llama.cpp's reference
//! outputs (`../shared/reference/`, see its README): ids exact in both parse_special modes,
//! token bytes exact, decode round trips, template prompts exact. Built from the GGUF, and
//! again from a `tokenizer.json` + `tokenizer_config.json` written out of it.
//!
//! The model comes from `WICK_TEST_MODEL` or `models/`; the reference from
//! `WICK_REFERENCE_DIR` or `../shared/reference`. Missing files skip the tests, except under
//! `CI`, where they fail.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::quantized::gguf_file;
use serde::Deserialize;
use serde_json::{json, Value};
use wick::tokenizer::{ChatTemplate, IncrementalDecoder, Tokenizer};

#[derive(Debug, Deserialize)]
struct TokenizerCases {
    cases: Vec<TokenizerCase>,
}

#[derive(Debug, Deserialize)]
struct TokenizerCase {
    id: String,
    text: String,
    parse_special: bool,
    ids: Vec<u32>,
    pieces_hex: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ChatCases {
    chat_template: String,
    bos_token: String,
    eos_token: String,
    cases: Vec<ChatCase>,
}

#[derive(Debug, Deserialize)]
struct ChatCase {
    id: String,
    messages: Vec<Value>,
    prompt: String,
    prompt_without_generation_prompt: String,
    ids: Vec<u32>,
}

struct Fixture {
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    tokenizer_cases: Vec<TokenizerCase>,
    chat: ChatCases,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).expect("reference file reads");
    serde_json::from_str(&text).expect("reference file parses")
}

fn load_fixture() -> Option<Fixture> {
    let model = crate::common::model_path()?;
    let reference = crate::common::reference_dir();
    let mut file = std::fs::File::open(&model).expect("model opens");
    let content = gguf_file::Content::read(&mut file).expect("GGUF header reads");
    let tokenizer = Tokenizer::from_gguf(&content).expect("tokenizer builds from GGUF");
    let template = ChatTemplate::from_gguf(&content)
        .expect("chat template compiles")
        .expect("the GGUF has a chat template");
    let cases: TokenizerCases = read_json(&reference.join("tokenizer_cases.json"));
    Some(Fixture {
        tokenizer: Arc::new(tokenizer),
        template,
        tokenizer_cases: cases.cases,
        chat: read_json(&reference.join("chat_template_cases.json")),
    })
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(load_fixture).as_ref()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mismatches of `tokenizer` against every tokenizer case, one line each.
fn tokenizer_mismatches(tokenizer: &Tokenizer, cases: &[TokenizerCase]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let ids = tokenizer
            .encode(&case.text, case.parse_special)
            .expect("reference text encodes");
        if ids != case.ids {
            failures.push(format!("{}: ids {ids:?}, expected {:?}", case.id, case.ids));
            continue;
        }
        let prompt_ids = tokenizer
            .encode_prompt(&case.text, case.parse_special)
            .expect("reference text encodes");
        if prompt_ids != case.ids {
            failures.push(format!("{}: encode_prompt added {prompt_ids:?}", case.id));
        }
        let pieces: Vec<String> = ids
            .iter()
            .map(|id| hex(tokenizer.token_bytes(*id)))
            .collect();
        if pieces != case.pieces_hex {
            failures.push(format!(
                "{}: pieces {pieces:?}, expected {:?}",
                case.id, case.pieces_hex
            ));
        }
        let text = tokenizer.decode(&ids, false);
        if text != case.text {
            failures.push(format!(
                "{}: decoded {text:?}, expected {:?}",
                case.id, case.text
            ));
        }
    }
    failures
}

/// Mismatches of `template` + `tokenizer` against every chat case, one line each.
fn chat_mismatches(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    cases: &[ChatCase],
) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let prompt = template
            .render(&case.messages, None, true)
            .expect("template renders");
        if prompt != case.prompt {
            failures.push(format!(
                "{}: prompt {prompt:?}\n  expected {:?}",
                case.id, case.prompt
            ));
        }
        let without = template
            .render(&case.messages, None, false)
            .expect("template renders");
        if without != case.prompt_without_generation_prompt {
            failures.push(format!(
                "{}: prompt without generation prompt {without:?}\n  expected {:?}",
                case.id, case.prompt_without_generation_prompt
            ));
        }
        let ids = tokenizer.encode(&prompt, true).expect("prompt encodes");
        if ids != case.ids {
            failures.push(format!(
                "{}: ids {ids:?}\n  expected {:?}",
                case.id, case.ids
            ));
        }
    }
    failures
}

#[test]
fn every_tokenizer_case_matches_llama_cpp() {
    let Some(fx) = fixture() else { return };
    assert_eq!(fx.tokenizer_cases.len(), 72);
    let failures = tokenizer_mismatches(&fx.tokenizer, &fx.tokenizer_cases);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_chat_template_case_matches_exactly() {
    let Some(fx) = fixture() else { return };
    assert_eq!(fx.chat.cases.len(), 11);
    let failures = chat_mismatches(&fx.template, &fx.tokenizer, &fx.chat.cases);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn model_facts_match_the_reference() {
    let Some(fx) = fixture() else { return };
    let tokenizer = &fx.tokenizer;
    assert_eq!(tokenizer.vocab_size(), 49_152);
    assert_eq!(tokenizer.bos_token(), Some((1, fx.chat.bos_token.as_str())));
    assert_eq!(tokenizer.eos_token(), Some((2, fx.chat.eos_token.as_str())));
    assert!(!tokenizer.add_bos());
    assert!((0..=16).all(|id| tokenizer.is_special(id)));
    assert!(!tokenizer.is_special(17));
    assert_eq!(tokenizer.token_to_id("<empty_output>"), Some(16));
    assert_eq!(tokenizer.token_bytes(16), b"<empty_output>");
    assert_eq!(tokenizer.token_bytes(49_152), b"");
    // eos first; `<|endoftext|>` ends a generation too, as in llama.cpp.
    assert_eq!(tokenizer.stop_token_ids(), [2, 0]);
    assert_eq!(tokenizer.decode(&[1, 19556, 2], true), "Hello");
    assert_eq!(
        tokenizer.decode(&[1, 19556, 2], false),
        "<|im_start|>Hello<|im_end|>"
    );
}

#[test]
fn streaming_decode_of_every_case_equals_the_text() {
    let Some(fx) = fixture() else { return };
    for case in &fx.tokenizer_cases {
        let mut decoder = IncrementalDecoder::new(Arc::clone(&fx.tokenizer), false);
        let mut pieces: Vec<String> = case.ids.iter().map(|id| decoder.push(*id)).collect();
        pieces.push(decoder.flush());
        assert!(
            pieces.iter().all(|piece| !piece.contains('\u{FFFD}')),
            "{}: {pieces:?}",
            case.id
        );
        assert_eq!(pieces.concat(), case.text, "{}", case.id);
        assert_eq!(
            fx.tokenizer.decode(&case.ids, false),
            case.text,
            "{}",
            case.id
        );
        if case.id == "emoji-zwj-family" {
            // Some chars of this case are split across tokens: a token that completes no
            // char yields nothing.
            assert!(
                pieces[..case.ids.len()].iter().any(String::is_empty),
                "{pieces:?}"
            );
        }
    }
}

#[test]
fn a_saved_tokenizer_json_gives_the_same_ids_and_prompts() {
    let Some(fx) = fixture() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let tokenizer_json = dir.path().join("tokenizer.json");
    fx.tokenizer
        .inner()
        .save(&tokenizer_json, false)
        .expect("tokenizer.json saves");
    let config = dir.path().join("tokenizer_config.json");
    let config_json = json!({
        "add_bos_token": false,
        "bos_token": fx.chat.bos_token,
        "eos_token": {"content": fx.chat.eos_token, "special": true},
        "chat_template": fx.chat.chat_template,
    });
    std::fs::write(&config, config_json.to_string()).expect("config writes");

    let tokenizer =
        Tokenizer::from_hf_files(&tokenizer_json, Some(&config), None).expect("tokenizer loads");
    let template = ChatTemplate::from_tokenizer_config(&config)
        .expect("template compiles")
        .expect("config has a template");
    assert_eq!(tokenizer.vocab_size(), fx.tokenizer.vocab_size());
    assert_eq!(tokenizer.bos_token(), fx.tokenizer.bos_token());
    assert_eq!(tokenizer.eos_token(), fx.tokenizer.eos_token());
    assert_eq!(tokenizer.stop_token_ids(), fx.tokenizer.stop_token_ids());
    assert!(!tokenizer.add_bos());

    let mut failures = tokenizer_mismatches(&tokenizer, &fx.tokenizer_cases);
    failures.extend(chat_mismatches(&template, &tokenizer, &fx.chat.cases));
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
