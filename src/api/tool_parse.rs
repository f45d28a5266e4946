//! Tool calls out of generated text: a streaming scanner over one choice's decoded text that
//! separates content from `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks.
//! Pure, run by each choice's text stage (`api::choice_text`, after stop strings) for streamed
//! and non-streamed responses alike, so both see the same calls.
//!
//! Content that could be the start of an open tag is held back (as stop strings are), so the
//! raw tag never leaks into a stream; whitespace next to a call is dropped. A block's body is
//! read as JSON ([`body`]): a call starts once its name is read and is a function the request
//! listed, its arguments stream out as they are generated, and it ends where its object closes
//! (`</tool_call>` inside a string is text of the arguments). A block that turns out to be no
//! call before its name is read (not JSON, no name, a function the request did not list, as
//! OpenAI never returns one) is given back as text, tags included: nothing the model wrote is
//! lost. A block cut by the end of the choice before its name is dropped, and a started call
//! cut by it ends with the arguments it has.

mod body;

use body::{CallBody, Flow};

use super::validate::tools::{CALL_CLOSE, CALL_OPEN};

/// One call, as a whole (what [`parse_all`] collects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    /// `call_` and 24 random hex digits.
    pub id: String,
    pub name: String,
    /// The arguments as a JSON string, as OpenAI sends it.
    pub arguments: String,
}

/// What one push gives, in order: content, or the parts of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Content (never empty).
    Text(String),
    /// A call to a listed function starts.
    CallStart { id: String, name: String },
    /// More of the open call's arguments; the pieces concatenate to them.
    CallArgs(String),
    /// The open call is complete (or cut).
    CallEnd,
}

/// Where the scanner is.
#[derive(Debug, Clone, Default)]
enum Mode {
    /// Content.
    #[default]
    Outside,
    /// After `<tool_call>`.
    Body(CallBody),
    /// A call's object has closed: its `</tool_call>` is dropped.
    AfterCall,
}

/// Per-choice scanner state.
#[derive(Debug, Clone, Default)]
pub struct ToolCallScanner {
    /// Outside: text held back (a possible tag start, trailing whitespace). In a body: the
    /// body so far, given back if it is no call. After a call: what may be its close tag.
    buf: String,
    mode: Mode,
    /// Drop whitespace until the next non-whitespace (right after a call).
    after_call: bool,
    /// Whitespace cut before the open block's tag, given back if the block is no call.
    ws_before: String,
    calls: usize,
    /// The functions the request listed; a call to any other stays text.
    names: Vec<String>,
}

fn new_call_id() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!("call_{}", &hex[..24])
}

impl ToolCallScanner {
    /// A scanner that accepts calls to the functions `names`.
    pub fn new(names: Vec<String>) -> Self {
        Self {
            names,
            ..Self::default()
        }
    }

    /// Calls started so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Feeds decoded text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut rest = text.to_string();
        while !rest.is_empty() {
            rest = match self.mode {
                Mode::Outside => self.outside(rest, &mut out),
                Mode::Body(_) => self.body(&rest, &mut out),
                Mode::AfterCall => self.after(rest),
            };
        }
        self.finish_pieces(out)
    }

    /// The end of the choice: a started call ends as it stands; held text is released
    /// (whitespace only when no call was made).
    pub fn finish(&mut self) -> Vec<Piece> {
        let buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        match std::mem::take(&mut self.mode) {
            Mode::Body(mut body) => body.cut(&mut out),
            Mode::AfterCall => {
                let t = buf.trim_start();
                if !CALL_CLOSE.starts_with(t) {
                    out.push(Piece::Text(t.to_string()));
                }
            }
            Mode::Outside => {
                // Whitespace between or after calls is no text of its own.
                let between_calls = self.calls > 0 && buf.trim().is_empty();
                if !buf.is_empty() && !between_calls {
                    out.push(Piece::Text(buf));
                }
            }
        }
        self.finish_pieces(out)
    }

    /// Counts the calls started and merges runs of text and of arguments.
    fn finish_pieces(&mut self, pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
        for p in pieces {
            match (out.last_mut(), p) {
                (_, Piece::Text(t)) if t.is_empty() => {}
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (Some(Piece::CallArgs(a)), Piece::CallArgs(b)) => a.push_str(&b),
                (_, p) => {
                    self.calls += usize::from(matches!(p, Piece::CallStart { .. }));
                    out.push(p);
                }
            }
        }
        out
    }

    /// Content: text before a tag goes out (less a possible tag start); returns what follows
    /// an open tag.
    fn outside(&mut self, rest: String, out: &mut Vec<Piece>) -> String {
        let text = match self.after_call {
            true => {
                let t = rest.trim_start();
                self.after_call = t.is_empty();
                t
            }
            false => rest.as_str(),
        };
        self.buf.push_str(text);
        if let Some(pos) = self.buf.find(CALL_OPEN) {
            let before = self.buf[..pos].trim_end();
            self.ws_before = self.buf[before.len()..pos].to_string();
            out.push(Piece::Text(before.to_string()));
            let after = self.buf[pos + CALL_OPEN.len()..].to_string();
            self.buf.clear();
            self.mode = Mode::Body(CallBody::new());
            return after;
        }
        let cut = self.buf.len() - self.holdback();
        out.push(Piece::Text(self.buf[..cut].to_string()));
        self.buf.drain(..cut);
        String::new()
    }

    /// A block's body, one character at a time; returns the text after the block's end.
    fn body(&mut self, rest: &str, out: &mut Vec<Piece>) -> String {
        let Mode::Body(body) = &mut self.mode else {
            return String::new();
        };
        let names = &self.names;
        let listed = |n: &str| names.iter().any(|x| x == n);
        for (i, c) in rest.char_indices() {
            match body.push(c, &listed, out) {
                Flow::More => self.buf.push(c),
                Flow::Closed => {
                    self.end_block(Mode::AfterCall);
                    return rest[i + c.len_utf8()..].to_string();
                }
                Flow::Broke if body.started() => {
                    self.end_block(Mode::AfterCall);
                    return rest[i..].to_string();
                }
                Flow::Broke => {
                    let ws = std::mem::take(&mut self.ws_before);
                    out.push(Piece::Text(format!("{ws}{CALL_OPEN}{}", self.buf)));
                    self.end_block(Mode::Outside);
                    return rest[i..].to_string();
                }
            }
        }
        String::new()
    }

    fn end_block(&mut self, mode: Mode) {
        self.buf.clear();
        self.ws_before.clear();
        self.mode = mode;
    }

    /// After a call's object: its close tag (and whitespace before it) is dropped; anything
    /// else is content again. Returns the text to read as content.
    fn after(&mut self, rest: String) -> String {
        self.buf.push_str(&rest);
        let t = self.buf.trim_start();
        if let Some(after) = t.strip_prefix(CALL_CLOSE) {
            let after = after.to_string();
            self.end_block(Mode::Outside);
            self.after_call = true;
            return after;
        }
        if CALL_CLOSE.starts_with(t) {
            return String::new();
        }
        let t = t.to_string();
        self.end_block(Mode::Outside);
        self.after_call = true;
        t
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
    let mut calls: Vec<ParsedCall> = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => content.push_str(&t),
            Piece::CallStart { id, name } => calls.push(ParsedCall {
                id,
                name,
                arguments: String::new(),
            }),
            Piece::CallArgs(a) => {
                if let Some(c) = calls.last_mut() {
                    c.arguments.push_str(&a);
                }
            }
            Piece::CallEnd => {}
        }
    }
    (content, calls)
}

#[cfg(test)]
mod tests;
