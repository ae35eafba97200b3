"""files.multipart: the streaming multipart reader, byte-exact on awkward input."""

from __future__ import annotations

import io
import random

import pytest
from blake3 import blake3
from django.http.multipartparser import MultiPartParserError

from files.multipart import MultipartReader, StreamSource

BOUNDARY = b"----b0undary"


class Trickle:
    """A stream that hands out at most ``step`` bytes per read (random steps when ``step`` is 0)."""

    def __init__(self, data: bytes, step: int, seed: int = 0) -> None:
        self._data = io.BytesIO(data)
        self._step = step
        self._random = random.Random(seed)

    def read(self, size: int) -> bytes:
        step = self._step or self._random.randint(1, 70_000)
        return self._data.read(min(size, step))


def parse(body: bytes, step: int = 0, seed: int = 0) -> list[tuple[dict[str, str | None], bytes]]:
    reader = MultipartReader(StreamSource(Trickle(body, step, seed), len(body)), BOUNDARY, 0)
    parts: list[tuple[dict[str, str | None], bytes]] = []
    more = reader.skip_preamble()
    while more:
        headers = reader.read_headers()
        chunks: list[bytes] = []
        reader.stream_body(lambda view, chunks=chunks: chunks.append(bytes(view)))
        if headers is not None:
            parts.append(
                ({"name": headers.name, "filename": headers.filename, "type": headers.content_type}, b"".join(chunks))
            )
        more = reader.next_part()
    reader.finish()
    return parts


def part(name: str, content: bytes, filename: str | None = None, extra: bytes = b"") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return b"--" + BOUNDARY + b"\r\n" + disposition.encode() + extra + b"\r\n\r\n" + content + b"\r\n"


END = b"--" + BOUNDARY + b"--\r\n"


@pytest.mark.parametrize("step", [1, 7, 0])
def test_payloads_that_look_like_delimiters_come_through_intact(step: int) -> None:
    rng = random.Random(step)
    # Everything short of a whole delimiter (which RFC 2046 forbids in content).
    tricky = b"\r\n--" + BOUNDARY[:-1] + b"\r\n-" + b"\n--" + BOUNDARY + b"\r--" + BOUNDARY + b"\r\r\n\n--"
    payloads = [rng.randbytes(rng.randint(0, 5000)) + tricky + rng.randbytes(300) for _ in range(3)] + [b"", tricky]
    body = b"".join(part("file", data, f"f{index}.bin") for index, data in enumerate(payloads)) + END
    parts = parse(body, step)
    assert [content for _, content in parts] == payloads
    assert [headers["filename"] for headers, _ in parts] == [f"f{index}.bin" for index in range(5)]


def test_a_large_random_part_is_byte_exact_under_random_reads() -> None:
    data = random.Random(3).randbytes(3 * 1024 * 1024 + 17)
    body = part("a", b"field") + part("file", data, "big.bin", b"\r\nContent-Type: audio/wav") + END
    for seed in range(3):
        parts = parse(body, 0, seed)
        assert parts[0] == ({"name": "a", "filename": None, "type": ""}, b"field")
        assert parts[1][0]["type"] == "audio/wav"
        assert blake3(parts[1][1]).digest() == blake3(data).digest()


def test_preamble_epilogue_and_transport_padding() -> None:
    body = (
        b"This is a preamble\r\n"
        + b"--" + BOUNDARY + b"  \t\r\n"
        + b'Content-Disposition: form-data; name="x"\r\n\r\none\r\n'
        + END
        + b"epilogue that is ignored"
    )  # fmt: skip
    assert parse(body, 3) == [({"name": "x", "filename": None, "type": ""}, b"one")]


def test_parts_without_form_data_headers_are_skipped() -> None:
    body = (
        b"--" + BOUNDARY + b"\r\n\r\nno headers\r\n"
        + b"--" + BOUNDARY + b"\r\nContent-Disposition: attachment\r\n\r\nnot form-data\r\n"
        + part("kept", b"yes") + END
    )  # fmt: skip
    assert parse(body) == [({"name": "kept", "filename": None, "type": ""}, b"yes")]


def test_rfc_5987_filenames_are_decoded() -> None:
    body = (
        b"--" + BOUNDARY + b"\r\n"
        + b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC%20rates.mp3\r\n\r\nx\r\n" + END
    )  # fmt: skip
    assert parse(body)[0][0]["filename"] == "€ rates.mp3"


def test_an_empty_body_has_no_parts() -> None:
    assert parse(END) == []


@pytest.mark.parametrize(
    "body",
    [
        part("file", b"data", "a.mp3")[:-10],  # cut inside the part
        part("file", b"data", "a.mp3"),  # no closing delimiter
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="a"',  # cut inside the headers
        b"--" + BOUNDARY + b"\r\n" + b"X-Long: " + b"a" * 20_000 + b"\r\n\r\nx\r\n" + END,  # endless headers
        b"--" + BOUNDARY + b"garbage\r\n" + END,  # not a delimiter line
        b"no delimiter at all",
    ],
    ids=[
        "cut-in-part",
        "no-closing-delimiter",
        "cut-in-headers",
        "endless-headers",
        "bad-delimiter-line",
        "no-delimiter",
    ],
)
def test_malformed_bodies_raise(body: bytes) -> None:
    with pytest.raises(MultiPartParserError):
        parse(body, 5)
