"""``Range`` headers of any length on ``GET /file/:uuid``: never a 500.

Python's ``int()`` refuses strings of more than 4300 digits, so a position
must be bounded before it is converted.
"""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from accounts.models import User
from files.downloads import ByteRange, Unsatisfiable, byte_range
from files.models import File

SIZE = 1000
BODY = bytes(range(250)) * 4
THOUSANDS = "9" * 5000


@pytest.fixture
def stored(db: None) -> File:
    owner = User.objects.create(username="ranger", password="!")
    name = default_storage.save("media/ranger.mp3", ContentFile(BODY))
    return File.objects.create(
        owner=owner, filename="ranger.mp3", kind="audio", content_type="audio/mpeg", blake3="a" * 64,
        size_bytes=SIZE, state=File.State.READY, media_name=name,
    )  # fmt: skip


def get(file: File, header: str) -> object:
    return APIClient().get(f"/api/v1/file/{file.id.hex}", HTTP_RANGE=header)


def body_of(response: object) -> bytes:
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "header",
    [f"bytes={THOUSANDS}-", f"bytes={THOUSANDS}-{THOUSANDS}", f"bytes=1{'0' * 20}-"],
    ids=["open", "closed", "21-digits"],
)
def test_a_start_of_thousands_of_digits_is_416(stored: File, header: str) -> None:
    response = get(stored, header)
    assert response.status_code == 416  # type: ignore[attr-defined]
    assert response["Content-Range"] == f"bytes */{SIZE}"  # type: ignore[index]
    assert response.content.decode() == "Requested range not satisfiable"  # type: ignore[attr-defined]


@pytest.mark.parametrize("header", [f"bytes=990-{THOUSANDS}", f"bytes=-{THOUSANDS}"], ids=["end", "suffix"])
def test_an_end_or_suffix_of_thousands_of_digits_means_to_the_end(stored: File, header: str) -> None:
    response = get(stored, header)
    assert response.status_code == 206  # type: ignore[attr-defined]
    first = 990 if header.startswith("bytes=990") else 0
    assert response["Content-Range"] == f"bytes {first}-{SIZE - 1}/{SIZE}"  # type: ignore[index]
    assert body_of(response) == BODY[first:]


def test_leading_zeros_do_not_count_as_digits(stored: File) -> None:
    response = get(stored, f"bytes={'0' * 5000}5-{'0' * 5000}9")
    assert response.status_code == 206  # type: ignore[attr-defined]
    assert response["Content-Range"] == f"bytes 5-9/{SIZE}"  # type: ignore[index]
    assert body_of(response) == BODY[5:10]


def test_twenty_digits_are_compared_exactly() -> None:
    assert byte_range(f"bytes=0-{'9' * 20}", SIZE) == ByteRange(0, SIZE - 1)
    assert byte_range(f"bytes={'9' * 19}-{'9' * 20}", 10**20) == ByteRange(10**19 - 1, 10**20 - 1)
    with pytest.raises(Unsatisfiable):
        byte_range(f"bytes={'9' * 20}-", 10**20 - 1)


def test_only_ascii_digits_are_positions() -> None:
    # "\d" would also take other scripts' digits, which int() reads.
    assert byte_range("bytes=\u0661\u0662-", SIZE) is None
