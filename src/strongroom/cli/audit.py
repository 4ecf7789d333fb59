"""`strongroom audit …`: read the audit trail (remotely with a token, or locally), export it, verify its chains."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import typer

from strongroom.cli.output import err, fail, json_text, out, print_table, table
from strongroom.cli.store import store

app = typer.Typer(help="Read, export and verify the audit trail.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON record per line on stdout.")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", metavar="WHEN", help="From this moment: ISO 8601, or a span before now (1d).")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", metavar="WHEN", help="Before this moment: ISO 8601, or a span (12h).")
]
_PAGE = 1000


def _moments(since: str | None, until: str | None) -> dict[str, datetime]:
    """--since/--until as datetimes, refused naming the option when neither ISO 8601 nor a span."""
    from strongroom.errors import InvalidInput
    from strongroom.services.audit import parse_moment

    moments = {}
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            try:
                moments[name] = parse_moment(value, f"--{name}")
            except InvalidInput as exc:
                fail(f"{exc.message} (got {value!r})")
    return moments


def _remote_settings(endpoint: str | None, token: str | None) -> bool:
    """Whether an endpoint is configured (option, STRONGROOM_ENDPOINT or the config file): then list remotely."""
    from strongroom.client.config import resolve
    from strongroom.client.errors import ConfigurationError

    try:
        resolve(endpoint, token, None)
    except ConfigurationError as exc:
        return "endpoint" not in exc.missing
    return True


def _local_records(filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with store() as services:
        offset = 0
        while True:
            page, total = services.audit.list(None, offset=offset, limit=_PAGE, **filters)
            yield from page
            offset += len(page)
            if not page or offset >= total:
                return


def _remote_records(filters: dict[str, Any], endpoint: str | None, token: str | None) -> list[dict[str, Any]]:
    from strongroom.client import AuditRecord, Client, ConfigurationError

    try:
        client = Client(endpoint=endpoint, token=token)
    except ConfigurationError as exc:
        fail(f"{exc.message}; or run `strongroom audit list --local` on the server machine")
    with client:
        return [r.data for r in AuditRecord.list(**filters)]


@app.command("list")
def audit_list(
    credential: Annotated[str | None, typer.Option("--credential", metavar="ID", help="Only this credential.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", metavar="USER", help="Only this username.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action (credential.update …).")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    local: Annotated[bool, typer.Option("--local", help="Read the local store even if an endpoint is set.")] = False,
    endpoint: Annotated[str | None, typer.Option("--endpoint", metavar="URL", help="API root.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="API token (prefer STRONGROOM_API_TOKEN).")] = None,
) -> None:
    """List audit records, oldest first: over the API when an endpoint is configured (admins see all, others
    the records of their credentials), else from the local store."""
    filters: dict[str, Any] = {"credential_id": credential, "actor": actor, "action": action}
    filters = {k: v for k, v in filters.items() if v is not None}
    if not local and _remote_settings(endpoint, token):
        remote = {**filters, **{k: v for k, v in (("since", since), ("until", until)) if v is not None}}
        records: Any = _remote_records(remote, endpoint, token)
    else:
        records = _local_records({**filters, **_moments(since, until)})
    if as_json:
        for record in records:
            sys.stdout.write(json_text(record, sort_keys=True) + "\n")
        return
    grid = table("time", "actor", "action", "outcome", "status", "credential", "request id")
    for r in records:
        target = r.get("target") or {}
        grid.add_row(
            r.get("time", ""),
            (r.get("actor") or {}).get("username") or "-",
            r.get("action", ""),
            r.get("outcome", ""),
            str(r.get("status", "")),
            " ".join(str(v) for v in (target.get("credentialId"), target.get("name")) if v) or "-",
            r.get("requestId") or "-",
        )
    print_table(grid)


@app.command("export")
def audit_export(since: SinceOpt = None, until: UntilOpt = None) -> None:
    """Write every record (local store) as one JSON object per line, oldest first, for a SIEM."""
    moments = _moments(since, until)
    count = 0
    with store() as services:
        for line in services.audit.export(**moments):
            sys.stdout.write(line + "\n")
            count += 1
    sys.stdout.flush()
    err.print(f"Exported {count} audit records")


@app.command("verify")
def audit_verify() -> None:
    """Walk every chain of the local store; exit non-zero naming the first record that does not verify."""
    with store() as services:
        verdict = services.audit.verify()
    if verdict.first_bad is not None:
        fail(f"the audit log does not verify: {verdict.first_bad} ({verdict.checked} records verified before it)")
    out.print(f"Verified {verdict.checked} audit records: every chain is intact")
