"""Composition: settings -> database -> key provider -> barrier -> repositories -> services."""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.config import Settings
from strongroom.crypto.barrier import Barrier
from strongroom.crypto.keys import KeyProvider
from strongroom.crypto.providers import key_provider
from strongroom.services.accounts import AccountService
from strongroom.services.audit import AuditService
from strongroom.services.connections import Connector
from strongroom.services.credentials import CredentialService
from strongroom.services.datastores import DataStoreService
from strongroom.services.jobs import JobService
from strongroom.services.keys import KeyService
from strongroom.services.oauth import OAuthService
from strongroom.services.sharing import SharingService
from strongroom.store.db import Database
from strongroom.store.repositories import AccountRepository, CredentialRepository, KeyRepository
from strongroom.store.repositories.audit import AuditRepository
from strongroom.store.repositories.datastores import DataStoreRepository
from strongroom.store.repositories.jobs import JobRepository
from strongroom.store.repositories.oauth import OAuthRepository
from strongroom.store.repositories.sharing import SharingRepository


@dataclass
class Services:
    """One per process, shared by every request and command."""

    db: Database
    barrier: Barrier
    accounts: AccountService
    credentials: CredentialService
    keys: KeyService
    audit: AuditService
    sharing: SharingService
    datastores: DataStoreService
    oauth: OAuthService
    jobs: JobService

    @classmethod
    def build(cls, db: Database, provider: KeyProvider, settings: Settings | None = None) -> Services:
        """Wire the services over an open, migrated database and a key provider (no checks made); `settings`
        bound outbound connections (default: the environment's)."""
        barrier = Barrier(provider)
        credential_repo = CredentialRepository(db)
        accounts = AccountService(AccountRepository(db))
        audit_repo = AuditRepository(db)
        credentials = CredentialService(credential_repo, barrier, accounts, audit_repo)
        settings = settings or Settings()
        connector = Connector(settings)
        datastores = DataStoreService(DataStoreRepository(db), SharingRepository(db), credentials, connector)
        oauth_repo = OAuthRepository(db)
        return cls(
            db=db,
            barrier=barrier,
            accounts=accounts,
            credentials=credentials,
            keys=KeyService(KeyRepository(db), credential_repo, barrier, oauth_repo),
            audit=AuditService(audit_repo),
            sharing=SharingService(SharingRepository(db), credentials),
            oauth=OAuthService(oauth_repo, credentials, barrier, settings, connector),
            datastores=datastores,
            jobs=JobService(JobRepository(db), datastores, connector, settings),
        )

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Connect, migrate, load the master key and verify it against the database; fail fast if wrong."""
        db = Database.from_settings(settings)
        try:
            db.migrate()
            versions = KeyRepository(db)
            stored = [(kv.version, kv.key_ref, kv.retired_at) for kv in versions.all().values()]
            provider = key_provider(settings, stored, versions.used_versions(), versions.kms_refs)
            services = cls.build(db, provider, settings)
            services.keys.verify()
            services.credentials.upgrade_legacy_seals()
        except BaseException:
            db.dispose()
            raise
        return services

    def close(self) -> None:
        self.jobs.stop_runner()
        self.db.dispose()
