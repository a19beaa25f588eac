"""The tokenizer rebuilt from GGUF metadata: exact ids, round trips, special tokens, both GGUF models."""

from __future__ import annotations

from pathlib import Path

import pytest

from pensieve.core.errors import ModelFileError, UnsupportedModelError
from pensieve.core.protocols import Tokenizer
from pensieve.formats import GGUFFile, GGUFTokenizer, open_gguf
from tests.support.gguf_factory import (
    GEMMA_TEMPLATE,
    reference_bpe_tokenizer,
    tiny_bpe_vocab,
    tiny_gemma_vocab,
    tiny_spm_vocab,
    write_llama_gguf,
    write_tiny_gguf,
)

ROUND_TRIP_TEXTS = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\r\nlines",
    "Café, naïve, résumé, é",
    "日本語のテキスト",
    "emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷",
    "mixed <|im_start|> special <|im_end|> text",
    "",
]


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2: GGUFFile) -> GGUFTokenizer:
    return smollm2.tokenizer()


def test_default_model_exact_ids(smol_tokenizer: GGUFTokenizer) -> None:
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert smol_tokenizer.encode(prompt) == [
        1,
        4093,
        198,
        1780,
        314,
        260,
        3575,
        282,
        4649,
        47,
        2,
        198,
        1,
        520,
        9531,
        198,
    ]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_default_model_round_trips(smol_tokenizer: GGUFTokenizer, text: str) -> None:
    assert smol_tokenizer.decode(smol_tokenizer.encode(text)) == text


def test_default_model_facts(smol_tokenizer: GGUFTokenizer) -> None:
    assert isinstance(smol_tokenizer, Tokenizer)
    assert smol_tokenizer.vocab_size == 49152
    assert smol_tokenizer.eos_token_ids == frozenset({2})
    assert (smol_tokenizer.bos_token_id, smol_tokenizer.add_bos) == (1, False)
    assert smol_tokenizer.encode("<|im_end|>") == [2]
    assert smol_tokenizer.encode("<|im_end") != [2]
    assert len(smol_tokenizer.encode("12345")) == 5  # SmolLM's pre-tokenizer splits every digit


@pytest.mark.parametrize("text", [*ROUND_TRIP_TEXTS, "What is the capital of France?", "the lazy dog 12345."])
def test_synthetic_vocab_matches_hf_tokenizers(f32_path: Path, text: str) -> None:
    ours = open_gguf(f32_path).tokenizer()
    assert ours.encode(text) == reference_bpe_tokenizer().encode(text).ids
    assert ours.decode(ours.encode(text)) == text


def _extended_vocab(
    tmp_path: Path, pre: str | None, extra: dict[str, int], merges: list[str]
) -> GGUFTokenizer:
    tokens, base_merges = tiny_bpe_vocab()
    types = [3 if t.startswith("<|") else 1 for t in tokens]
    metadata = {
        "tokenizer.ggml.tokens": tokens + list(extra),
        "tokenizer.ggml.token_type": types + list(extra.values()),
        "tokenizer.ggml.merges": base_merges + merges,
    }
    return open_gguf(write_llama_gguf(tmp_path / "m.gguf", tokenizer_pre=pre, metadata=metadata)).tokenizer()


@pytest.mark.parametrize(
    ("pre", "pieces"),
    [
        ("default", ["12", "34", "a", "b", "c"]),  # GPT-2: a run of digits is one pre-token
        (None, ["12", "34", "a", "b", "c"]),  # no pre recorded: GPT-2
        ("smollm", ["1", "2", "3", "4", "a", "b", "c"]),  # every digit alone
        ("llama-bpe", ["12", "3", "4", "abc"]),  # digits in threes; whole words found in the vocabulary
        ("qwen2", ["1", "2", "3", "4", "a", "b", "c"]),  # Llama 3's regex, digits alone, merges only
    ],
)
def test_pre_tokenizer_follows_tokenizer_ggml_pre(tmp_path: Path, pre: str | None, pieces: list[str]) -> None:
    # "abc" is in the vocabulary but no merge builds it: only llama3's ignore_merges finds it whole
    tokenizer = _extended_vocab(tmp_path, pre, {"12": 1, "34": 1, "abc": 1}, ["1 2", "3 4"])
    tokens = tiny_bpe_vocab()[0] + ["12", "34", "abc"]
    assert [tokens[i] for i in tokenizer.encode("1234abc")] == pieces


def test_user_defined_tokens_are_special(tmp_path: Path) -> None:
    tokenizer = _extended_vocab(tmp_path, "default", {"<tool_call>": 4}, [])
    assert tokenizer.encode("<tool_call>the")[0] == 300
    assert tokenizer.decode(tokenizer.encode("<tool_call>the")) == "<tool_call>the"


def test_unknown_pre_tokenizer_is_unsupported(tmp_path: Path) -> None:
    gguf_file = open_gguf(write_llama_gguf(tmp_path / "m.gguf", tokenizer_pre="tekken"))
    with pytest.raises(UnsupportedModelError, match="'tekken'"):
        gguf_file.tokenizer()


def test_merge_of_unknown_tokens_is_a_file_error(tmp_path: Path) -> None:
    merges = tiny_bpe_vocab()[1]
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"tokenizer.ggml.merges": [*merges, "zzz qqq"]})
    with pytest.raises(ModelFileError, match="merges"):
        open_gguf(path).tokenizer()


def test_missing_vocabulary_is_a_file_error(tmp_path: Path) -> None:
    path = write_llama_gguf(
        tmp_path / "m.gguf", metadata={"tokenizer.ggml.tokens": None, "llama.vocab_size": 300}
    )
    with pytest.raises(ModelFileError, match=r"tokenizer\.ggml\.tokens"):
        open_gguf(path).tokenizer()


def test_token_list_of_numbers_is_a_file_error(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", metadata={"tokenizer.ggml.tokens": list(range(300))})
    with pytest.raises(ModelFileError, match="strings"):
        open_gguf(path).tokenizer()


# --- SentencePiece ("llama") vocabularies ----------------------------------------------------


@pytest.fixture(scope="module")
def spm(tmp_path_factory: pytest.TempPathFactory) -> GGUFTokenizer:
    path = write_llama_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf", tokenizer_model="llama")
    return open_gguf(path).tokenizer()


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("hello world", ["▁hello", "▁world"]),
        ("the hello", ["▁the", "▁hello"]),
        ("Hello", ["▁", "<0x48>", "e", "llo"]),  # no "H" piece: byte fallback
        ("日", ["▁", "<0xE6>", "<0x97>", "<0xA5>"]),
        (" hello", ["▁", "▁hello"]),  # a space is prepended even before a leading space
        ("<s>hello</s>", ["<s>", "▁hello", "</s>"]),  # and after a special token
    ],
)
def test_sentencepiece_pieces(spm: GGUFTokenizer, text: str, pieces: list[str]) -> None:
    tokens = tiny_spm_vocab()[0]
    assert [tokens[i] for i in spm.encode(text)] == pieces


@pytest.mark.parametrize("text", ["hello world", "Hello, 日本語 😀!", "  two  spaces", "the end."])
def test_sentencepiece_round_trips(spm: GGUFTokenizer, text: str) -> None:
    assert spm.decode(spm.encode(text)) == text


def test_sentencepiece_facts(spm: GGUFTokenizer) -> None:
    assert (spm.bos_token_id, spm.add_bos, spm.eos_token_ids) == (1, True, frozenset({2}))
    assert spm.vocab_size == len(tiny_spm_vocab()[0])


# --- Gemma's SentencePiece vocabulary (no space prefix, turn markers) ------------------------


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> GGUFFile:
    path = tmp_path_factory.mktemp("gemma") / "gemma.gguf"
    return open_gguf(
        write_tiny_gguf(path, architecture="gemma3", tokenizer_model="gemma", chat_template=GEMMA_TEMPLATE)
    )


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("hello world", ["hello", "▁world"]),  # add_space_prefix is false: no leading "▁"
        (" hello", ["▁", "hello"]),
        ("Hello  world", ["<0x48>", "e", "llo", "▁", "▁world"]),
        (
            "<start_of_turn>user\nhello<end_of_turn>",
            ["<start_of_turn>", "user", "<0x0A>", "hello", "<end_of_turn>"],
        ),
    ],
)
def test_gemma_pieces(gemma: GGUFFile, text: str, pieces: list[str]) -> None:
    tokens = tiny_gemma_vocab()[0]
    assert [tokens[i] for i in gemma.tokenizer().encode(text)] == pieces


def test_gemma_chat_prompt(gemma: GGUFFile) -> None:
    """The template's BOS text becomes the BOS id, the turn markers their ids, and the end-of-turn
    marker ends generation alongside <eos>."""
    tokenizer, tokens = gemma.tokenizer(), tiny_gemma_vocab()[0]
    prompt = gemma.chat_template().render([{"role": "user", "content": "hello"}], add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    assert [tokens[i] for i in ids] == [
        "<bos>", "<start_of_turn>", "user", "<0x0A>", "hello", "<end_of_turn>", "<0x0A>",
        "<start_of_turn>", "model", "<0x0A>",
    ]  # fmt: skip
    assert tokenizer.decode(ids) == prompt
    assert (tokenizer.bos_token_id, tokenizer.add_bos) == (tokens.index("<bos>"), True)
    assert tokenizer.eos_token_ids == {tokens.index("<eos>"), tokens.index("<end_of_turn>")}
