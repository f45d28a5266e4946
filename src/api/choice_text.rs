//! One choice's text stage: token ids -> UTF-8 text ([`IncrementalDecoder`]) -> stop strings
//! ([`StopScanner`]) -> tool calls ([`ToolCallScanner`]). Pure and synchronous: the endpoint
//! state machines own one per choice and call it as engine events arrive, for streamed and
//! non-streamed responses alike.

use std::sync::Arc;

use super::openai::FinishReason;
use super::stop::{Scan, StopScanner};
use super::tool_parse::{ParsedCall, Piece as ToolPiece, ToolCallScanner};
use super::validate::TextRules;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// What a choice produced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text to send (never empty).
    Text(String),
    /// A complete tool call; `call` numbers the choice's calls from 0.
    Call { call: usize, parsed: ParsedCall },
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
    /// calls made becomes `ToolCalls`).
    fn scan(&mut self, text: String, finish: Option<FinishReason>) -> Step {
        let mut step = Step::default();
        match self.tools.as_mut() {
            None => push_text(&mut step.pieces, text),
            Some(sc) => {
                let mut next = sc.calls();
                let mut pieces = sc.push(&text);
                if finish.is_some() {
                    pieces.extend(sc.finish());
                }
                for p in pieces {
                    match p {
                        ToolPiece::Text(t) => push_text(&mut step.pieces, t),
                        ToolPiece::Call(parsed) => {
                            step.pieces.push(Piece::Call { call: next, parsed });
                            next += 1;
                        }
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
                Piece::Call { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_stop_string_split_across_tokens_ends_the_choice_before_it() {
        let tok = Arc::new(byte_level(128));
        let rules = TextRules {
            stops: vec!["END".into()],
            tool_names: None,
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

    #[test]
    fn a_tool_call_becomes_a_call_piece_and_the_stop_becomes_tool_calls() {
        let tok = Arc::new(byte_level(128));
        let rules = TextRules {
            stops: Vec::new(),
            tool_names: Some(vec!["f".into()]),
        };
        let mut c = ChoiceText::new(tok.clone(), &rules);
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>";
        let mut steps: Vec<Step> = ids(&tok, text).into_iter().map(|i| c.token(i)).collect();
        steps.push(c.finish(FinishReason::Stop));
        let calls: Vec<&ParsedCall> = steps
            .iter()
            .flat_map(|s| &s.pieces)
            .filter_map(|p| match p {
                Piece::Call { call: 0, parsed } => Some(parsed),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "f");
        assert_eq!(calls[0].arguments, r#"{"x":1}"#);
        assert_eq!(text_of(&steps), "", "the tags never leak");
        assert_eq!(
            steps.last().and_then(|s| s.finish),
            Some(FinishReason::ToolCalls)
        );
    }

    #[test]
    fn length_stays_length_with_an_unfinished_call_given_back_as_text() {
        let tok = Arc::new(byte_level(128));
        let rules = TextRules {
            stops: Vec::new(),
            tool_names: Some(vec!["f".into()]),
        };
        let mut c = ChoiceText::new(tok.clone(), &rules);
        let mut steps: Vec<Step> = ids(&tok, "<tool_call>{\"na")
            .into_iter()
            .map(|i| c.token(i))
            .collect();
        steps.push(c.finish(FinishReason::Length));
        assert_eq!(text_of(&steps), "<tool_call>{\"na");
        assert_eq!(
            steps.last().and_then(|s| s.finish),
            Some(FinishReason::Length)
        );
    }
}
