//! Tool calls out of generated text: a streaming scanner over one choice's decoded text that
//! separates content from `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks.
//! Pure, run by each choice's text stage (`api::choice_text`, after stop strings) for streamed
//! and non-streamed responses alike, so both see the same calls.
//!
//! Content that could be the start of an open tag is held back (as stop strings are), so the
//! raw tag never leaks into a stream; whitespace next to a call is dropped. A block whose JSON
//! does not parse as a call is given back as text, tags included: nothing the model wrote is
//! lost, and so is a call to a function the request did not list (as OpenAI never returns
//! one). A call is emitted once its closing tag (or the end of the choice) is seen.

use serde_json::Value as Json;

use super::validate::tools::{CALL_CLOSE, CALL_OPEN};

/// One parsed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    /// `call_` and 24 random hex digits.
    pub id: String,
    pub name: String,
    /// The arguments object as a JSON string, as OpenAI sends it.
    pub arguments: String,
}

/// What one push gives: content to send, or a complete call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Call(ParsedCall),
}

/// Per-choice scanner state.
#[derive(Debug, Clone, Default)]
pub struct ToolCallScanner {
    /// Outside a call: text held back (a possible tag start, trailing whitespace). Inside: the
    /// call's body so far.
    buf: String,
    inside: bool,
    /// Drop whitespace until the next non-whitespace (right after a call).
    after_call: bool,
    /// Whitespace cut before the open call's tag, given back if the block is no call.
    ws_before: String,
    calls: usize,
    /// The functions the request listed; a call to any other stays text.
    names: Vec<String>,
}

fn new_call_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!("call_{}", &hex[..24])
}

/// `{"name": "...", "arguments": {...}}` (or `"parameters"`, or arguments as a JSON string)
/// as a call; `None` when it is not one.
pub fn parse_call(body: &str) -> Option<ParsedCall> {
    let v: Json = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters"));
    let arguments = match args {
        None | Some(Json::Null) => "{}".to_string(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Some(ParsedCall {
        id: new_call_id(),
        name,
        arguments,
    })
}

impl ToolCallScanner {
    /// A scanner that accepts calls to the functions `names`.
    pub fn new(names: Vec<String>) -> Self {
        Self {
            names,
            ..Self::default()
        }
    }

    /// Calls emitted so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds decoded text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let text = if self.after_call && !self.inside {
            let t = text.trim_start();
            self.after_call = t.is_empty();
            t
        } else {
            text
        };
        self.buf.push_str(text);
        loop {
            if self.inside {
                let Some(pos) = self.buf.find(CALL_CLOSE) else {
                    break;
                };
                let body = self.buf[..pos].to_string();
                let piece = self.end_call(&body, true);
                let is_call = matches!(piece, Piece::Call(_));
                let rest = &self.buf[pos + CALL_CLOSE.len()..];
                let rest = if is_call { rest.trim_start() } else { rest }.to_string();
                out.push(piece);
                self.after_call = is_call && rest.is_empty();
                self.buf = rest;
            } else if let Some(pos) = self.buf.find(CALL_OPEN) {
                let before = self.buf[..pos].trim_end();
                self.ws_before = self.buf[before.len()..pos].to_string();
                if !before.is_empty() {
                    out.push(Piece::Text(before.to_string()));
                }
                self.buf.drain(..pos + CALL_OPEN.len());
                self.inside = true;
            } else {
                let cut = self.buf.len() - self.holdback();
                if cut > 0 {
                    out.push(Piece::Text(self.buf[..cut].to_string()));
                    self.buf.drain(..cut);
                }
                break;
            }
        }
        out
    }

    /// The end of the choice: an open call is parsed as it stands; held text is released
    /// (whitespace only when no call was made).
    pub fn finish(&mut self) -> Vec<Piece> {
        let buf = std::mem::take(&mut self.buf);
        if self.inside {
            self.inside = false;
            return vec![self.end_call(&buf, false)];
        }
        if buf.is_empty() || (self.calls > 0 && buf.trim().is_empty()) {
            return Vec::new();
        }
        vec![Piece::Text(buf)]
    }

    fn end_call(&mut self, body: &str, closed: bool) -> Piece {
        self.inside = false;
        match parse_call(body).filter(|c| self.names.contains(&c.name)) {
            Some(call) => {
                self.ws_before.clear();
                self.calls += 1;
                Piece::Call(call)
            }
            None => {
                let close = if closed { CALL_CLOSE } else { "" };
                let ws = std::mem::take(&mut self.ws_before);
                Piece::Text(format!("{ws}{CALL_OPEN}{body}{close}"))
            }
        }
    }

    /// Bytes at the end of `buf` to hold back: the longest suffix that is a proper prefix of
    /// the open tag, and the whitespace before it.
    fn holdback(&self) -> usize {
        let b = &self.buf;
        let mut keep = 0;
        for (start, _) in b.char_indices() {
            let suffix = &b[start..];
            if suffix.len() < CALL_OPEN.len() && CALL_OPEN.starts_with(suffix) {
                keep = suffix.len();
                break;
            }
        }
        let head = &b[..b.len() - keep];
        keep + (head.len() - head.trim_end().len())
    }
}

/// Content and calls of a whole text (what a non-streamed response holds).
pub fn parse_all(text: &str, names: &[String]) -> (String, Vec<ParsedCall>) {
    let mut sc = ToolCallScanner::new(names.to_vec());
    let mut pieces = sc.push(text);
    pieces.extend(sc.finish());
    let mut content = String::new();
    let mut calls = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call(c) => calls.push(c),
        }
    }
    (content, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The functions these tests' requests list.
    fn listed() -> Vec<String> {
        ["f", "a", "b"].map(String::from).to_vec()
    }

    fn parse_all_listed(text: &str) -> (String, Vec<ParsedCall>) {
        parse_all(text, &listed())
    }

    #[test]
    fn a_call_to_an_unlisted_function_stays_text() {
        let text = "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>";
        assert_eq!(parse_all_listed(text), (text.to_string(), Vec::new()));
        let (content, calls) =
            parse_all_listed(&format!("{text}<tool_call>{{\"name\": \"f\"}}</tool_call>"));
        assert_eq!(content, text);
        assert_eq!(calls.len(), 1);
    }

    fn names(calls: &[ParsedCall]) -> Vec<(&str, &str)> {
        calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect()
    }

    #[test]
    fn one_call_two_calls_and_text_with_a_call() {
        let (content, calls) = parse_all_listed(
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>",
        );
        assert_eq!(content, "");
        assert_eq!(names(&calls), [("f", r#"{"x":1}"#)]);
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);

        let two = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n\
                   <tool_call>\n{\"name\": \"b\", \"arguments\": {\"y\": \"z\"}}\n</tool_call>";
        let (content, calls) = parse_all_listed(two);
        assert_eq!(content, "");
        assert_eq!(names(&calls), [("a", "{}"), ("b", r#"{"y":"z"}"#)]);
        assert_ne!(calls[0].id, calls[1].id);

        let (content, calls) = parse_all_listed(
            "Let me check.\n<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"q\\\": 2}\"}</tool_call>",
        );
        assert_eq!(content, "Let me check.");
        assert_eq!(names(&calls), [("f", r#"{"q": 2}"#)]);
    }

    #[test]
    fn malformed_json_is_kept_as_text() {
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": }\n</tool_call>";
        let (content, calls) = parse_all_listed(text);
        assert!(calls.is_empty());
        assert_eq!(content, text);
        let (content, calls) = parse_all_listed("<tool_call>{\"arguments\": {}}</tool_call> ok");
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>{\"arguments\": {}}</tool_call> ok");
        let text = "See: <tool_call>nope</tool_call>";
        assert_eq!(parse_all_listed(text), (text.to_string(), Vec::new()));
        // Unclosed but complete: a call; unclosed and cut: text.
        let (_, calls) = parse_all_listed("<tool_call>\n{\"name\": \"f\", \"arguments\": {}}");
        assert_eq!(names(&calls), [("f", "{}")]);
        let (content, calls) = parse_all_listed("<tool_call>\n{\"name\": \"f\", \"argu");
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>\n{\"name\": \"f\", \"argu");
    }

    #[test]
    fn streaming_never_leaks_the_tag_and_matches_the_whole_text() {
        let text =
            "Sure <tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, 2]}}\n</tool_call>\n";
        for split in 1..text.len() {
            if !text.is_char_boundary(split) {
                continue;
            }
            let mut sc = ToolCallScanner::new(listed());
            let mut pieces = sc.push(&text[..split]);
            pieces.extend(sc.push(&text[split..]));
            pieces.extend(sc.finish());
            let content: String = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Text(t) => Some(t.as_str()),
                    Piece::Call(_) => None,
                })
                .collect();
            assert_eq!(content, "Sure", "split at {split}");
            assert!(!content.contains('<'));
            assert_eq!(sc.calls(), 1);
        }
        let mut sc = ToolCallScanner::new(listed());
        assert_eq!(sc.push("a <tool"), vec![Piece::Text("a".into())]);
        assert_eq!(sc.push("box>"), vec![Piece::Text(" <toolbox>".into())]);
        assert_eq!(sc.finish(), Vec::new());
    }
}
