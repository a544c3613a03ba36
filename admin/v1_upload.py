"""The file of a ``multipart/form-data`` upload (RFC 7578), read as its bytes arrive.

Starlette's ``request.form()`` spools a whole upload before the route sees it; an import must
start on the first rows while the rest is still on the wire, so the body goes through
python-multipart's push parser here instead, and the first part that carries a filename is
handed on chunk by chunk. Other form fields are ignored.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from nanoiot.errors import ValidationError


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_name: bytes = b""
    header_value: bytes = b""


@dataclass
class UploadedFile:
    """The file part's name and type, and its data as it arrives (``chunks``)."""

    filename: str
    content_type: str
    chunks: AsyncIterator[bytes]


async def uploaded_file(body: AsyncIterator[bytes], boundary: str) -> UploadedFile:
    """Read ``body`` up to the start of its first file part; raises ValidationError when the
    form has none or is not well-formed multipart."""
    reader = _FileReader(body, boundary)
    await reader.read_until_file()
    assert reader.file_headers is not None
    disposition = parse_options_header(reader.file_headers.get(b"content-disposition"))[1]
    content_type = parse_options_header(reader.file_headers.get(b"content-type"))[0]
    return UploadedFile(
        filename=disposition.get(b"filename", b"").decode("utf-8", "replace"),
        content_type=content_type.decode("latin-1").lower(),
        chunks=reader.file_data(),
    )


class _FileReader:
    """Feeds the push parser and keeps what its callbacks say about the first file part."""

    def __init__(self, body: AsyncIterator[bytes], boundary: str) -> None:
        self._body = body
        self._part = _Part()
        self._in_file = False
        self._file_ended = False
        self._data: list[bytes] = []
        self.file_headers: dict[bytes, bytes] | None = None
        try:
            self._parser = MultipartParser(
                boundary.encode("latin-1"),
                {
                    "on_part_begin": self._begin,
                    "on_header_field": self._header_name,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_done,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                },
            )
        except (FormParserError, ValueError, UnicodeEncodeError) as exc:
            raise ValidationError(f"bad multipart boundary: {exc}") from None

    async def read_until_file(self) -> None:
        while self.file_headers is None:
            if not await self._feed():
                raise ValidationError("the form has no file part (a field with a filename)")

    async def file_data(self) -> AsyncIterator[bytes]:
        while True:
            data, self._data = self._data, []
            for chunk in data:
                yield chunk
            if self._file_ended:
                return
            if not await self._feed():
                raise ValidationError("the upload ended inside its file part")

    async def _feed(self) -> bool:
        """Parse the next chunk of the body; False when the body has ended."""
        chunk = await anext(self._body, None)
        if chunk is None:
            return False
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise ValidationError(f"not well-formed multipart/form-data: {exc}") from None
        return True

    # --- parser callbacks (synchronous, called from write) --------------------------------

    def _begin(self) -> None:
        self._part = _Part()

    def _header_name(self, data: bytes, start: int, end: int) -> None:
        self._part.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]

    def _header_end(self) -> None:
        part = self._part
        part.headers[part.header_name.strip().lower()] = part.header_value.strip()
        part.header_name = part.header_value = b""

    def _headers_done(self) -> None:
        disposition = parse_options_header(self._part.headers.get(b"content-disposition"))[1]
        if self.file_headers is None and b"filename" in disposition:
            self.file_headers = self._part.headers
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._data.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_ended = True
