"""Envelope encryption: per-secret data keys under versioned master keys from a pluggable provider."""

from strongroom.crypto.envelope import Envelope, Sealed
from strongroom.crypto.keys import DecryptionError, KeyProvider, Keyring, load_key_provider

__all__ = ["DecryptionError", "Envelope", "KeyProvider", "Keyring", "Sealed", "load_key_provider"]
