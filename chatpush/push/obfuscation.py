"""The obfuscated ``message.secureKey`` of notifications: opaque to receivers, reversible by us.

A REST client must ignore it (it uses ``userData.secure-key``); chatpush's CometD side reads it
back. Format: base64url(nonce[12] || plaintext XOR keystream || tag[16]) where the keystream is
HMAC-SHA256(secret, nonce || counter) blocks and the tag is HMAC-SHA256(secret, "tag" || nonce ||
ciphertext). The plaintext is the client channel, a newline, then the secure key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

NONCE_BYTES = 12
TAG_BYTES = 16


@dataclass(frozen=True, slots=True)
class RevealedKey:
    secure_key: str
    client_channel: str | None


def _keystream(secret: bytes, nonce: bytes, length: int) -> bytes:
    blocks = []
    for counter in range((length + 31) // 32):
        blocks.append(hmac.digest(secret, nonce + counter.to_bytes(4, "big"), hashlib.sha256))
    return b"".join(blocks)[:length]


def obfuscate(secret: bytes, secure_key: str, client_channel: str | None) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    plain = f"{client_channel or ''}\n{secure_key}".encode()
    cipher = bytes(a ^ b for a, b in zip(plain, _keystream(secret, nonce, len(plain)), strict=True))
    tag = hmac.digest(secret, b"tag" + nonce + cipher, hashlib.sha256)[:TAG_BYTES]
    return base64.urlsafe_b64encode(nonce + cipher + tag).decode()


def reveal(secret: bytes, token: str) -> RevealedKey | None:
    """The key and channel inside ``token``; None when it was not made with this secret."""
    try:
        raw = base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError):
        return None
    if len(raw) < NONCE_BYTES + TAG_BYTES + 1:
        return None
    nonce, cipher, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
    expected = hmac.digest(secret, b"tag" + nonce + cipher, hashlib.sha256)[:TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        return None
    plain = bytes(
        a ^ b for a, b in zip(cipher, _keystream(secret, nonce, len(cipher)), strict=True)
    )
    channel, _, key = plain.decode().partition("\n")
    return RevealedKey(secure_key=key, client_channel=channel or None)
