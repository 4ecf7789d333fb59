"""Settings are printed and logged: their repr never shows a database password or the master key."""

from __future__ import annotations

import pytest

from strongroom.config import Settings, mask_password


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://strongroom:hunter2-S3cret@db.example:5432/strongroom",
        "postgresql+psycopg://strongroom@db.example/strongroom?password=hunter2-S3cret&sslmode=require",
        "postgresql+psycopg://strongroom@db.example/strongroom?sslmode=require&sslpassword=hunter2-S3cret",
        "postgresql+psycopg://strongroom@db.example/strongroom?PassWord=hunter2-S3cret",
    ],
)
def test_repr_masks_the_database_password(url: str) -> None:
    settings = Settings(database_url=url, master_key="bWFzdGVyLWtleS1tYXRlcmlhbA==")
    for text in (repr(settings), str(settings)):
        assert "hunter2-S3cret" not in text and "bWFzdGVyLWtleS1tYXRlcmlhbA" not in text
        assert "db.example" in text and "***" in text
    assert settings.resolved_database_url == url  # only the display is masked
    banner = mask_password(url)  # what `strongroom serve` prints
    assert "hunter2-S3cret" not in banner and banner.startswith("postgresql+psycopg://strongroom") and "***" in banner


def test_an_unparsable_url_is_refused_without_quoting_it() -> None:
    with pytest.raises(ValueError, match="STRONGROOM_DATABASE_URL must be") as refused:
        Settings(database_url="not a url x:y@")
    assert "x:y@" not in str(refused.value)
