"""The documentation's examples, run verbatim with our SDK and with the real `datarobot` client.

The code is read from `../shared/seed-examples.md` (the release contract), falling back to the copy in
tests/ when the repository is used on its own. Each `# Credential('<id>', 'name', 'type')` comment is an
expectation: the repr printed at that point must match it, with `<…>` standing for a 24-hex id.
"""

from __future__ import annotations

import ast
import importlib
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from strongroom import credential_types
from tests.support import Server

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "seed-examples.md"
SEED_FILE = SHARED if SHARED.exists() else HERE / "seed-examples.md"
HEX24 = re.compile(r"^[0-9a-f]{24}$")
SDKS = ["strongroom", "datarobot"]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def statements_with_comments(src: str) -> list[tuple[ast.stmt, str]]:
    """Pair each top-level statement with the comment text that follows it, up to the next statement."""
    tree = ast.parse(src)
    lines = src.splitlines()
    out = []
    for i, node in enumerate(tree.body):
        end = tree.body[i + 1].lineno - 1 if i + 1 < len(tree.body) else len(lines)
        tail = [lines[node.end_lineno - 1][node.end_col_offset :], *lines[node.end_lineno : end]]
        comment = " ".join(part.split("#", 1)[1].strip() for part in tail if "#" in part)
        out.append((node, comment))
    return out


def expected_repr(comment: str) -> re.Pattern[str] | None:
    match = re.match(r"(Credential\(.*?\))", comment)
    if not match:
        return None
    return re.compile(re.sub(r"'<[^>]*>'", "'[0-9a-f]{24}'", re.escape(match.group(1)).replace(r"\<", "<")))


def run_block(src: str, ns: dict[str, Any]) -> list[str]:
    """Execute statement by statement, as a reader would at a prompt; return the reprs checked."""
    checked = []
    for node, comment in statements_with_comments(src):
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), "<seed>", "eval"), ns)  # noqa: S307
        else:
            exec(compile(ast.Module([node], []), "<seed>", "exec"), ns)  # noqa: S102
            targets = node.targets if isinstance(node, ast.Assign) else []
            value = ns[targets[0].id] if targets and isinstance(targets[0], ast.Name) else None
        pattern = expected_repr(comment)
        if pattern is not None:
            assert pattern.fullmatch(repr(value)), f"{ast.unparse(node)!r} gave {value!r}, docs say {comment!r}"
            checked.append(repr(value))
        if "the same id" in comment:
            assert value == ns["credential_id"]
    return checked


def connect(sdk: str, server: Server, token: str) -> Any:
    dr = importlib.import_module(sdk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dr.Client(endpoint=f"{server.api}", token=token)
    return dr


@pytest.mark.parametrize("sdk", SDKS)
def test_seed_examples_verbatim(sdk: str, server: Server, token: str) -> None:
    setup, examples = python_blocks(SEED_FILE.read_text())
    setup = re.sub(r"import strongroom as dr\s*#.*", f"import {sdk} as dr", setup)
    setup = setup.replace("<port>", str(server.port)).replace("<api token>", token)
    ns: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(setup, ns)  # noqa: S102
    checked = run_block(examples, ns)

    assert len(checked) == 3, checked  # basic, s3 and oauth reprs were all compared with the docs
    assert ns["credentials"] == []  # a fresh user sees nothing
    assert HEX24.match(ns["credential_id"])
    names = sorted(c.name for c in ns["dr"].Credential.list())
    assert names == ["my_db_cred", "my_oauth_cred", "my_s3_cred"]


def sample_values(ctype: credential_types.CredentialType, tag: str) -> dict[str, Any]:
    """SDK keyword arguments for a complete credential of this type (first alternative)."""
    out: dict[str, Any] = {}
    for f in ctype.fields:
        if f.name == ctype.exclusive:
            continue
        if f.kind == "object":
            out[f.param] = {"type": "service_account", "private_key": f"pk-{tag}", "client_email": "a@b.iam"}
        elif f.kind == "string_list":
            out[f.param] = ["https://storage.azure.com/.default"]
        else:
            out[f.param] = f"{f.name}-{tag}"
    return out


OTHER_TYPES = [t for t in credential_types.TYPES.values() if t.name not in ("basic", "s3", "oauth")]


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("ctype", OTHER_TYPES, ids=lambda t: t.name)
def test_other_types_round_trip(sdk: str, ctype: credential_types.CredentialType, server: Server, token: str) -> None:
    dr = connect(sdk, server, token)
    create = getattr(dr.Credential, ctype.sdk_method, None)
    if create is None:
        assert sdk == "datarobot" and ctype.name == "api_token"  # an extension the DataRobot SDK lacks
        pytest.skip(f"datarobot {dr.__version__} has no {ctype.sdk_method}")

    cred = create(name=f"{ctype.name}-cred", description="round trip", **sample_values(ctype, "v1"))
    assert repr(cred) == f"Credential('{cred.credential_id}', '{ctype.name}-cred', '{ctype.name}')"
    assert cred.description == "round trip"

    fetched = dr.Credential.get(cred.credential_id)
    assert (fetched.credential_id, fetched.name, fetched.credential_type) == (
        cred.credential_id,
        f"{ctype.name}-cred",
        ctype.name,
    )
    assert [c.credential_id for c in dr.Credential.list()] == [cred.credential_id]

    changed = next((f for f in ctype.fields if f.secret), ctype.fields[0])  # external_oauth_provider: no secret
    cred.update(**{changed.param: sample_values(ctype, "v2")[changed.param]})
    cred.update(name=f"{ctype.name}-renamed", description="changed")
    assert dr.Credential.get(cred.credential_id).name == f"{ctype.name}-renamed"
    assert dr.Credential.get(cred.credential_id).description == "changed"

    cred.delete()
    assert dr.Credential.list() == []
