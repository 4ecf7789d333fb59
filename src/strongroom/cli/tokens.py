"""`strongroom tokens …`: API tokens; a token's value is shown once, at creation.

Remote (an endpoint and a token given, see cli/remote.py): the caller's own tokens. Local: any user's.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strongroom.cli.output import err, fail, out, plain, print_rows
from strongroom.cli.remote import EndpointOpt, TokenOpt, either, remember, target

if TYPE_CHECKING:
    from strongroom.bootstrap import Services

app = typer.Typer(
    help="Manage API tokens: your own on a server when an endpoint and a token are given (--endpoint/--token or "
    "STRONGROOM_ENDPOINT/STRONGROOM_API_TOKEN), else any user's in the local store.",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
SCOPE_NAMES = ("read", "write", "use", "admin")  # strongroom.services.accounts.SCOPES, without importing the store
_DURATION = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(value: str, now: datetime) -> datetime:
    """`30d`, `12h`, `90m`, `2w` from `now`, or an ISO date/time (a date alone means its midnight UTC)."""
    text = value.strip()
    if match := _DURATION.fullmatch(text):
        amount = int(match.group(1))
        if amount == 0:
            fail(f"--expires {value!r}: the duration must be positive")
        return now + timedelta(**{_UNITS[match.group(2)]: amount})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--expires {value!r}: expected a duration such as 30d, 12h, 90m, 2w, or an ISO date such as 2027-01-31")
    from strongroom.representation import in_utc

    moment = in_utc(moment)
    if moment <= now:
        fail(f"--expires {value!r} is in the past")
    return moment


UserArg = Annotated[
    str | None, typer.Argument(help="Whose tokens (local store only; remotely they are always your own).")
]


@app.callback()
def connection(ctx: typer.Context, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Remember the connection options for the subcommand (which may also take them)."""
    remember(ctx, endpoint, token)


def _where(ctx: typer.Context, username: str | None, endpoint: str | None, token: str | None) -> tuple[str, str] | None:
    """The server to talk to, or None for the local store (which needs USERNAME; a server refuses one)."""
    remote = target(ctx, endpoint, token)
    if remote is not None and username is not None:
        fail(
            "remotely, token commands manage the caller's own tokens: drop USERNAME "
            "(or unset STRONGROOM_ENDPOINT / STRONGROOM_API_TOKEN to administer USERNAME's tokens locally)"
        )
    if remote is None and username is None:
        ctx.fail(
            "Missing argument 'USERNAME' (the local store's tokens are a user's; give an endpoint and a token to "
            "manage your own on a server)"
        )
    return remote


def _local(t: Any) -> dict[str, Any]:
    from strongroom.representation import iso

    return {
        "id": t.id,
        "name": t.name,
        "prefix": t.prefix,
        "scopes": t.scopes.split(),
        "createdAt": iso(t.created_at),
        "expiresAt": iso(t.expires_at) if t.expires_at else None,
        "lastUsedAt": iso(t.last_used_at) if t.last_used_at else None,
        "revoked": t.revoked_at is not None,
    }


@app.command("create")
def tokens_create(
    ctx: typer.Context,
    username: UserArg = None,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "default",
    scope: Annotated[
        list[str] | None,
        typer.Option(help=f"Scopes (repeat): {', '.join(SCOPE_NAMES)}. Default: all (remotely: your token's)."),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Expiry: a duration (30d, 12h, 90m, 2w) or an ISO date/time (default UTC)."),
    ] = None,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create an API token. The token is shown once and stored only as a hash."""
    expires_at = parse_expiry(expires, datetime.now(UTC)) if expires is not None else None

    def remote(sdk: ModuleType) -> tuple[dict[str, Any], str, str | None]:
        key = sdk.ApiKey.create(name, scope or None, expires_at)
        return key.as_dict(), key.token or "", "you"

    def local(services: Services) -> tuple[dict[str, Any], str, str | None]:
        made, raw = services.accounts.create_token(username, name, tuple(scope or SCOPE_NAMES), expires_at)  # type: ignore[arg-type]
        return _local(made), raw, username

    shown, raw, owner = either(_where(ctx, username, endpoint, token), remote=remote, local=local)
    if as_json:
        print(json.dumps({k: shown[k] for k in ("id", "name", "scopes", "expiresAt")} | {"token": raw}))
        return
    until = f", expires {shown['expiresAt']}" if shown["expiresAt"] else ""
    err.print(f"Token {shown['id']} for {owner} (scopes: {' '.join(shown['scopes'])}{until}). It is shown only now:")
    plain(raw)


@app.command("list")
def tokens_list(
    ctx: typer.Context,
    username: UserArg = None,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """List tokens (never their values), with their last use; ids are printed in full at any terminal width."""
    rows = either(
        _where(ctx, username, endpoint, token),
        remote=lambda sdk: [k.as_dict() for k in sdk.ApiKey.list()],
        local=lambda services: [_local(t) for t in services.accounts.list_tokens(username)],  # type: ignore[arg-type]
    )
    print_rows(
        rows,
        as_json,
        ("id", "name", "prefix", "scopes", "created", "expires", "last used", "revoked"),
        lambda r: (
            r["id"],
            r["name"],
            r["prefix"] + "…",
            " ".join(r["scopes"]),
            r["createdAt"],
            r["expiresAt"] or "",
            r["lastUsedAt"] or "",
            "yes" if r["revoked"] else "",
        ),
    )


@app.command("revoke")
def tokens_revoke(ctx: typer.Context, token_id: str, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Revoke a token (remotely: one of your own); it stops working at once."""
    either(
        target(ctx, endpoint, token),
        remote=lambda sdk: sdk.ApiKey.revoke(token_id),
        local=lambda services: services.accounts.revoke_token(token_id),
    )
    out.print(f"Revoked token {token_id}")
