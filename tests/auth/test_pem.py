import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auth.pem import PemBlock, split_pem
from nanoiot.errors import PemError, PrivateKeyPastedError
from tests.certgen import issue

CERT = issue("device-1")


def test_canonical_pem_round_trips() -> None:
    [block] = split_pem(CERT.cert_pem)
    assert block == PemBlock("CERTIFICATE", CERT.cert_der)
    assert block.to_pem() == CERT.cert_pem


def test_crlf_indentation_and_missing_newline_are_tolerated() -> None:
    messy = "  " + CERT.cert_pem.strip().replace("\n", "\r\n    ")
    assert split_pem(messy) == [PemBlock("CERTIFICATE", CERT.cert_der)]


def test_text_around_the_block_is_ignored() -> None:
    pasted = f"Subject: CN=device-1\nHere you go:\n{CERT.cert_pem}\nThanks!\n"
    assert split_pem(pasted)[0].der == CERT.cert_der


def test_every_private_key_label_is_refused_without_echoing_the_key() -> None:
    for label in ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        pem = CERT.key_pem.replace("PRIVATE KEY", label)
        with pytest.raises(PrivateKeyPastedError) as caught:
            split_pem(CERT.cert_pem + pem)
        body_line = CERT.key_pem.splitlines()[1]
        assert body_line not in str(caught.value)
        assert label in str(caught.value)


def test_no_pem_at_all() -> None:
    with pytest.raises(PemError, match="no '-----BEGIN"):
        split_pem("hello world")


def test_truncated_block_is_named() -> None:
    cut = CERT.cert_pem.split("-----END")[0]
    with pytest.raises(PemError, match="'CERTIFICATE' has no matching END line"):
        split_pem(cut)


def test_bad_base64_is_reported() -> None:
    with pytest.raises(PemError, match="not valid base64"):
        split_pem("-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n")


def test_empty_block_is_reported() -> None:
    with pytest.raises(PemError, match="is empty"):
        split_pem("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")


@st.composite
def mangled(draw: st.DrawFn) -> tuple[bytes, str]:
    """DER bytes and a PEM rendering of them mangled the way pasting mangles text."""
    der = draw(st.binary(min_size=1, max_size=300))
    body = base64.b64encode(der).decode()
    width = draw(st.integers(min_value=4, max_value=120))
    lines = [body[i : i + width] for i in range(0, len(body), width)]
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    indent = draw(st.sampled_from(["", " ", "\t", "    "]))
    text = newline.join(
        [
            "-----BEGIN CERTIFICATE-----",
            *(indent + line + " " * (i % 2) for i, line in enumerate(lines)),
            "-----END CERTIFICATE-----",
        ]
    )
    prefix = draw(st.text(alphabet=st.characters(blacklist_characters="-"), max_size=40))
    suffix = draw(st.text(alphabet=st.characters(blacklist_characters="-"), max_size=40))
    final_newline = draw(st.booleans())
    return der, prefix + "\n" + text + ("\n" if final_newline else "") + suffix


@given(mangled())
def test_normalisation_recovers_the_exact_bytes(case: tuple[bytes, str]) -> None:
    der, text = case
    [block] = split_pem(text)
    assert block.der == der
    # Normal form is a fixed point: normalising it again changes nothing.
    assert split_pem(block.to_pem()) == [block]
    assert all(len(line) <= 64 for line in block.to_pem().splitlines())
