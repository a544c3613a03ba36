"""Reading PEM text the way operators paste it.

Pasted certificates arrive with CRLF line ends, indentation, missing final newlines, text
around the block (``openssl x509 -text`` output, e-mail quoting) and sometimes a whole chain.
``split_pem`` finds every block, decodes its base64 body strictly and reports what it found.
It refuses private keys outright: the error names the label, never the content (RFC 7468 §2
defines the labels; anything labelled ``... PRIVATE KEY`` is secret).
"""

import base64
import binascii
import re
from dataclasses import dataclass

from nanoiot.errors import PemError, PrivateKeyPastedError

# RFC 7468 §3: labels are printable ASCII without '-'; we also accept the lowercase forms
# some tools write. The body is matched lazily up to the END line with the *same* label.
_BLOCK = re.compile(
    r"-----BEGIN (?P<label>[A-Za-z0-9 ]+)-----(?P<body>.*?)-----END (?P=label)-----",
    re.DOTALL,
)
_BEGIN = re.compile(r"-----BEGIN (?P<label>[A-Za-z0-9 ]+)-----")
_HEADER_LINE = re.compile(r"^[A-Za-z-]+:.*$", re.MULTILINE)  # RFC 1421 headers (Proc-Type: ...)


@dataclass(frozen=True)
class PemBlock:
    """One decoded PEM block: its label (upper case) and DER bytes."""

    label: str
    der: bytes

    def to_pem(self) -> str:
        """Canonical PEM: 64-character lines, LF line ends, final newline (RFC 7468 §2)."""
        body = base64.b64encode(self.der).decode("ascii")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return (
            "\n".join([f"-----BEGIN {self.label}-----", *lines, f"-----END {self.label}-----"])
            + "\n"
        )


def looks_like_pem(data: str | bytes) -> bool:
    """True if the input contains at least a PEM BEGIN line."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    return "-----BEGIN " in text


def split_pem(data: str | bytes) -> list[PemBlock]:
    """Every PEM block in ``data``, in order.

    Raises ``PrivateKeyPastedError`` if any block is a private key (even beside a certificate,
    as in a ``.nopass.pem`` file), and ``PemError`` for text with no block, a block without its
    END line, or a body that is not base64.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    _refuse_private_keys(text)
    blocks = [_decode_block(m.group("label"), m.group("body")) for m in _BLOCK.finditer(text)]
    begun = _BEGIN.findall(text)
    if len(begun) > len(blocks):
        missing = begun[len(blocks)] if not blocks else _first_unclosed(text)
        raise PemError(
            f"PEM block '{missing.upper()}' has no matching END line (was it cut short?)"
        )
    if not blocks:
        raise PemError("not PEM: no '-----BEGIN ...-----' line found")
    return blocks


def _refuse_private_keys(text: str) -> None:
    for label in _BEGIN.findall(text):
        if "PRIVATE KEY" in label.upper():
            raise PrivateKeyPastedError(
                f"this is a private key ({label.upper()}), not a certificate or public key: "
                "never share it; provide the certificate (for example the .pub.pem file) instead"
            )


def _first_unclosed(text: str) -> str:
    closed = {m.start() for m in _BLOCK.finditer(text)}
    for m in _BEGIN.finditer(text):
        if m.start() not in closed:
            return m.group("label")
    return "?"  # unreachable: callers only ask when some BEGIN is unclosed


def _decode_block(label: str, body: str) -> PemBlock:
    body = _HEADER_LINE.sub("", body)
    compact = "".join(body.split())
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PemError(f"PEM block '{label.upper()}' is not valid base64: {exc}") from None
    if not der:
        raise PemError(f"PEM block '{label.upper()}' is empty")
    return PemBlock(label=label.upper(), der=der)
