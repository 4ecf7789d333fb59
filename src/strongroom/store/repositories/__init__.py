"""Repositories: all SQL lives here, one module per resource; use cases never see a statement."""

from strongroom.store.repositories.accounts import AccountRepository, UsernameTaken
from strongroom.store.repositories.credentials import CredentialRepository, NameTaken, Page, TokenRow
from strongroom.store.repositories.keys import KeyRepository

__all__ = [
    "AccountRepository",
    "CredentialRepository",
    "KeyRepository",
    "NameTaken",
    "Page",
    "TokenRow",
    "UsernameTaken",
]
