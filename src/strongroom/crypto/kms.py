"""AWS KMS as the master-key source: data keys are wrapped by KMS Encrypt and unwrapped by KMS Decrypt.

Each master-key version is one KMS key id (recorded as `key_versions.key_ref`), so the key material never
leaves KMS. The record's associated data is sent as the EncryptionContext: a wrapped key copied onto another
record fails to decrypt, as with the local keyring. Any KMS-compatible endpoint works (STRONGROOM_KMS_ENDPOINT_URL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from strongroom.crypto.keys import DecryptionError
from strongroom.errors import MasterKeyError, ServiceUnavailable

SOURCE = "AWS KMS"
_CONTEXT_KEY = "strongroom"
# Errors meaning "this key can no longer be used", as opposed to "KMS is briefly unreachable or throttling".
_KEY_UNUSABLE = frozenset(
    {"NotFoundException", "DisabledException", "KMSInvalidStateException", "AccessDeniedException", "InvalidKeyUsage"}
)
_NOT_AUTHENTIC = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


def kms_client(*, endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 KMS client with short timeouts: an unreachable KMS is a quick 503, not a hung request."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MasterKeyError("AWS KMS needs boto3: pip install 'strongroom[kms]'") from None
    config = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("kms", endpoint_url=endpoint_url, region_name=region, config=config)


class KmsKeyProvider:
    """Master-key versions mapped to KMS key ids; the mapping lives in the database, read by `load_refs`."""

    source = SOURCE
    remote = True

    def __init__(self, client: Any, load_refs: Callable[[], dict[int, str]], first_key_id: str | None) -> None:
        self._client = client
        self._load_refs = load_refs
        self._first_key_id = first_key_id
        self._lock = threading.Lock()
        self._state: tuple[dict[int, str], int] = ({}, 0)
        self.refresh()

    def __repr__(self) -> str:
        refs, active = self._state
        return f"KmsKeyProvider(versions={sorted(refs)}, active={active})"

    def refresh(self) -> None:
        refs = self._load_refs()
        if not refs:  # a new store: version 1 is the configured key
            if not self._first_key_id:
                raise MasterKeyError("AWS KMS: set STRONGROOM_KMS_KEY_ID to the KMS key that protects a new store")
            refs = {1: self._first_key_id}
        with self._lock:
            self._state = (refs, max(refs))

    def active_version(self) -> int:
        return self._state[1]

    def versions(self) -> frozenset[int]:
        return frozenset(self._state[0])

    def key_ref(self, version: int) -> str | None:
        return self._state[0].get(version)

    def add_version(self, version: int, key_ref: str | None) -> str | None:
        """Activate `version` under `key_ref` (default: the active key again, which KMS may rotate itself)."""
        with self._lock:
            refs, active = self._state
            ref = key_ref or refs[active]
            self._call("DescribeKey", version, ref, KeyId=ref)  # a typo in the key id fails here, not mid-rotation
            self._state = ({**refs, version: ref}, version)
        return ref

    def remove_version(self, version: int) -> None:
        with self._lock:
            refs, active = self._state
            self._state = ({v: r for v, r in refs.items() if v != version}, active)

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]:
        refs, active = self._state
        reply = self._call("Encrypt", active, refs[active], KeyId=refs[active], Plaintext=data_key, **_context(aad))
        return active, bytes(reply["CiphertextBlob"])

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        ref = self._state[0].get(version)
        if ref is None:
            raise MasterKeyError(f"master key version {version} is missing from {SOURCE} (no KMS key recorded for it)")
        reply = self._call("Decrypt", version, ref, KeyId=ref, CiphertextBlob=wrapped, **_context(aad))
        return bytes(reply["Plaintext"])

    def _call(self, operation: str, version: int, ref: str, **kwargs: Any) -> dict[str, Any]:
        """One KMS call, its failures sorted into not-authentic, key-unusable and try-again-later."""
        from botocore.exceptions import BotoCoreError, ClientError

        method = {"Encrypt": "encrypt", "Decrypt": "decrypt", "DescribeKey": "describe_key"}[operation]
        try:
            reply: dict[str, Any] = getattr(self._client, method)(**kwargs)
            return reply
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _NOT_AUTHENTIC:
                raise DecryptionError("data key failed authentication") from None
            if code in _KEY_UNUSABLE:
                raise MasterKeyError(
                    f"master key version {version} (KMS key {ref}) cannot be used from {SOURCE}: {code}"
                ) from None
            raise ServiceUnavailable(f"{SOURCE} refused {operation} ({code or 'error'}); retry shortly") from None
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"{SOURCE} is unreachable ({type(exc).__name__}); retry shortly") from None


def _context(aad: bytes) -> dict[str, Any]:
    """The associated data as KMS EncryptionContext (ids and type only: it appears in KMS audit logs)."""
    return {"EncryptionContext": {_CONTEXT_KEY: aad.decode("ascii")}}
