//! The response and conversation store on a real file: save, replace, chains, owners,
//! deletes, pages, conversation items, pruning, and a reopen.

use serde_json::{json, Value};

use super::super::{new_id, Order};
use super::*;

fn open() -> (tempfile::TempDir, ResponseStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ResponseStore::open(&dir.path().join("wick.db")).expect("opens");
    (dir, store)
}

fn msg(role: &str, text: &str) -> Value {
    json!({"id": new_id("msg_"), "type": "message", "role": role, "status": "completed",
           "content": [{"type": "input_text", "text": text}]})
}

/// A completed response of `owner` whose input says `said` and whose output answers `answer`.
fn response(owner: &str, prev: Option<&str>, said: &str, answer: &str) -> StoredResponse {
    let id = new_id("resp_");
    StoredResponse {
        response: json!({"id": id, "object": "response", "status": "completed",
                         "output": [msg("assistant", answer)]}),
        id,
        owner: owner.into(),
        created_at: 1_700_000_000,
        status: "completed".into(),
        previous_response_id: prev.map(str::to_string),
        conversation_id: None,
        input_items: vec![msg("user", said)],
    }
}

fn texts(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn page_of(l: Listing) -> ItemPage {
    match l {
        Listing::Page(p) => p,
        other => panic!("expected a page, got {other:?}"),
    }
}

#[test]
fn ids_have_their_prefix_and_48_hex_digits_and_differ() {
    let (a, b) = (new_id("resp_"), new_id("resp_"));
    assert_ne!(a, b);
    let hex = a.strip_prefix("resp_").expect("prefix");
    assert_eq!(hex.len(), 48);
    assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn a_saved_response_reads_back_and_a_save_replaces_it() {
    let (_d, s) = open();
    let mut r = response("team", None, "hi", "hello");
    r.status = "queued".into();
    s.save(&r).unwrap();
    assert_eq!(s.get("team", &r.id).unwrap().as_ref(), Some(&r));
    // A background response is saved again when it ends: the same id, new status and output.
    r.status = "completed".into();
    r.response["output"] = json!([msg("assistant", "done")]);
    s.save(&r).unwrap();
    let got = s.get("team", &r.id).unwrap().expect("stored");
    assert_eq!(got.status, "completed");
    assert_eq!(texts(got.response["output"].as_array().unwrap()), ["done"]);
    // The replaced output is gone from the history too, not doubled.
    assert_eq!(
        texts(&s.history("team", &r.id).unwrap().unwrap()),
        ["hi", "done"]
    );
}

#[test]
fn the_history_of_a_three_response_chain_is_every_item_oldest_first() {
    let (_d, s) = open();
    let a = response("", None, "one", "1");
    let b = response("", Some(&a.id), "two", "2");
    let c = response("", Some(&b.id), "three", "3");
    for r in [&a, &b, &c] {
        s.save(r).unwrap();
    }
    let h = s.history("", &c.id).unwrap().expect("a chain");
    assert_eq!(texts(&h), ["one", "1", "two", "2", "three", "3"]);
    assert_eq!(
        texts(&s.history("", &b.id).unwrap().unwrap()),
        ["one", "1", "two", "2"]
    );
    // A deleted link ends the chain there.
    assert!(s.delete("", &a.id).unwrap());
    assert_eq!(
        texts(&s.history("", &c.id).unwrap().unwrap()),
        ["two", "2", "three", "3"]
    );
}

#[test]
fn another_owner_sees_nothing_and_cannot_overwrite() {
    let (_d, s) = open();
    let r = response("team", None, "secret", "ok");
    s.save(&r).unwrap();
    assert_eq!(s.get("other", &r.id).unwrap(), None);
    assert_eq!(s.history("other", &r.id).unwrap(), None);
    assert_eq!(
        s.input_items("other", &r.id, None, 20, Order::Desc)
            .unwrap(),
        Listing::Missing
    );
    assert!(!s.delete("other", &r.id).unwrap());
    let mut theirs = r.clone();
    theirs.owner = "other".into();
    assert!(s.save(&theirs).is_err());
    assert_eq!(
        s.get("team", &r.id).unwrap().expect("still there").owner,
        "team"
    );
}

#[test]
fn a_delete_removes_the_response_and_its_items() {
    let (_d, s) = open();
    let r = response("", None, "x", "y");
    s.save(&r).unwrap();
    assert!(s.delete("", &r.id).unwrap());
    assert_eq!(s.get("", &r.id).unwrap(), None);
    assert!(!s.delete("", &r.id).unwrap());
    let left: i64 = s
        .with(|c| c.query_row("SELECT COUNT(*) FROM response_items", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn input_items_page_both_ways_with_a_cursor() {
    let (_d, s) = open();
    let mut r = response("", None, "", "out");
    r.input_items = (0..5).map(|i| msg("user", &format!("m{i}"))).collect();
    s.save(&r).unwrap();
    let ids: Vec<String> = r
        .input_items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let p = page_of(s.input_items("", &r.id, None, 2, Order::Asc).unwrap());
    assert_eq!(
        (texts(&p.data), p.has_more),
        (vec!["m0".into(), "m1".into()], true)
    );
    let p = page_of(
        s.input_items("", &r.id, Some(&ids[1]), 10, Order::Asc)
            .unwrap(),
    );
    assert_eq!(
        (texts(&p.data), p.has_more),
        (vec!["m2".into(), "m3".into(), "m4".into()], false)
    );
    let p = page_of(s.input_items("", &r.id, None, 2, Order::Desc).unwrap());
    assert_eq!(texts(&p.data), ["m4", "m3"]);
    let p = page_of(
        s.input_items("", &r.id, Some(&ids[3]), 2, Order::Desc)
            .unwrap(),
    );
    assert_eq!(
        (texts(&p.data), p.has_more),
        (vec!["m2".into(), "m1".into()], true)
    );
    assert_eq!(
        s.input_items("", &r.id, Some("msg_nope"), 2, Order::Asc)
            .unwrap(),
        Listing::UnknownAfter
    );
}

#[test]
fn conversation_items_append_list_get_and_delete() {
    let (_d, s) = open();
    let id = new_id("conv_");
    let c = s
        .create_conversation("team", &id, &json!({"topic": "t"}), &[msg("user", "a")])
        .unwrap();
    assert_eq!(c.to_json()["object"], "conversation");
    assert!(s
        .add_items("team", &id, &[msg("assistant", "b"), msg("user", "c")])
        .unwrap());
    s.append_items("team", &id, &[msg("assistant", "d")])
        .unwrap();
    let all = s.conversation_items("team", &id).unwrap().expect("there");
    assert_eq!(texts(&all), ["a", "b", "c", "d"]);
    assert_eq!(s.conversation_items("other", &id).unwrap(), None);
    assert!(!s.add_items("other", &id, &[msg("user", "x")]).unwrap());
    let b = all[1]["id"].as_str().unwrap();
    assert_eq!(
        s.conversation_item("team", &id, b).unwrap().as_ref(),
        Some(&all[1])
    );
    assert_eq!(s.conversation_item("other", &id, b).unwrap(), None);
    let p = page_of(s.list_items("team", &id, Some(b), 1, Order::Asc).unwrap());
    assert_eq!((texts(&p.data), p.has_more), (vec!["c".into()], true));
    assert_eq!(s.delete_item("other", &id, b).unwrap(), None);
    let (conv, deleted) = s.delete_item("team", &id, b).unwrap().expect("there");
    assert!(deleted && conv.id == id);
    assert!(!s.delete_item("team", &id, b).unwrap().expect("there").1);
    assert_eq!(
        texts(&s.conversation_items("team", &id).unwrap().unwrap()),
        ["a", "c", "d"]
    );
    let c = s
        .update_conversation("team", &id, &json!({"topic": "u"}))
        .unwrap()
        .expect("there");
    assert_eq!(c.metadata["topic"], "u");
    assert_eq!(
        s.update_conversation("other", &id, &json!({})).unwrap(),
        None
    );
    assert!(!s.delete_conversation("other", &id).unwrap());
    assert!(s.delete_conversation("team", &id).unwrap());
    assert_eq!(s.conversation("team", &id).unwrap(), None);
    let left: i64 = s
        .with(|c| c.query_row("SELECT COUNT(*) FROM conversation_items", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn pruning_removes_what_is_older_than_the_cutoff_and_keeps_the_rest() {
    let (_d, s) = open();
    let mut old = response("", None, "old", "o");
    old.created_at = 1_000;
    let new = response("", None, "new", "n");
    s.save(&old).unwrap();
    s.save(&new).unwrap();
    let (stale, fresh) = (new_id("conv_"), new_id("conv_"));
    s.create_conversation("", &stale, &json!({}), &[msg("user", "s")])
        .unwrap();
    s.create_conversation("", &fresh, &json!({}), &[]).unwrap();
    assert!(s.set_conversation_updated_at("", &stale, 1_000).unwrap());
    let pruned = s.prune(2_000).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            responses: 1,
            conversations: 1
        }
    );
    assert_eq!(s.get("", &old.id).unwrap(), None);
    assert!(s.get("", &new.id).unwrap().is_some());
    assert_eq!(s.conversation("", &stale).unwrap(), None);
    assert!(s.conversation("", &fresh).unwrap().is_some());
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wick.db");
    let r = response("", None, "kept", "yes");
    let conv = new_id("conv_");
    {
        let s = ResponseStore::open(&db).unwrap();
        s.save(&r).unwrap();
        s.create_conversation("", &conv, &json!({"k": "v"}), &[msg("user", "c")])
            .unwrap();
    }
    let s = ResponseStore::open(&db).unwrap();
    assert_eq!(s.get("", &r.id).unwrap().as_ref(), Some(&r));
    assert_eq!(
        s.conversation("", &conv).unwrap().unwrap().metadata["k"],
        "v"
    );
}

/// The ids of a page of conversations.
fn conv_ids(l: Listing) -> Vec<String> {
    page_of(l)
        .data
        .iter()
        .map(|c| c["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn conversations_list_newest_first_by_owner_with_pages_and_search() {
    let (_d, s) = open();
    let mut ids = Vec::new();
    for (i, title) in ["Rust lifetimes", "50%_off sale", "rust macros"]
        .iter()
        .enumerate()
    {
        let id = new_id("conv_");
        s.create_conversation("team", &id, &json!({"title": title}), &[])
            .unwrap();
        // Distinct last changes: the order does not hang on rowids alone.
        s.set_conversation_updated_at("team", &id, 1_700_000_000 + i as i64)
            .unwrap();
        ids.push(id);
    }
    s.create_conversation("other", &new_id("conv_"), &json!({"title": "Rust"}), &[])
        .unwrap();
    let list = |search: Option<&str>, after: Option<&str>, limit, order| {
        conv_ids(
            s.list_conversations("team", search, after, limit, order)
                .unwrap(),
        )
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list(None, None, 10, Order::Desc), newest_first);
    assert_eq!(list(None, None, 10, Order::Asc), ids);
    // Pages of one follow the cursor and say when more follow.
    let first = s
        .list_conversations("team", None, None, 2, Order::Desc)
        .unwrap();
    assert!(page_of(first.clone()).has_more);
    assert_eq!(conv_ids(first), newest_first[..2]);
    assert_eq!(
        list(None, Some(ids[1].as_str()), 2, Order::Desc),
        vec![ids[0].clone()]
    );
    let last = s
        .list_conversations("team", None, Some(ids[1].as_str()), 2, Order::Desc)
        .unwrap();
    assert!(!page_of(last).has_more);
    // Search is over metadata values, case folded; % and _ are literal.
    assert_eq!(
        list(Some("RUST"), None, 10, Order::Desc),
        vec![ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(
        list(Some("%_"), None, 10, Order::Desc),
        vec![ids[1].clone()]
    );
    assert_eq!(
        list(Some("title"), None, 10, Order::Desc),
        Vec::<String>::new()
    );
    // Another owner's id is no cursor; renaming moves a conversation to the front.
    let theirs = conv_ids(
        s.list_conversations("other", None, None, 10, Order::Desc)
            .unwrap(),
    );
    assert_eq!(
        s.list_conversations("team", None, Some(theirs[0].as_str()), 10, Order::Desc)
            .unwrap(),
        Listing::UnknownAfter
    );
    s.update_conversation("team", &ids[0], &json!({"title": "renamed"}))
        .unwrap();
    assert_eq!(list(None, None, 1, Order::Desc), vec![ids[0].clone()]);
}
