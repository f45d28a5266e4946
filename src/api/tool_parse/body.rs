//! The body of one `<tool_call>` block, `{"name": "f", "arguments": {...}}`, read one character
//! at a time as JSON: strings, escapes and nesting are tracked, so a string that holds
//! `</tool_call>` (or braces) does not end the call. The call starts (`CallStart`) as soon as
//! its name is read and is a listed function; arguments that are an object or an array stream
//! out as they come, compacted (no whitespace outside strings). Pure; run by the scanner in
//! `tool_parse.rs`.

use super::Piece;

/// What one character did to the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Taken; the block goes on.
    More,
    /// The object closed with this character: the call is complete.
    Closed,
    /// The character is no part of the block (not consumed). A started call ends here with
    /// what it has; one not started is no call.
    Broke,
}

/// One JSON value being read.
#[derive(Debug, Clone, Default)]
struct ValueScan {
    started: bool,
    depth: u32,
    in_str: bool,
    escape: bool,
    scalar: bool,
    /// An object or array (streamed as it comes), not a string or literal.
    nested: bool,
}

/// What one character did to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VStep {
    /// Whitespace outside a string: skipped.
    Skip,
    /// Part of the value.
    Take,
    /// The last character of the value.
    Last,
    /// The value ended before this character (a number or literal), which is not consumed.
    EndedBefore,
    /// Not JSON here.
    Bad,
}

impl ValueScan {
    fn push(&mut self, c: char) -> VStep {
        if self.in_str {
            if self.escape {
                self.escape = false;
            } else if c == '\\' {
                self.escape = true;
            } else if c == '"' {
                self.in_str = false;
                return if self.depth == 0 {
                    VStep::Last
                } else {
                    VStep::Take
                };
            }
            return VStep::Take;
        }
        if self.scalar {
            return match c {
                ',' | '}' | ']' | '<' => VStep::EndedBefore,
                c if c.is_whitespace() => VStep::EndedBefore,
                _ => VStep::Take,
            };
        }
        if c.is_whitespace() {
            return VStep::Skip;
        }
        let first = !self.started;
        self.started = true;
        match c {
            '"' => self.in_str = true,
            '{' | '[' => {
                self.nested |= first;
                self.depth += 1;
            }
            '}' | ']' if self.depth > 0 => {
                self.depth -= 1;
                if self.depth == 0 {
                    return VStep::Last;
                }
            }
            // `<` is never JSON outside a string: a tag the model wrote mid-value.
            '<' | '}' | ']' => return VStep::Bad,
            ',' | ':' if first => return VStep::Bad,
            _ if first => self.scalar = true,
            _ => {}
        }
        VStep::Take
    }
}

/// Where in the call object the reader is.
#[derive(Debug, Clone)]
enum At {
    /// Before the `{`.
    Open,
    /// After `{` or `,`: a key or `}`.
    KeyOrEnd,
    /// In a key; its raw literal so far.
    Key(String, bool),
    Colon,
    /// In the value of `key`.
    Value(ValueScan),
    CommaOrEnd,
}

/// The state of one block.
#[derive(Debug, Clone)]
pub(super) struct CallBody {
    at: At,
    /// The key whose value is being read.
    key: String,
    /// The raw text of a value held until it ends (the name, arguments held back).
    held: String,
    name: Option<String>,
    /// The call's id once started.
    id: Option<String>,
    /// Arguments complete before the name was known, or a string/literal argument.
    args_ready: Option<String>,
    /// Some argument text went out.
    args_sent: bool,
    /// The arguments' value was read to its end.
    args_done: bool,
}

fn decode_string(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(raw).ok()
}

/// Arguments held until their end: an object as it is, a JSON string's contents (arguments
/// sent as a string), `null` as `{}`.
fn held_arguments(raw: &str) -> String {
    match raw {
        "null" => "{}".into(),
        s if s.starts_with('"') => decode_string(s).unwrap_or_else(|| s.to_string()),
        s => s.to_string(),
    }
}

impl CallBody {
    pub(super) fn new() -> Self {
        Self {
            at: At::Open,
            key: String::new(),
            held: String::new(),
            name: None,
            id: None,
            args_ready: None,
            args_sent: false,
            args_done: false,
        }
    }

    /// The call started (its name was read and is listed).
    pub(super) fn started(&self) -> bool {
        self.id.is_some()
    }

    fn is_args_key(&self) -> bool {
        self.key == "arguments" || self.key == "parameters"
    }

    /// Feeds one character; pieces of the call go to `out`. `listed` says whether a name is a
    /// function the request gave.
    pub(super) fn push(
        &mut self,
        c: char,
        listed: &dyn Fn(&str) -> bool,
        out: &mut Vec<Piece>,
    ) -> Flow {
        match &mut self.at {
            At::Open | At::KeyOrEnd | At::Colon | At::CommaOrEnd if c.is_whitespace() => Flow::More,
            At::Open if c == '{' => self.goto(At::KeyOrEnd),
            At::KeyOrEnd if c == '"' => self.goto(At::Key("\"".into(), false)),
            At::KeyOrEnd | At::CommaOrEnd if c == '}' => self.close(out),
            At::Key(raw, escape) => {
                raw.push(c);
                if *escape {
                    *escape = false;
                } else if c == '\\' {
                    *escape = true;
                } else if c == '"' {
                    self.key = decode_string(raw).unwrap_or_default();
                    return self.goto(At::Colon);
                }
                Flow::More
            }
            At::Colon if c == ':' => {
                self.held.clear();
                self.goto(At::Value(ValueScan::default()))
            }
            At::CommaOrEnd if c == ',' => self.goto(At::KeyOrEnd),
            At::Value(scan) => {
                let step = scan.push(c);
                let container = scan.nested;
                self.value(c, step, container, listed, out)
            }
            _ => self.broke(out),
        }
    }

    fn goto(&mut self, at: At) -> Flow {
        self.at = at;
        Flow::More
    }

    /// One character of the value of `self.key`.
    fn value(
        &mut self,
        c: char,
        step: VStep,
        container: bool,
        listed: &dyn Fn(&str) -> bool,
        out: &mut Vec<Piece>,
    ) -> Flow {
        let streaming = self.is_args_key() && self.started() && container;
        match step {
            VStep::Skip => return Flow::More,
            VStep::Bad => return self.broke(out),
            VStep::Take | VStep::Last if streaming => {
                self.args_sent = true;
                out.push(Piece::CallArgs(c.to_string()));
            }
            VStep::Take | VStep::Last => self.held.push(c),
            VStep::EndedBefore => {}
        }
        if matches!(step, VStep::Take) {
            return Flow::More;
        }
        self.at = At::CommaOrEnd;
        if self.value_done(streaming, listed, out) == Flow::Broke {
            return self.broke(out);
        }
        match step {
            VStep::EndedBefore => self.push(c, listed, out),
            _ => Flow::More,
        }
    }

    /// A value ended: the name starts the call; held arguments go out once it has started.
    fn value_done(
        &mut self,
        streamed: bool,
        listed: &dyn Fn(&str) -> bool,
        out: &mut Vec<Piece>,
    ) -> Flow {
        let held = std::mem::take(&mut self.held);
        if self.key == "name" && self.name.is_none() {
            let Some(name) = decode_string(&held).filter(|n| listed(n)) else {
                return Flow::Broke;
            };
            let id = super::new_call_id();
            out.push(Piece::CallStart {
                id: id.clone(),
                name: name.clone(),
            });
            self.name = Some(name);
            self.id = Some(id);
            if let Some(args) = self.args_ready.take() {
                self.args_sent = true;
                out.push(Piece::CallArgs(args));
            }
        } else if self.is_args_key() && !self.args_done {
            self.args_done = true;
            if streamed {
                return Flow::More;
            }
            let args = held_arguments(&held);
            match self.started() {
                true => {
                    self.args_sent = true;
                    out.push(Piece::CallArgs(args));
                }
                false => self.args_ready = Some(args),
            }
        }
        Flow::More
    }

    /// The object's `}`: a complete call (`{}` for arguments never given), or no call.
    fn close(&mut self, out: &mut Vec<Piece>) -> Flow {
        if !self.started() {
            return Flow::Broke;
        }
        self.end(out);
        Flow::Closed
    }

    /// A character that cannot be part of the block.
    fn broke(&mut self, out: &mut Vec<Piece>) -> Flow {
        if self.started() {
            self.end(out);
        }
        Flow::Broke
    }

    /// Ends a started call: `{}` when it has no arguments at all.
    fn end(&mut self, out: &mut Vec<Piece>) {
        if !self.args_sent && !self.args_done {
            out.push(Piece::CallArgs("{}".into()));
        }
        self.args_sent = true;
        self.args_done = true;
        out.push(Piece::CallEnd);
    }

    /// The choice ended inside the block: a started call ends with the arguments it has.
    pub(super) fn cut(&mut self, out: &mut Vec<Piece>) {
        if self.started() {
            out.push(Piece::CallEnd);
        }
    }
}
