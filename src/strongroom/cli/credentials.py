"""`strongroom credentials …`: manage credentials through the SDK, with secrets kept off the command line.

Secret values can be given as options, but the safe routes are a hidden prompt (used whenever a needed field is
missing and stdin is a terminal; a new secret is asked twice) and `--from-json FILE|-`, so passwords need not
reach shell history or `ps`. With no terminal nothing is prompted: what was given is sent and the server names
what is missing. The SDK (and its HTTP stack) is imported only when a command runs.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from strongroom.cli.output import ask, err, fail, print_table, table
from strongroom.credential_types import TYPES, CredentialType, Field, snake

if TYPE_CHECKING:
    from strongroom.client import Client, Credential

app = typer.Typer(
    help="Manage credentials on a Strongroom server (endpoint and token from options, "
    "STRONGROOM_ENDPOINT / STRONGROOM_API_TOKEN, or ~/.config/strongroom/config.yaml).",
    no_args_is_help=True,
)
create_app = typer.Typer(
    help="Create a credential. Missing secrets are prompted for without echo; --from-json reads fields "
    "(camelCase keys, also name and description) from a file or stdin, which suits multi-line PEM keys.",
    no_args_is_help=True,
)
app.add_typer(create_app, name="create")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
FromJsonOpt = Annotated[
    str | None,
    typer.Option("--from-json", metavar="FILE|-", help="Read fields from a JSON object in FILE, or stdin with -."),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint", metavar="URL", help="API root, e.g. http://127.0.0.1:8484/api/v2 (or STRONGROOM_ENDPOINT)."
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", metavar="TOKEN", help="API token (prefer STRONGROOM_API_TOKEN: options show up in `ps`)."),
]
RefArg = Annotated[str, typer.Argument(metavar="ID|NAME", help="The credential's id, or its name.")]
_COMMON = ("name", "description")
_CLI_SOURCES = {
    "endpoint": "set STRONGROOM_ENDPOINT or pass --endpoint URL",
    "token": "set STRONGROOM_API_TOKEN",
}


@app.callback()
def connection(ctx: typer.Context, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Remember the connection options for the subcommand (which may also take them; the SDK resolves the rest)."""
    ctx.ensure_object(dict).update(endpoint=endpoint, token=token)


@contextmanager
def session(ctx: typer.Context, endpoint: str | None = None, token: str | None = None) -> Iterator[Client]:
    """Connect with the subcommand's options, else the group's; a missing setting is named in CLI terms."""
    from strongroom.client import Client, ConfigurationError

    options = ctx.find_object(dict) or {}
    try:
        client = Client(endpoint=endpoint or options.get("endpoint"), token=token or options.get("token"))
    except ConfigurationError as exc:
        if not exc.missing:
            raise
        how = "; ".join(f"no {what} configured: {_CLI_SOURCES[what]}" for what in exc.missing)
        keys = " and ".join(f"'{what}'" for what in exc.missing)
        fail(f"{how} (or write {keys} in {exc.config_file})")
    with client:
        yield client


def kebab(f: Field) -> str:
    """The option spelling of a field, from its wire name so docs, JSON and flags agree."""
    return "--" + snake(f.name).replace("_", "-")


def _date(cred: Credential) -> str:
    """Seconds are enough for humans; --json keeps the full timestamp."""
    return cred.creation_date.strftime("%Y-%m-%d %H:%M:%S") if cred.creation_date else ""


def show(cred: Credential, as_json: bool) -> None:
    """Print one credential as a field/value table, or as JSON."""
    if as_json:
        print(json.dumps(cred.as_dict(), indent=2, default=str))
        return
    from rich.table import Table

    grid = Table(show_header=False, box=None)
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in cred.as_dict().items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        grid.add_row(key, _date(cred) if key == "creationDate" else text)
    print_table(grid)


def read_json_object(source: str, given_to: str) -> dict[str, Any]:
    """Load a JSON object from a file or stdin; errors name the option, never the source or content (maybe a secret)."""
    where = "standard input" if source == "-" else f"the file given to {given_to}"
    try:
        if source == "-":
            data = json.load(sys.stdin)
        else:
            with Path(source).open(encoding="utf-8") as handle:
                data = json.load(handle)
    except OSError as exc:
        fail(f"cannot read {where}: {(exc.strerror or type(exc).__name__).lower()}")
    except UnicodeDecodeError:
        fail(f"{where} is not UTF-8 text")
    except json.JSONDecodeError as exc:
        fail(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        fail(f"{where} nests JSON deeper than this reader follows")
    if not isinstance(data, dict):
        fail(f"{where} must hold a JSON object")
    return data


def find_field(ctype: CredentialType, key: str) -> Field | None:
    """Accept a field by its wire name (privateKeyStr), SDK name (private_key) or option name (private-key-str)."""
    key = key.strip().lstrip("-")
    for f in ctype.fields:
        if key in (f.name, f.param, snake(f.name), f.param.replace("_", "-"), kebab(f)[2:]):
            return f
    return None


def _unknown(ctype: CredentialType, given_to: str, key: str) -> NoReturn:
    """Fail before any request, listing the keys this type accepts; the key is not repeated (it may be a secret)."""
    names = [*_COMMON, *(f.name for f in ctype.fields)]
    close = difflib.get_close_matches(key.strip().lstrip("-"), names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    valid = ", ".join(names)
    fail(f"{given_to} names a field that credential type {ctype.name!r} does not have{hint}; expected one of {valid}")


def split_json(ctype: CredentialType, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a --from-json object into (name/description, wire-named fields), rejecting unknown keys."""
    common: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key in _COMMON:
            common[key] = value
        elif key == "credentialType":
            if value != ctype.name:
                fail(f"credentialType in the JSON is {value!r}, but this command creates {ctype.name!r}")
        elif (f := find_field(ctype, key)) is not None:
            fields[f.name] = value
        else:
            _unknown(ctype, "--from-json", key)
    return common, fields


def prompt_value(f: Field) -> Any:
    """Ask for one field; a secret is read without echo, twice, and refused empty unless the field may be."""
    if f.kind == "object":
        return read_json_object(ask(f"{f.name} (path of a JSON file, or - for stdin)"), f.name)
    label = f"{f.name} (comma-separated)" if f.kind == "string_list" else f.name
    while True:
        value = ask(label, hide_input=f.secret, confirmation_prompt=f.secret, default="", show_default=False)
        if value or f.allow_empty:
            break
        err.print(f"{f.name} cannot be empty.")
    return [v.strip() for v in value.split(",") if v.strip()] if f.kind == "string_list" else value


def missing_fields(ctype: CredentialType, present: set[str]) -> list[Field]:
    """The fields still needed to complete the alternative the user has started (else the first one)."""
    if any(set(alt) <= present for alt in ctype.requires) or (ctype.exclusive and ctype.exclusive in present):
        return []
    started = [alt for alt in ctype.requires if set(alt) & present]
    closest = started[0] if started else ctype.requires[0]
    return [f for f in ctype.fields if f.name in closest and f.name not in present]


def _field_option(f: Field) -> Any:
    """The typer option for one field: wire-name flag, plus the SDK keyword spelling when it differs."""
    names = [kebab(f)]
    alias = "--" + f.param.replace("_", "-")
    if alias not in names and alias[2:] not in ("name", "description", "json", "from-json"):
        names.append(alias)
    if f.kind == "object":
        return typer.Option(None, *names, metavar="FILE|-", help=f"{f.doc} A JSON file, or - for stdin.")
    hint = " Secret: omit it to be prompted without echo." if f.secret else ""
    return typer.Option(None, *names, help=f"{f.doc}{hint}")


def _field_annotation(f: Field) -> Any:
    """List fields become repeatable options; objects are given as a file path."""
    return list[str] | None if f.kind == "string_list" else str | None


def make_create_command(ctype: CredentialType) -> Callable[..., None]:
    """Build `credentials create <type>` from the type declaration, with one option per field."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    field_params = {f"field_{f.param}": f for f in ctype.fields}
    params = [
        inspect.Parameter("ctx", keyword, annotation=typer.Context),
        inspect.Parameter(
            "name", keyword, annotation=str | None, default=typer.Option(None, "--name", help="Credential name.")
        ),
        inspect.Parameter("description", keyword, annotation=str | None, default=typer.Option(None, "--description")),
        *(
            inspect.Parameter(pname, keyword, annotation=_field_annotation(f), default=_field_option(f))
            for pname, f in field_params.items()
        ),
        inspect.Parameter("from_json", keyword, annotation=FromJsonOpt, default=None),
        inspect.Parameter("as_json", keyword, annotation=JsonOpt, default=False),
        inspect.Parameter("endpoint", keyword, annotation=EndpointOpt, default=None),
        inspect.Parameter("token", keyword, annotation=TokenOpt, default=None),
    ]

    def command(**kwargs: Any) -> None:
        from strongroom.client import Credential

        ctx: typer.Context = kwargs.pop("ctx")
        common, values = (
            split_json(ctype, read_json_object(kwargs["from_json"], "--from-json")) if kwargs["from_json"] else ({}, {})
        )
        for key in _COMMON:
            if kwargs[key] is not None:
                common[key] = kwargs[key]
        for pname, f in field_params.items():
            value = kwargs[pname]
            if value is not None and value != []:
                values[f.name] = read_json_object(value, kebab(f)) if f.kind == "object" else value
        if not common.get("name"):
            fail('a name is required: --name NAME (or "name" in --from-json)')
        if sys.stdin.isatty():  # with no terminal, send what we have and let the server name what is missing
            for f in missing_fields(ctype, {k for k, v in values.items() if v is not None}):
                values[f.name] = prompt_value(f)
        create = getattr(Credential, ctype.sdk_method)
        by_name = {f.name: f.param for f in ctype.fields}
        arguments = {f.param: None for f in ctype.fields if f.name in ctype.always_required}  # the server judges
        arguments.update({by_name[k]: v for k, v in values.items()})
        with session(ctx, kwargs["endpoint"], kwargs["token"]):
            cred = create(**common, **arguments)
        if not kwargs["as_json"]:
            err.print(f"Created credential {cred.credential_id}")
        show(cred, kwargs["as_json"])

    command.__name__ = f"create_{ctype.name}"
    command.__doc__ = f"Create a credential of type {ctype.name}: {ctype.doc}"
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command


def _register_create_commands() -> None:
    """One subcommand per type (snowflake-key-pair-user-account), plus the SDK's shorter name as a hidden alias."""
    for ctype in TYPES.values():
        command = make_create_command(ctype)
        name = ctype.name.replace("_", "-")
        create_app.command(name)(command)
        alias = ctype.sdk_method.removeprefix("create_").replace("_", "-")
        if alias != name:
            create_app.command(alias, hidden=True)(command)


_register_create_commands()


@app.command("list")
def list_credentials(
    ctx: typer.Context,
    types: Annotated[
        list[str] | None, typer.Option("--type", metavar="TYPE", help="Only this credential type (repeatable).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only the credentials of exactly this name.")] = None,
    search: Annotated[
        str | None, typer.Option("--search", metavar="TEXT", help="Only names containing TEXT, ignoring case.")
    ] = None,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """List every credential you can see, across all pages."""
    from strongroom.client import Credential

    with session(ctx, endpoint, token):
        creds = Credential.list(types=types or None, name=name, search=search)
    if as_json:
        print(json.dumps([c.as_dict() for c in creds], indent=2, default=str))
        return
    grid = table("id", "name", "type", "description", "created")
    grid.columns[0].no_wrap = grid.columns[4].no_wrap = True
    for c in creds:
        grid.add_row(*(str(v or "") for v in (c.credential_id, c.name, c.credential_type, c.description)), _date(c))
    print_table(grid)


def find(reference: str) -> Credential:
    """The credential an id or a name refers to: an id-shaped reference is tried as an id first, then as a name
    (names may look like ids); anything else is a name."""
    from strongroom.client import ClientError, Credential

    if not re.fullmatch(r"[0-9a-f]{24}", reference):
        return Credential.get_by_name(reference)
    try:
        return Credential.get(reference)
    except ClientError as exc:
        if exc.status_code != 404:
            raise
    try:
        return Credential.get_by_name(reference)
    except ClientError as exc:
        if exc.status_code == 404:
            fail(f"credential not found: no credential has the id or the name {reference!r}")
        raise


@app.command("get")
def get_credential(
    ctx: typer.Context,
    reference: RefArg,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show one credential (secret values are never returned)."""

    with session(ctx, endpoint, token):
        cred = find(reference)
    show(cred, as_json)


def _set_pairs(ctype: CredentialType, pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse `--set FIELD=VALUE` (or `FIELD` alone, to be prompted) into (name/description, fields)."""
    common: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, has_value, value = pair.partition("=")
        key = key.strip()
        if key in _COMMON:
            common[key] = value if has_value else ask(key)
            continue
        f = find_field(ctype, key)
        if f is None:
            _unknown(ctype, "--set", key)
        if not has_value:
            fields[f.name] = prompt_value(f)
        elif f.kind == "string_list":
            fields[f.name] = [v.strip() for v in value.split(",") if v.strip()]
        elif f.kind == "object":
            try:
                fields[f.name] = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                fail(f"--set {f.name}= needs a JSON object (or use --from-json)")
        else:
            fields[f.name] = value
    return common, fields


@app.command("update")
def update_credential(
    ctx: typer.Context,
    reference: RefArg,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    description: Annotated[str | None, typer.Option("--description", help="New description ('' clears it).")] = None,
    pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD[=VALUE]",
            help="Set a type-specific field (repeatable); give FIELD alone to be prompted without echo.",
        ),
    ] = None,
    from_json: FromJsonOpt = None,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change a credential's name, description or fields. As in DataRobot, a new name alone clears the description."""

    with session(ctx, endpoint, token):
        cred = find(reference)
        ctype = TYPES.get(cred.credential_type or "")
        if ctype is None:
            fail(f"credential type {cred.credential_type!r} is not known to this client")
        common, fields = split_json(ctype, read_json_object(from_json, "--from-json")) if from_json else ({}, {})
        set_common, set_fields = _set_pairs(ctype, pairs or [])
        common.update(set_common)
        fields.update(set_fields)
        if name is not None:
            common["name"] = name
        if description is not None:
            common["description"] = description
        by_name = {f.name: f.param for f in ctype.fields}
        cred.update(**common, **{by_name[k]: v for k, v in fields.items()})
    show(cred, as_json)


@app.command("delete")
def delete_credential(
    ctx: typer.Context,
    reference: RefArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete a credential (asks first unless --yes)."""

    with session(ctx, endpoint, token):
        cred = find(reference)
        if not yes and not typer.confirm(f"Delete credential {cred.credential_id} ({cred.name!r})?"):
            err.print("Not deleted.")
            raise typer.Exit(1)
        cred.delete()
    err.print(f"Deleted credential {cred.credential_id}")


_SHARE_ROLES = ("OWNER", "EDITOR", "CONSUMER", "NO_ROLE")


@app.command("share")
def share_credential(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    user: Annotated[str | None, typer.Option("--user", metavar="USERNAME", help="Share with this user.")] = None,
    group: Annotated[
        str | None, typer.Option("--group", metavar="GROUP", help="Share with this group (id or name).")
    ] = None,
    role: Annotated[
        str, typer.Option("--role", metavar="ROLE", help="OWNER, EDITOR, CONSUMER, or NO_ROLE to take access away.")
    ] = "CONSUMER",
    can_share: Annotated[bool, typer.Option("--can-share", help="The recipient may share it further.")] = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Give a user or a group a role on a credential, or take it away with --role NO_ROLE."""
    from strongroom.client import Credential

    if (user is None) == (group is None):
        fail("name exactly one recipient: --user USERNAME or --group GROUP")
    wanted = role.strip().upper()
    if wanted not in _SHARE_ROLES:
        fail(f"--role {role!r}: expected one of {', '.join(_SHARE_ROLES)}")
    with session(ctx, endpoint, token):
        Credential(credential_id=credential_id).share(user, wanted, can_share, group=group)
    recipient = f"user {user}" if user is not None else f"group {group}"
    if wanted == "NO_ROLE":
        err.print(f"Removed the access of {recipient} to credential {credential_id}")
    else:
        err.print(f"Shared credential {credential_id} with {recipient} as {wanted}")


@app.command("access")
def credential_access(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Who holds which role on a credential, its owner first."""
    from strongroom.client import Credential

    with session(ctx, endpoint, token):
        roles = Credential(credential_id=credential_id).get_access_list()
    if as_json:
        print(json.dumps([r.to_dict() for r in roles], indent=2))
        return
    grid = table("type", "name", "role", "can share", "id")
    for r in roles:
        grid.add_row(r.share_recipient_type, r.name, r.role, "yes" if r.can_share else "", r.id)
    print_table(grid)
