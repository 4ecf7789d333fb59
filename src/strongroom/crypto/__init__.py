"""Envelope encryption: per-secret data keys under versioned master keys from a pluggable provider."""

from strongroom.crypto.envelope import Envelope, Sealed
from strongroom.crypto.keys import DecryptionError, FileKeyring, KeyProvider, Keyring, load_keyring

__all__ = ["DecryptionError", "Envelope", "FileKeyring", "KeyProvider", "Keyring", "Sealed", "load_keyring"]
