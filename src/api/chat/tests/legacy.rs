//! Legacy function calling out: with `functions` sent, a call goes out as `function_call`
//! (streamed and folded alike) with `finish_reason: "function_call"`, and only the first call.

use super::*;

#[tokio::test]
async fn calls_go_out_as_one_function_call_streamed_and_folded() {
    let reply = Reply {
        legacy_functions: true,
        ..streamed(true)
    };
    let text_rules = rules(&[], Some(&["f", "g"]));
    let mut events = tokens(
        0,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>\n\
         <tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>",
    );
    events.push(finished(0, engine::FinishReason::Stop, 40));
    let chunks = run(
        ChatStream::new(meta(reply, 3), 1, &text_rules),
        events.clone(),
    );
    let choices: Vec<Value> = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(choices
        .iter()
        .all(|c| c["delta"].get("tool_calls").is_none()));
    let (mut name, mut args) = (String::new(), String::new());
    for c in &choices {
        if let Some(f) = c["delta"].get("function_call") {
            name.push_str(f["name"].as_str().unwrap_or(""));
            args.push_str(f["arguments"].as_str().expect("arguments"));
        }
    }
    assert_eq!(name, "f", "the second call is dropped");
    assert_eq!(
        serde_json::from_str::<Value>(&args).expect("JSON"),
        json!({"a": 1})
    );
    let finish: Vec<&Value> = choices
        .iter()
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("function_call")]);
    assert!(
        chunks.iter().all(|c| !c["choices"].as_array().expect("choices").is_empty()
            || !c["usage"].is_null()),
        "no empty chunk left where a dropped call was"
    );

    let body_reply = Reply {
        stream: false,
        ..reply
    };
    let body = stream::testing::collect_now(
        ChatStream::new(meta(body_reply, 3), 1, &text_rules),
        events_of(events),
    )
    .await
    .expect("body");
    let body = serde_json::to_value(body).expect("json");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "function_call");
    assert!(choice["message"]["content"].is_null(), "{choice}");
    assert!(choice["message"].get("tool_calls").is_none(), "{choice}");
    assert_eq!(choice["message"]["function_call"]["name"], "f");
    assert_eq!(choice["message"]["function_call"]["arguments"], args);
}
