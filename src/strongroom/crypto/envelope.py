"""AES-256-GCM envelope encryption: each secret gets a fresh data key, wrapped by the active master key.

Both layers bind the same associated data (the record's identity), so a ciphertext or a wrapped key
copied onto another record fails authentication instead of decrypting under the wrong owner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.crypto.keys import DecryptionError, KeyProvider

NONCE_BYTES = 12
DATA_KEY_BYTES = 32


@dataclass(frozen=True)
class Sealed:
    """What is stored: the master-key version, the wrapped data key, and nonce+ciphertext+tag."""

    key_version: int
    wrapped_key: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"Sealed(key_version={self.key_version}, ciphertext=<{len(self.ciphertext)} bytes>)"


class Envelope:
    """Seal and open byte strings under a key provider's master keys."""

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)
        version, wrapped = self.provider.wrap(data_key, aad)
        return Sealed(version, wrapped, ciphertext)

    def open(self, sealed: Sealed, aad: bytes) -> bytes:
        data_key = self.provider.unwrap(sealed.key_version, sealed.wrapped_key, aad)
        nonce, body = sealed.ciphertext[:NONCE_BYTES], sealed.ciphertext[NONCE_BYTES:]
        try:
            return AESGCM(data_key).decrypt(nonce, body, aad)
        except InvalidTag:
            raise DecryptionError("stored secret failed authentication") from None
