"""GGUF files are untrusted input: hostile headers fail fast with ModelFileError, hostile chat
templates can neither reach Python internals nor exhaust memory, and a server whose model
carries such a template answers with an error and keeps serving.

tests/formats covers bad magic, versions, truncation, string/array lengths, offsets beyond the
file or misaligned, unknown types and a first set of sandbox escapes; these add the rest.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import gguf
import pytest
from starlette.testclient import TestClient

from pensieve.core import ModelFileError
from pensieve.formats import open_gguf
from tests.reliability.apps import BODY, DEV, fake_app
from tests.support.gguf_factory import overwrite_bytes, set_tensor_offset, write_llama_gguf

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def clean_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "clean.gguf").read_bytes()


@pytest.fixture
def damaged(tmp_path: Path, clean_file: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(clean_file)
    return path


def _refused_fast(path: Path, *words: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ModelFileError) as caught:
        open_gguf(path)
    assert time.perf_counter() - started < 1.0
    for word in words:
        assert word in caught.value.message, caught.value.message


def _tensor_field(path: Path, name: str) -> tuple[gguf.GGUFReader, Any]:
    reader = gguf.GGUFReader(path, "r+")
    return reader, next(t for t in reader.tensors if t.name == name).field


@pytest.mark.parametrize(("offset", "what"), [(8, "tensors"), (16, "metadata entries")])
def test_absurd_counts_fail_fast(damaged: Path, offset: int, what: str) -> None:
    overwrite_bytes(damaged, offset, struct.pack("<Q", 1 << 60))
    _refused_fast(damaged, "more than fit", what)


def test_absurd_tensor_dimensions(damaged: Path) -> None:
    reader, field = _tensor_field(damaged, "blk.0.attn_q.weight")
    field.parts[3][:] = [1 << 40, 1 << 40]  # 2^80 elements: the byte count overflows 64 bits
    reader.data.flush()
    del reader
    _refused_fast(damaged, "blk.0.attn_q.weight", "more than the whole file")


def test_too_many_dimensions(damaged: Path) -> None:
    reader, field = _tensor_field(damaged, "blk.0.attn_q.weight")
    field.parts[2][0] = 9
    reader.data.flush()
    del reader
    _refused_fast(damaged, "blk.0.attn_q.weight", "9 dimensions")


def test_an_offset_that_wraps_around(damaged: Path) -> None:
    set_tensor_offset(damaged, "blk.0.attn_q.weight", (1 << 64) - 32)
    _refused_fast(damaged, "blk.0.attn_q.weight", "beyond the end of the file")


ESCAPES = [
    "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages[0].__class__.__init__.__globals__['sys'] }}",
    "{{ '{0.__class__.__mro__}'.format(messages) }}",
    "{{ '%s'.__mod__(messages.__class__) }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ raise_exception.__code__ }}",
    "{{ strftime_now.__globals__['datetime'] }}",
    "{% set x = messages.pop() %}{{ x }}",
    "{% set _ = messages[0].update({'role': 'system'}) %}{{ messages }}",
    "{{ messages|attr('__class__') }}",
    "{{ (messages|map(attribute='__class__')|first).__base__ }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_templates_in_the_file_cannot_reach_python_internals(tmp_path: Path, source: str) -> None:
    template = open_gguf(write_llama_gguf(tmp_path / "m.gguf", chat_template=source)).chat_template()
    try:
        rendered = template.render(QUESTION)
    except ModelFileError as exc:
        assert "unsafe" in exc.message
    else:  # the sandbox may also answer with nothing at all
        for leak in ("<class", "<function", "<module", "<built-in", "__", "environ", "uid="):
            assert leak not in rendered, rendered
    assert QUESTION == [{"role": "user", "content": "What is the capital of France?"}]  # inputs unchanged


@pytest.mark.parametrize(
    "source",
    [
        "{{ range(10**9)|length }}",
        "{% for i in range(10**7) %}{% endfor %}",
        "{{ 'x' * 10**10 }}",
        "{{ 10**10 * 'x' }}",
        "{{ [0] * 10**9 }}",
        "{{ 2 ** 100000000 }}",
    ],
)
def test_templates_cannot_exhaust_memory(tmp_path: Path, source: str) -> None:
    template = open_gguf(write_llama_gguf(tmp_path / "m.gguf", chat_template=source)).chat_template()
    started = time.perf_counter()
    with pytest.raises(ModelFileError, match="unsafe"):
        template.render(QUESTION)
    assert time.perf_counter() - started < 1.0


def test_a_server_with_a_hostile_template_answers_500_and_keeps_serving(tmp_path: Path) -> None:
    app, backend, _ = fake_app()
    path = write_llama_gguf(tmp_path / "m.gguf", chat_template=ESCAPES[0])
    backend.chat_template = open_gguf(path).chat_template()  # type: ignore[assignment]
    with TestClient(app) as client:
        for stream in (False, True):
            response = client.post("/v1/messages", json={**BODY, "stream": stream}, headers=DEV)
            assert response.status_code == 500
            assert response.json()["error"]["type"] == "api_error"
            assert "unsafe operation" in response.json()["error"]["message"]
        assert client.get("/health").status_code == 200
