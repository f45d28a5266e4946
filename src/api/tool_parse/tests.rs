use super::*;

/// The functions these tests' requests list.
fn listed() -> Vec<String> {
    ["f", "a", "b"].map(String::from).to_vec()
}

fn parse_all_listed(text: &str) -> (String, Vec<ParsedCall>) {
    parse_all(text, &listed())
}

fn names(calls: &[ParsedCall]) -> Vec<(&str, &str)> {
    calls
        .iter()
        .map(|c| (c.name.as_str(), c.arguments.as_str()))
        .collect()
}

/// `text` fed in pieces of `step` bytes (at char boundaries), then the end.
fn pieces_of(text: &str, step: usize) -> Vec<Piece> {
    let mut sc = ToolCallScanner::new(listed());
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + step).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.extend(sc.push(&text[start..end]));
        start = end;
    }
    out.extend(sc.finish());
    out
}

#[test]
fn a_call_to_an_unlisted_function_stays_text() {
    let text = "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>";
    assert_eq!(parse_all_listed(text), (text.to_string(), Vec::new()));
    let (content, calls) =
        parse_all_listed(&format!("{text}<tool_call>{{\"name\": \"f\"}}</tool_call>"));
    assert_eq!(content, text);
    assert_eq!(names(&calls), [("f", "{}")]);
}

#[test]
fn one_call_two_calls_and_text_with_a_call() {
    let (content, calls) =
        parse_all_listed("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>");
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

/// Issue 16.2: the parser stopped at the first `</tool_call>`, even inside a JSON string, and
/// a complete forced call came back as content.
#[test]
fn a_close_tag_inside_a_string_does_not_end_the_call() {
    let text = "<tool_call>\n{\"name\":\"f\",\"arguments\":{\"s\":\"a </tool_call> b\",\
                \"t\":\"}\\\"{\"}}\n</tool_call>";
    let (content, calls) = parse_all_listed(text);
    assert_eq!(content, "");
    assert_eq!(
        names(&calls),
        [("f", r#"{"s":"a </tool_call> b","t":"}\"{"}"#)]
    );
    let args: serde_json::Value = serde_json::from_str(&calls[0].arguments).expect("JSON");
    assert_eq!(args["t"], "}\"{");
}

#[test]
fn escapes_nesting_and_key_order_are_followed() {
    // Escaped quotes and backslashes, arrays of objects, whitespace inside strings kept and
    // outside dropped, arguments before the name, `parameters` for `arguments`.
    let text = "<tool_call>{\"arguments\": {\"p\": \"C:\\\\ \\\"x\\\"\", \"l\": [ {\"k\": [1, \
                2]}, null ]}, \"name\": \"a\"}</tool_call> <tool_call>{\"name\": \"b\", \
                \"parameters\": {\"q\": \"two  spaces\"}, \"extra\": [true]}</tool_call>";
    let (content, calls) = parse_all_listed(text);
    assert_eq!(content, "");
    assert_eq!(
        names(&calls),
        [
            ("a", r#"{"p":"C:\\ \"x\"","l":[{"k":[1,2]},null]}"#),
            ("b", r#"{"q":"two  spaces"}"#)
        ]
    );
    let (_, calls) = parse_all_listed("<tool_call>{\"name\": \"f\", \"arguments\": null}");
    assert_eq!(names(&calls), [("f", "{}")]);
}

#[test]
fn a_block_that_is_no_call_is_kept_as_text() {
    let text = "See: <tool_call>nope</tool_call>";
    assert_eq!(parse_all_listed(text), (text.to_string(), Vec::new()));
    let text = "<tool_call>{\"arguments\": {}}</tool_call> ok";
    assert_eq!(parse_all_listed(text), (text.to_string(), Vec::new()));
    let text = "<tool_call>{\"name\": 3}</tool_call>";
    assert_eq!(parse_all_listed(text), (text.to_string(), Vec::new()));
    // After a block given back, a real call is still found.
    let (content, calls) =
        parse_all_listed("<tool_call>[1]</tool_call> <tool_call>{\"name\": \"f\"}</tool_call>");
    assert_eq!(content, "<tool_call>[1]</tool_call>");
    assert_eq!(names(&calls), [("f", "{}")]);
}

/// Issue 16.3: a call cut by max_tokens came back as raw `<tool_call>` text.
#[test]
fn a_cut_call_keeps_its_arguments_so_far_and_no_tag_leaks() {
    let (content, calls) =
        parse_all_listed("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, 2");
    assert_eq!(content, "");
    assert_eq!(names(&calls), [("f", r#"{"x":[1,2"#)]);
    let (content, calls) = parse_all_listed("<tool_call>\n{\"name\": \"f\", \"argu");
    assert_eq!(content, "");
    assert_eq!(names(&calls), [("f", "")]);
    // Cut before the name: nothing to return, and no tag either.
    assert_eq!(
        parse_all_listed("ok <tool_call>\n{\"na"),
        ("ok".to_string(), Vec::new())
    );
    // Complete but unclosed: a call.
    let (content, calls) =
        parse_all_listed("<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool");
    assert_eq!((content.as_str(), names(&calls)), ("", vec![("f", "{}")]));
}

#[test]
fn a_tag_written_mid_json_ends_the_call() {
    let (content, calls) =
        parse_all_listed("<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1</tool_call>Done.");
    assert_eq!(names(&calls), [("f", r#"{"x":1"#)]);
    assert_eq!(content, "Done.");
    let (content, calls) =
        parse_all_listed("<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}\n</tool_call>");
    assert_eq!(
        (content.as_str(), names(&calls)),
        ("", vec![("f", r#"{"x":1}"#)])
    );
}

/// Issue 16.4: arguments were sent whole at the call's end.
#[test]
fn arguments_stream_as_they_come_and_concatenate() {
    let text = "Sure <tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, 2], \"s\": \
                \"</tool_call>\"}}\n</tool_call>\n<tool_call>{\"name\": \"a\"}</tool_call>";
    let whole = parse_all_listed(text);
    for step in 1..12 {
        let pieces = pieces_of(text, step);
        let mut content = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut open = false;
        for p in &pieces {
            match p {
                Piece::Text(t) => {
                    assert!(!open, "text inside a call: {pieces:?}");
                    content.push_str(t);
                }
                Piece::CallStart { id, name } => {
                    assert!(!open);
                    open = true;
                    calls.push((id.clone(), name.clone(), String::new()));
                }
                Piece::CallArgs(a) => {
                    assert!(open);
                    calls.last_mut().expect("a call").2.push_str(a);
                }
                Piece::CallEnd => {
                    assert!(open);
                    open = false;
                }
            }
        }
        assert!(!open);
        assert_eq!(content, whole.0, "step {step}");
        let got: Vec<(&str, &str)> = calls.iter().map(|c| (c.1.as_str(), c.2.as_str())).collect();
        assert_eq!(got, names(&whole.1), "step {step}");
        let args_pieces = pieces
            .iter()
            .filter(|p| matches!(p, Piece::CallArgs(_)))
            .count();
        if step < 4 {
            assert!(args_pieces > 3, "arguments come in pieces: {pieces:?}");
        }
    }
    assert_eq!(whole.0, "Sure");
    assert_eq!(
        names(&whole.1),
        [("f", r#"{"x":[1,2],"s":"</tool_call>"}"#), ("a", "{}")]
    );
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
                _ => None,
            })
            .collect();
        assert_eq!(content, "Sure", "split at {split}");
        assert_eq!(sc.calls(), 1);
    }
    let mut sc = ToolCallScanner::new(listed());
    assert_eq!(sc.push("a <tool"), vec![Piece::Text("a".into())]);
    assert_eq!(sc.push("box>"), vec![Piece::Text(" <toolbox>".into())]);
    assert_eq!(sc.finish(), Vec::new());
}
