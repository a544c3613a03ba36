"""admin.v1_upload: the file of a multipart/form-data body, whatever pieces it arrives in."""

from collections.abc import AsyncIterator

import pytest

from admin.v1_upload import uploaded_file
from nanoiot.errors import ValidationError

FILE_DATA = b"name,token\r\na,t1\r\n--not-the-boundary\r\n"
BODY = (
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="note"\r\n\r\n'
    b"a field before the file\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="file"; filename="devices.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\n" + FILE_DATA + b"\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="other"; filename="second.csv"\r\n\r\n'
    b"ignored\r\n"
    b"--XyZ--\r\n"
)


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_the_first_file_part_whatever_the_pieces() -> None:
    for size in range(1, len(BODY) + 1):
        upload = await uploaded_file(pieces(BODY, size), "XyZ")
        assert (upload.filename, upload.content_type) == ("devices.csv", "text/csv")
        assert b"".join([chunk async for chunk in upload.chunks]) == FILE_DATA, size


async def test_a_form_without_a_file() -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--XyZ--\r\n'
    with pytest.raises(ValidationError, match="the form has no file part"):
        await uploaded_file(pieces(body, 10), "XyZ")


async def test_an_upload_cut_off_inside_the_file() -> None:
    cut = BODY[: BODY.index(FILE_DATA) + 5]
    upload = await uploaded_file(pieces(cut, 8), "XyZ")
    with pytest.raises(ValidationError, match="the upload ended inside its file part"):
        _ = [chunk async for chunk in upload.chunks]


async def test_a_body_that_is_not_multipart() -> None:
    with pytest.raises(ValidationError, match="not well-formed multipart/form-data"):
        await uploaded_file(pieces(b"name,token\na,t\n", 4), "XyZ")
