"""`strongroom tokens …`: local administration of API tokens; a token's value is shown once, at creation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from strongroom.cli.output import err, fail, out, print_table, table
from strongroom.cli.store import store

app = typer.Typer(help="Manage API tokens (local administration).", no_args_is_help=True)
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
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= now:
        fail(f"--expires {value!r} is in the past")
    return moment


@app.command("create")
def tokens_create(
    username: str,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "default",
    scope: Annotated[
        list[str] | None, typer.Option(help=f"Scopes (repeat): {', '.join(SCOPE_NAMES)}. Default: all.")
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(metavar="WHEN", help="Expiry: a duration (30d, 12h, 90m, 2w) or an ISO date/time (default UTC)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token for a user. The token is shown once and stored only as a hash."""
    from strongroom.representation import iso

    expires_at = parse_expiry(expires, datetime.now(UTC)) if expires is not None else None
    with store() as services:
        token, raw = services.accounts.create_token(username, name, tuple(scope or SCOPE_NAMES), expires_at)
    expiry = iso(expires_at) if expires_at else None
    if as_json:
        shown = {"id": token.id, "name": token.name, "scopes": token.scopes.split(), "expiresAt": expiry, "token": raw}
        print(json.dumps(shown))
        return
    until = f", expires {expiry}" if expiry else ""
    err.print(f"Token {token.id} for {username} (scopes: {token.scopes}{until}). It is shown only now:")
    print(raw)


@app.command("list")
def tokens_list(username: str, as_json: JsonOpt = False) -> None:
    """List a user's tokens (never their values); ids are printed in full at any terminal width."""
    from strongroom.representation import iso

    with store() as services:
        tokens = services.accounts.list_tokens(username)
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "prefix": t.prefix,
            "scopes": t.scopes,
            "createdAt": iso(t.created_at),
            "expiresAt": iso(t.expires_at) if t.expires_at else None,
            "revoked": t.revoked_at is not None,
        }
        for t in tokens
    ]
    if as_json:
        print(json.dumps(rows))
        return
    grid = table("id", "name", "prefix", "scopes", "created", "expires", "revoked")
    for r in rows:
        grid.add_row(
            r["id"],
            r["name"],
            r["prefix"] + "…",
            r["scopes"],
            r["createdAt"],
            r["expiresAt"] or "",
            "yes" if r["revoked"] else "",
        )
    print_table(grid)


@app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token; it stops working at once."""
    with store() as services:
        services.accounts.revoke_token(token_id)
    out.print(f"Revoked token {token_id}")
