//! One choice's text stage: token ids -> UTF-8 text ([`IncrementalDecoder`]) -> stop strings
//! ([`StopScanner`]) -> tool calls ([`ToolCallScanner`]). Pure and synchronous: the endpoint
//! state machines own one per choice and call it as engine events arrive, for streamed and
//! non-streamed responses alike.

use std::sync::Arc;

use super::openai::FinishReason;
use super::stop::{Scan, StopScanner};
use super::tool_parse::{Piece as ToolPiece, ToolCallScanner};
use super::validate::TextRules;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// What a choice produced, in order. A call is `CallStart`, its `CallArgs` (which
/// concatenate to its arguments), then `CallEnd`; `call` numbers the choice's calls from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text to send (never empty).
    Text(String),
    /// A call starts: its id (`call_...`, the same in every form of the response) and name.
    CallStart {
        call: usize,
        id: String,
        name: String,
    },
    /// More of the call's arguments (JSON text, compacted).
    CallArgs { call: usize, text: String },
    /// The call is complete, or cut by the end of the choice.
    CallEnd { call: usize },
}

/// The result of one token, or of the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    pub pieces: Vec<Piece>,
    /// Set when the choice ended here (a stop string, or the engine's end).
    pub finish: Option<FinishReason>,
}

/// The text state of one choice.
#[derive(Debug)]
pub struct ChoiceText {
    decoder: IncrementalDecoder,
    stops: StopScanner,
    tools: Option<ToolCallScanner>,
    /// One call at most: the choice ends with the first call's end.
    single_call: bool,
    /// Tokens generated so far (what usage counts for a choice a stop string ended).
    generated: usize,
    done: bool,
}

impl ChoiceText {
    pub fn new(tokenizer: Arc<Tokenizer>, rules: &TextRules) -> Self {
        Self {
            decoder: IncrementalDecoder::new(tokenizer, true),
            stops: StopScanner::new(&rules.stops),
            tools: rules.tool_names.clone().map(ToolCallScanner::new),
            single_call: rules.single_call,
            generated: 0,
            done: false,
        }
    }

    /// Ended (by a stop string or the engine): later events for it are ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn generated(&self) -> usize {
        self.generated
    }

    /// A generated token. A stop string found in the text ends the choice here.
    pub fn token(&mut self, id: u32) -> Step {
        self.generated += 1;
        let text = self.decoder.push(id);
        match self.stops.push(&text) {
            Scan::Emit(s) => self.scan(s, None),
            Scan::Stopped(s) => self.scan(s, Some(FinishReason::Stop)),
        }
    }

    /// The engine ended the choice (`Stop` or `Length`): what the decoder and the scanners
    /// still hold comes out.
    pub fn finish(&mut self, reason: FinishReason) -> Step {
        let mut text = String::new();
        match self.stops.push(&self.decoder.flush()) {
            Scan::Emit(s) => {
                text.push_str(&s);
                text.push_str(&self.stops.flush());
                self.scan(text, Some(reason))
            }
            Scan::Stopped(s) => self.scan(s, Some(FinishReason::Stop)),
        }
    }

    /// `text` through the tool-call scanner; with `finish`, the choice ends (a `Stop` with
    /// calls made becomes `ToolCalls`). Under `single_call` the first call's end ends the
    /// choice, and what follows it is dropped.
    fn scan(&mut self, text: String, mut finish: Option<FinishReason>) -> Step {
        let mut step = Step::default();
        match self.tools.as_mut() {
            None => push_text(&mut step.pieces, text),
            Some(sc) => {
                let before = sc.calls();
                let mut pieces = sc.push(&text);
                if finish.is_some() {
                    pieces.extend(sc.finish());
                }
                // The scanner numbers calls as they start; the open one is the last started.
                let mut call = before.saturating_sub(1);
                for p in pieces {
                    let piece = match p {
                        ToolPiece::Text(t) => {
                            push_text(&mut step.pieces, t);
                            continue;
                        }
                        ToolPiece::CallStart { id, name } => {
                            call = step_call(&step, before);
                            Piece::CallStart { call, id, name }
                        }
                        ToolPiece::CallArgs(text) => Piece::CallArgs { call, text },
                        ToolPiece::CallEnd => Piece::CallEnd { call },
                    };
                    let ended = matches!(piece, Piece::CallEnd { .. });
                    step.pieces.push(piece);
                    if ended && self.single_call {
                        finish = finish.or(Some(FinishReason::Stop));
                        break;
                    }
                }
            }
        }
        let called = self.tools.as_ref().is_some_and(|t| t.calls() > 0);
        step.finish = finish.map(|r| match r {
            FinishReason::Stop if called => FinishReason::ToolCalls,
            r => r,
        });
        self.done |= step.finish.is_some();
        step
    }
}

/// The number of the next call to start in `step`, after the `before` started earlier.
fn step_call(step: &Step, before: usize) -> usize {
    let started = step
        .pieces
        .iter()
        .filter(|p| matches!(p, Piece::CallStart { .. }))
        .count();
    before + started
}

/// Appends non-empty text, merged with a text piece before it.
fn push_text(pieces: &mut Vec<Piece>, text: String) {
    if text.is_empty() {
        return;
    }
    match pieces.last_mut() {
        Some(Piece::Text(t)) => t.push_str(&text),
        _ => pieces.push(Piece::Text(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::testing::byte_level;

    fn ids(tok: &Tokenizer, s: &str) -> Vec<u32> {
        tok.encode(s, false).expect("encodes")
    }

    fn text_of(steps: &[Step]) -> String {
        steps
            .iter()
            .flat_map(|s| &s.pieces)
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stop_string_split_across_tokens_ends_the_choice_before_it() {
        let tok = Arc::new(byte_level(128));
        let rules = TextRules {
            stops: vec!["END".into()],
            tool_names: None,
            single_call: false,
        };
        let mut c = ChoiceText::new(tok.clone(), &rules);
        let mut steps = Vec::new();
        for id in ids(&tok, "abc ENx EN") {
            steps.push(c.token(id));
        }
        assert_eq!(
            text_of(&steps),
            "abc ENx ",
            "a possible stop prefix is held back"
        );
        let step = c.token(ids(&tok, "D")[0]);
        assert_eq!(step.finish, Some(FinishReason::Stop));
        assert!(
            step.pieces.is_empty(),
            "the stop string is left out: {step:?}"
        );
        assert!(c.is_done());
        assert_eq!(c.generated(), 11);
    }

    #[test]
    fn held_text_comes_out_at_the_engine_end() {
        let tok = Arc::new(byte_level(128));
        let rules = TextRules {
            stops: vec!["END".into()],
            tool_names: None,
            single_call: false,
        };
        let mut c = ChoiceText::new(tok.clone(), &rules);
        let mut steps: Vec<Step> = ids(&tok, "xyEN").into_iter().map(|i| c.token(i)).collect();
        steps.push(c.finish(FinishReason::Length));
        assert_eq!(text_of(&steps), "xyEN");
        assert_eq!(
            steps.last().and_then(|s| s.finish),
            Some(FinishReason::Length)
        );
    }

    fn tool_rules(single_call: bool) -> TextRules {
        TextRules {
            stops: Vec::new(),
            tool_names: Some(vec!["f".into()]),
            single_call,
        }
    }

    /// `(call, name, arguments)` of the calls in `steps`, checking the pieces' order.
    fn calls_of(steps: &[Step]) -> Vec<(usize, String, String)> {
        let mut calls: Vec<(usize, String, String)> = Vec::new();
        let mut open = None;
        for p in steps.iter().flat_map(|s| &s.pieces) {
            match p {
                Piece::Text(_) => assert_eq!(open, None, "text inside a call"),
                Piece::CallStart { call, id, name } => {
                    assert_eq!(open, None);
                    assert_eq!(*call, calls.len());
                    assert!(id.starts_with("call_"));
                    open = Some(*call);
                    calls.push((*call, name.clone(), String::new()));
                }
                Piece::CallArgs { call, text } => {
                    assert_eq!(open, Some(*call));
                    calls[*call].2.push_str(text);
                }
                Piece::CallEnd { call } => {
                    assert_eq!(open.take(), Some(*call));
                }
            }
        }
        assert_eq!(open, None, "every call ends");
        calls
    }

    fn run(c: &mut ChoiceText, tok: &Tokenizer, text: &str, end: FinishReason) -> Vec<Step> {
        let mut steps = Vec::new();
        for id in ids(tok, text) {
            if c.is_done() {
                break;
            }
            steps.push(c.token(id));
        }
        if !c.is_done() {
            steps.push(c.finish(end));
        }
        steps
    }

    #[test]
    fn a_tool_call_streams_as_pieces_and_the_stop_becomes_tool_calls() {
        let tok = Arc::new(byte_level(128));
        let mut c = ChoiceText::new(tok.clone(), &tool_rules(false));
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>\n\
                    <tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 2}}\n</tool_call>";
        let steps = run(&mut c, &tok, text, FinishReason::Stop);
        let calls = calls_of(&steps);
        let want = [(0, "f", r#"{"x":1}"#), (1, "f", r#"{"x":2}"#)];
        let got: Vec<(usize, &str, &str)> = calls
            .iter()
            .map(|(i, n, a)| (*i, n.as_str(), a.as_str()))
            .collect();
        assert_eq!(got, want);
        let arg_steps = steps
            .iter()
            .filter(|s| s.pieces.iter().any(|p| matches!(p, Piece::CallArgs { .. })))
            .count();
        assert!(arg_steps >= 6, "the arguments stream token by token");
        assert_eq!(text_of(&steps), "", "the tags never leak");
        assert_eq!(
            steps.last().and_then(|s| s.finish),
            Some(FinishReason::ToolCalls)
        );
    }

    /// Issue 16.1: `parallel_tool_calls: false` was ignored and calls repeated.
    #[test]
    fn single_call_ends_the_choice_at_the_first_calls_end() {
        let tok = Arc::new(byte_level(128));
        let mut c = ChoiceText::new(tok.clone(), &tool_rules(true));
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>\n\
                    <tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>";
        let steps = run(&mut c, &tok, text, FinishReason::Length);
        assert_eq!(calls_of(&steps).len(), 1);
        assert!(c.is_done());
        assert_eq!(
            steps.last().and_then(|s| s.finish),
            Some(FinishReason::ToolCalls)
        );
        assert!(c.generated() < ids(&tok, text).len() / 2);
    }

    /// Issue 16.3: a call cut by max_tokens came back as raw `<tool_call>` text.
    #[test]
    fn a_call_cut_by_length_keeps_its_arguments_and_length() {
        let tok = Arc::new(byte_level(128));
        for single_call in [false, true] {
            let mut c = ChoiceText::new(tok.clone(), &tool_rules(single_call));
            let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": \"ab";
            let steps = run(&mut c, &tok, text, FinishReason::Length);
            assert_eq!(calls_of(&steps), [(0, "f".into(), r#"{"x":"ab"#.into())]);
            assert_eq!(text_of(&steps), "");
            assert_eq!(
                steps.last().and_then(|s| s.finish),
                Some(FinishReason::Length)
            );
        }
        let mut c = ChoiceText::new(tok.clone(), &tool_rules(false));
        let steps = run(&mut c, &tok, "<tool_call>{\"na", FinishReason::Length);
        assert_eq!(text_of(&steps), "", "no raw tag");
        assert!(calls_of(&steps).is_empty());
    }
}
