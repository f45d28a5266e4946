"""LlamaIndex's OpenAI-compatible LLM (`llama-index-llms-openai-like`'s `OpenAILike`, as a chat
model) against wick: chat, stream_chat, and a function-calling program that extracts a pydantic
object through a forced tool call. The LlamaIndex versions are the newest that install beside
the pinned `openai` (later ones require openai < 3)."""

from __future__ import annotations

import os
import tempfile

# llama-index-core 0.10 fetches NLTK data from the internet at import when it is missing. These
# tests use none of it: empty stand-ins keep the import offline (no test leaves 127.0.0.1).
_NLTK = tempfile.mkdtemp(prefix="wick-e2e-nltk-")
for _d in ("corpora/stopwords", "tokenizers/punkt"):
    os.makedirs(os.path.join(_NLTK, _d), exist_ok=True)
os.environ.setdefault("NLTK_DATA", _NLTK)

from llama_index.core.llms import ChatMessage, MessageRole  # noqa: E402
from llama_index.core.program import FunctionCallingProgram  # noqa: E402
from llama_index.llms.openai_like import OpenAILike  # noqa: E402
# LlamaIndex 0.10 reads pydantic v1 models (its bridge): a v2 model loses its `$defs`.
from llama_index.core.bridge.pydantic import BaseModel, Field  # noqa: E402

from conftest import MODEL  # noqa: E402


def llm(server, **kw) -> OpenAILike:
    return OpenAILike(
        model=MODEL,
        api_base=f"{server.url}/v1",
        api_key="unused",
        is_chat_model=True,
        is_function_calling_model=True,
        context_window=8192,
        temperature=0,
        max_retries=0,
        timeout=300,
        **kw,
    )


QUESTION = [
    ChatMessage(role=MessageRole.SYSTEM, content="Answer in one short sentence."),
    ChatMessage(role=MessageRole.USER, content="What colour is the sky?"),
]


class Song(BaseModel):
    """A song."""

    title: str = Field(max_length=30)
    length_seconds: int = Field(ge=1, le=600)


class Album(BaseModel):
    """An album with its songs."""

    name: str = Field(max_length=30)
    artist: str = Field(max_length=30)
    songs: list[Song] = Field(max_items=3)


def test_chat_answers(server):
    r = llm(server, max_tokens=24).chat(QUESTION)
    assert r.message.role == MessageRole.ASSISTANT
    assert isinstance(r.message.content, str) and r.message.content.strip()
    assert r.raw.usage.completion_tokens <= 24


def test_stream_chat_adds_up_to_the_chat_answer(server):
    model = llm(server, max_tokens=24)
    pieces = list(model.stream_chat(QUESTION))
    assert len(pieces) > 2, "streamed in pieces"
    text = "".join(p.delta or "" for p in pieces)
    assert text == pieces[-1].message.content
    assert text == model.chat(QUESTION).message.content, "greedy: streamed = not streamed"


def test_function_calling_program_extracts_the_model(server):
    program = FunctionCallingProgram.from_defaults(
        output_cls=Album,
        prompt_template_str="Invent an album by {artist} with two short songs.",
        llm=llm(server, max_tokens=200),
    )
    # LlamaIndex 0.10's program sends `tool_choice` "auto" unless told: the 135M model must be
    # made to call, as a real application does with a small model.
    album = program(llm_kwargs={"tool_choice": "Album"}, artist="The Beatles")
    assert isinstance(album, Album)
    assert album.name and album.artist
    assert len(album.songs) <= 3
    assert all(1 <= s.length_seconds <= 600 for s in album.songs)
