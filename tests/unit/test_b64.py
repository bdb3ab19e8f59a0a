"""The fast base64 path accepts exactly what CPython's strict decoder accepts, and decodes
it to the same bytes, whichever backend is installed."""

from __future__ import annotations

import base64
import binascii
import os
import random

import pytest

from yogapose import b64
from yogapose.errors import BadRequest, PayloadTooLarge

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
ODD = "=\n \t-_.é\x00"
EDGE_CASES = ["", "QQ==", "QQ", "QQ=", "Q", "QQ==QQ==", " QQ==", "QQ==\n", "QQ===", "QUI=", "QR==",
              "QUJD", "=", "====", "QU=I", "-_-_", "QQ==\x00", "é", "cdV7=", b"QUJD", b"\xff\xfe"]


def reference(text):
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def ours(text):
    try:
        return b64.decode_strict(text)
    except (binascii.Error, ValueError):
        return None


def corpus(n: int = 20000) -> list[str]:
    rng = random.Random(7)
    out = list(EDGE_CASES)
    for _ in range(n):
        chars = ALPHABET if rng.random() < 0.8 else ALPHABET + ODD
        out.append("".join(rng.choice(chars) for _ in range(rng.randint(0, 14))))
    # real payloads, canonical and damaged
    for size in (1, 2, 3, 100, 4097):
        enc = base64.b64encode(os.urandom(size)).decode()
        out += [enc, enc[:-1], enc + "=", enc.replace("+", "-"), enc[:10] + "\n" + enc[10:]]
    return out


def test_installed_backend_is_the_simd_one():
    # The Pipfile installs pybase64 for the runtime; without it requests still work, slower.
    pytest.importorskip("pybase64")
    assert b64.BACKEND == "pybase64"


@pytest.mark.parametrize("backend", ["installed", "binascii only"])
def test_same_acceptance_and_bytes_as_cpython_strict(backend, monkeypatch):
    if backend == "binascii only":
        monkeypatch.setattr(b64, "_simd_b64decode", None)
    mismatches = [t for t in corpus() if ours(t) != reference(t)]
    assert mismatches == []


def test_large_payload_round_trips():
    data = os.urandom(3 * 1024 * 1024 + 1)
    assert b64.decode_strict(base64.b64encode(data).decode()) == data


# ------------------------------------------------------------------ the two sets of rules

PAYLOAD = bytes(range(256)) * 3


def test_payload_rules_tolerate_what_clients_write() -> None:
    std = base64.b64encode(PAYLOAD).decode()
    spellings = [std, "data:image/jpeg;base64," + std, base64.urlsafe_b64encode(PAYLOAD).decode(),
                 std.rstrip("="), "\n".join(std[i:i + 76] for i in range(0, len(std), 76))]
    for text in spellings:
        assert b64.decode_payload(text, "image", 10_000) == PAYLOAD


def test_line_breaks_do_not_count_against_the_size_limit() -> None:
    """MIME-wrapped base64 (76 characters and CRLF) of an image just under the limit passes;
    the breaks carry no data (found in review: 99,000 bytes were refused at a 100,000 limit)."""
    data = os.urandom(99_000)
    std = base64.b64encode(data).decode()
    wrapped = "\r\n".join(std[i:i + 76] for i in range(0, len(std), 76))
    assert b64.decode_payload(wrapped, "image", 100_000) == data
    with pytest.raises(PayloadTooLarge):
        b64.decode_payload(wrapped, "image", 98_999)


@pytest.mark.parametrize("text", ["", "Q", "not base64!", "data:image/png;base64,", "===="])
def test_payload_rules_refuse_the_rest(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        b64.decode_payload(text, "images[2]", 10_000)
    assert "images[2]" in str(info.value)


def test_transport_rules_take_only_the_standard_alphabet() -> None:
    assert b64.decode_transport(base64.b64encode(PAYLOAD).decode(), 10_000, "body") == PAYLOAD
    with pytest.raises(BadRequest, match="isBase64Encoded"):
        b64.decode_transport(base64.urlsafe_b64encode(b"\xfb\xff" * 10).decode(), 10_000, "body")


@pytest.mark.parametrize("decode", [lambda t, n: b64.decode_payload(t, "image", n),
                                    lambda t, n: b64.decode_transport(t, n, "body")])
def test_size_is_checked_before_decoding(decode, monkeypatch) -> None:
    text = base64.b64encode(bytes(3000)).decode()
    assert decode(text, 3000) == bytes(3000)  # exactly the limit passes

    def never(_text):
        raise AssertionError("decoded a string that is already too long")

    monkeypatch.setattr(b64, "decode_strict", never)
    with pytest.raises(PayloadTooLarge):
        decode(text + "AAAAAAAA", 3000)  # 3006 bytes: refused from the length alone
