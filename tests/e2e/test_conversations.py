"""Stored conversations and responses through the official `openai` client (issue 11): the
Conversations API end to end (`conversations.create/retrieve/update/delete`,
`conversations.items.create/list/retrieve/delete` with auto-paging), another key's 404, and a
created response read back with `responses.retrieve`, `responses.input_items.list` (paged) and
`responses.delete`.

The response tests need `POST /v1/responses` (the create path); on a build without it they are
skipped, and only on its 404: any other failure of the create call fails the test.
"""

from __future__ import annotations

import openai
import pytest

from conftest import API_KEY


def test_a_conversation_through_its_whole_life(client):
    conv = client.conversations.create(
        metadata={"topic": "birds"},
        items=[{"type": "message", "role": "user", "content": "Which bird is fastest?"}],
    )
    assert conv.id.startswith("conv_") and conv.object == "conversation"
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "birds"}
    updated = client.conversations.update(conv.id, metadata={"topic": "falcons"})
    assert updated.metadata == {"topic": "falcons"}

    added = client.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "The peregrine falcon."}]},
            {"type": "function_call", "call_id": "call_1", "name": "speed", "arguments": '{"bird":"falcon"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "389 km/h"},
            {"type": "message", "role": "user", "content": "And the slowest?"},
        ],
    )
    assert [i.type for i in added.data] == ["message", "function_call", "function_call_output", "message"]

    # Two items a page, oldest first: the client follows `last_id` through three pages.
    items = list(client.conversations.items.list(conv.id, limit=2, order="asc"))
    assert [i.type for i in items] == ["message", "message", "function_call", "function_call_output", "message"]
    assert items[0].content[0].text == "Which bird is fastest?"
    newest = client.conversations.items.list(conv.id, limit=1)
    assert newest.data[0].id == items[-1].id and newest.has_more

    call = client.conversations.items.retrieve(items[2].id, conversation_id=conv.id)
    assert (call.name, call.arguments) == ("speed", '{"bird":"falcon"}')
    back = client.conversations.items.delete(items[2].id, conversation_id=conv.id)
    assert back.id == conv.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(items[2].id, conversation_id=conv.id)
    assert len(list(client.conversations.items.list(conv.id))) == 4

    deleted = client.conversations.delete(conv.id)
    assert (deleted.id, deleted.deleted) == (conv.id, True)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def test_bad_items_and_metadata_are_400s_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.create(items=[{"type": "message", "role": "robot", "content": "hi"}])
    assert e.value.body["param"] == "items[0].role"
    with pytest.raises(openai.BadRequestError) as e:
        client.conversations.create(metadata={f"k{i}": "v" for i in range(17)})
    assert e.value.body["param"] == "metadata"


def test_another_key_cannot_see_a_conversation(tmp_path_factory):
    from conftest import start_server

    s = start_server(
        tmp_path_factory.mktemp("wick-conv-keys"), "--api-key", API_KEY, "--api-key", "sk-wick-e2e-other",
    )
    try:
        mine = s.client(api_key=API_KEY)
        theirs = s.client(api_key="sk-wick-e2e-other")
        conv = mine.conversations.create(items=[{"role": "user", "content": "private"}])
        with pytest.raises(openai.NotFoundError):
            theirs.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            theirs.conversations.items.list(conv.id)
        with pytest.raises(openai.NotFoundError):
            theirs.conversations.delete(conv.id)
        assert mine.conversations.retrieve(conv.id).id == conv.id
    finally:
        s.stop()


def create_or_skip(client, **kw):
    """`responses.create`, or a skip when this build has no `POST /v1/responses` at all."""
    try:
        return client.responses.create(**kw)
    except openai.NotFoundError as e:
        if "no such route" in str(e):
            pytest.skip("POST /v1/responses is not on this build")
        raise


def test_a_created_response_is_retrieved_listed_and_deleted(client):
    inputs = [
        {"role": "user", "content": "Say one word."},
        {"role": "assistant", "content": "Word."},
        {"role": "user", "content": "Another."},
    ]
    created = create_or_skip(client, model="smol", input=inputs, max_output_tokens=8)
    got = client.responses.retrieve(created.id)
    assert (got.id, got.status, got.output_text) == (created.id, created.status, created.output_text)

    page = client.responses.input_items.list(created.id, limit=2, order="asc")
    assert len(page.data) == 2 and page.has_more
    every = list(client.responses.input_items.list(created.id, limit=2, order="asc"))
    assert [i.role for i in every] == ["user", "assistant", "user"]
    assert every[0].content[0].text == "Say one word."
    newest = client.responses.input_items.list(created.id)
    assert [i.id for i in newest.data] == [i.id for i in reversed(every)]

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
