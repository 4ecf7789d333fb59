"""The `strongroom` command's own behaviour: errors, stores, options, input and imports. The commands' logic runs
in-process through the CLI's own entry point (`cli_in_process`: its error wrapper and exit codes included, at a
fraction of an interpreter start-up); what only a process shows runs as a subprocess: a usage error's exit status,
an unexpected error's report, what importing the CLI loads, and prompts on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import Server, cli_in_process, default_signals

HEAVY = ("sqlalchemy", "starlette", "cryptography", "alembic", "pydantic_settings", "httpx", "uvicorn", "rich")


def run(
    *args: str, env: dict[str, str], stdin: str | None = "", process: bool = False
) -> subprocess.CompletedProcess[str]:
    """`strongroom ARGS` with `env` for Strongroom's variables (and COLUMNS=200), stdin not a terminal: in-process,
    or with `process` as `python -m strongroom ARGS` with exactly `env` plus PATH, PYTHONPATH and HOME."""
    if not process:
        return cli_in_process(list(args), env={"COLUMNS": "200", **env}, input=stdin)
    base = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        env={**base, "COLUMNS": "200", **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_admin_command_refuses_a_missing_store_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    result = run("users", "list", env={"STRONGROOM_DATA_DIR": str(typo)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: no Strongroom store here")
    assert f"no database file {typo / 'strongroom.db'} (data directory from STRONGROOM_DATA_DIR)" in result.stderr
    assert "strongroom init" in result.stderr and "Traceback" not in result.stderr
    assert not typo.exists()
    for command in (("tokens", "list", "x"), ("keys", "status"), ("backup", str(tmp_path / "b.srb"))):
        assert run(*command, env={"STRONGROOM_DATA_DIR": str(typo)}).returncode == 1
    assert not typo.exists() and not (tmp_path / "b.srb").exists()


def test_default_data_dir_is_named_as_the_default(tmp_path: Path) -> None:
    result = run("users", "list", env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert result.returncode == 1
    assert f"{tmp_path / 'xdg' / 'strongroom' / 'strongroom.db'} (data directory the default" in result.stderr
    assert not (tmp_path / "xdg").exists()


def test_init_creates_a_store_once_then_commands_use_it(tmp_path: Path) -> None:
    env = {"STRONGROOM_DATA_DIR": str(tmp_path / "store")}
    first = run("init", env=env)
    assert first.returncode == 0 and first.stdout.startswith("Created a store at"), first.stderr
    assert (tmp_path / "store" / "strongroom.db").is_file() and (tmp_path / "store" / "master.key").is_file()
    again = run("init", env=env)
    assert again.returncode == 0 and again.stdout.startswith("A store already exists")
    assert run("users", "create", "alice", env=env).returncode == 0
    assert [u["username"] for u in json.loads(run("users", "list", "--json", env=env).stdout)] == ["alice"]


def test_a_symlinked_database_file_is_refused_but_a_symlinked_directory_is_not(tmp_path: Path) -> None:
    """The SQLite file itself must not be a symbolic link (as the key file must not): `init` and the commands that
    open a store refuse it in one line naming it, creating nothing and writing nothing where it points. A data
    directory reached through a linked parent (as /tmp is on some systems) is fine."""
    elsewhere = tmp_path / "elsewhere"
    assert run("init", env={"STRONGROOM_DATA_DIR": str(elsewhere)}).returncode == 0
    for target in (tmp_path / "nowhere.db", elsewhere / "strongroom.db"):  # dangling, and another store's file
        store = tmp_path / f"linked-to-{target.stem}"
        store.mkdir()
        (store / "strongroom.db").symlink_to(target)
        before = target.read_bytes() if target.exists() else None
        opening = [("users", "create", "mallory")] if before is not None else []  # else: no store here
        for command in [("init",), *opening]:
            key = {"STRONGROOM_MASTER_KEY_FILE": str(elsewhere / "master.key")} if opening else {}
            result = run(*command, env={"STRONGROOM_DATA_DIR": str(store), **key})
            assert result.returncode == 1, result.stdout
            assert result.stderr == (
                f"Error: the database file {store / 'strongroom.db'} is a symbolic link; refusing to follow it "
                "(move the file itself there, or set STRONGROOM_DATABASE_URL to where it really is)\n"
            )
            assert sorted(p.name for p in store.iterdir()) == ["strongroom.db"]
            assert (target.read_bytes() if target.exists() else None) == before
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)
    result = run("init", env={"STRONGROOM_DATA_DIR": str(tmp_path / "via" / "store")})
    assert result.returncode == 0 and result.stdout.startswith("Created a store"), result.stderr
    assert (tmp_path / "real" / "store" / "strongroom.db").is_file()


def test_concurrent_inits_say_created_only_once(tmp_path: Path) -> None:
    """Three `strongroom init` processes at once on one empty data directory: one creates the store and says so,
    the others find it and say it already exists (exit 0, as for an existing store); one key is made."""
    base = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}
    env = {**base, "STRONGROOM_DATA_DIR": str(tmp_path / "store")}
    argv = [sys.executable, "-m", "strongroom", "init"]
    inits = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "abc"]
    results = [(*p.communicate(timeout=60), p.returncode) for p in inits]
    assert [code for _, _, code in results] == [0, 0, 0], results
    said = sorted(out.split(" at ")[0] for out, _, _ in results)
    assert said == ["A store already exists", "A store already exists", "Created a store"], results
    assert json.loads((tmp_path / "store" / "master.key").read_text())["keys"].keys() == {"1"}


HOSTILE = "evil\x1b]0;owned\x07\x1b[2J\r\u202egnp.exe\x9b31m\nnext"  # retitle, clear, overwrite, reorder
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b")


@contextmanager
def hostile_server() -> Iterator[str]:
    """A fake API (not Strongroom's, which refuses such names) whose credential fields and error messages hold
    terminal control sequences; yields its API root."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/api/v2/version/":
                self.answer(200, {"versionString": "2.0"})
            elif url.path == "/api/v2/credentials/" and "search=" not in url.query:
                item = {"credentialId": "c1" + HOSTILE, "name": HOSTILE, "credentialType": "basic"}
                self.answer(200, {"data": [{**item, "description": HOSTILE, "user": HOSTILE}], "next": None})
            elif url.path == "/api/v2/auditLog/":
                record = {"action": "credential.read", "actor": {"username": HOSTILE}, "target": {"name": HOSTILE}}
                self.answer(200, {"data": [record], "next": None})
            else:
                self.answer(403, {"message": HOSTILE})

        def do_POST(self) -> None:  # a new token of the caller's
            self.rfile.read(int(self.headers["Content-Length"]))
            key = {"id": "k1", "name": HOSTILE, "prefix": "sr_", "scopes": ["read"], "revoked": False}
            self.answer(201, {**key, "token": "sr_" + HOSTILE})

        def answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads the CLI's output, not the server's log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v2"
    finally:
        server.shutdown()
        server.server_close()


def test_a_hostile_servers_names_and_messages_cannot_drive_the_terminal() -> None:
    """Names, ids and error messages from a server are printed with their control and bidi characters escaped
    (tables, plain lines, errors), so a hostile or compromised server cannot rewrite the user's terminal."""
    with hostile_server() as api:
        env = {"STRONGROOM_ENDPOINT": api, "STRONGROOM_API_TOKEN": "sr_test"}
        listed = run("credentials", "list", env=env)
        shown = run("credentials", "get", "evil", env=env)
        refused = run("credentials", "list", "--search", "x", env=env)
        as_json = run("credentials", "list", "--json", env=env)
        audit = run("audit", "list", env=env)
        audit_json = run("audit", "list", "--json", env=env)
        token = run("tokens", "create", "--name", "t", env=env)
    escaped = "evil\\x1b]0;owned\\x07\\x1b[2J\\x0d\\u202egnp.exe\\x9b31m\\x0anext"
    for result in (listed, shown, audit, token):
        assert result.returncode == 0 and escaped in result.stdout + result.stderr, result
    assert token.stdout == f"sr_{escaped}\n"
    assert refused.returncode == 1 and refused.stderr == f"Error: {escaped}\n"
    # JSON escapes them its own way, and the value is kept
    assert json.loads(as_json.stdout)[0]["name"] == json.loads(audit_json.stdout)["actor"]["username"] == HOSTILE
    for result in (listed, shown, refused, as_json, audit, audit_json, token):
        assert not any(raw in result.stdout + result.stderr for raw in RAW), result


def test_user_data_with_markup_is_printed_verbatim(tmp_path: Path) -> None:
    env = {"STRONGROOM_DATA_DIR": str(tmp_path)}
    run("init", env=env)
    revoked = run("tokens", "revoke", "[/foo]", env=env)  # not an id: not quoted back (it may be a token)
    assert revoked.returncode == 1 and revoked.stderr == "Error: token not found\n"
    disabled = run("users", "disable", "[/foo]", env=env)
    assert disabled.returncode == 1 and disabled.stderr == "Error: user '[/foo]' not found\n"
    run("users", "create", "bob", env=env)
    made = run("tokens", "create", "bob", "--name", "[bold]:smile:[/]", env=env)
    assert made.returncode == 0, made.stderr
    assert "[bold]:smile:[/]" in run("tokens", "list", "bob", env=env).stdout


def test_usage_error_is_exit_2_without_traceback() -> None:
    result = run("tokens", "create", env={}, process=True)
    assert result.returncode == 2 and "Missing argument" in result.stderr and "Traceback" not in result.stderr


def test_jobs_run_refuses_a_spec_or_adapter_that_is_not_a_json_object(tmp_path: Path) -> None:
    """Checked before any connection: each refusal is one line naming the option, exit 1."""
    env = {"STRONGROOM_ENDPOINT": "http://127.0.0.1:1/api/v2", "STRONGROOM_API_TOKEN": "sr_unused"}
    spec = tmp_path / "spec.json"
    cases = {
        ("--spec", "-"): ("{not json", "Error: --spec -: not JSON"),
        ("--spec", str(spec)): ("", f"Error: --spec {spec}: must be a JSON object"),
        ("--intake", "s3"): (
            "",
            'Error: --intake must be localFile or a JSON object such as \'{"type": "jdbc", ...}\'',
        ),
        ("--output", "[1]"): ("", "Error: --output must be a JSON object"),
    }
    spec.write_text("[]")
    for (option, value), (stdin, expected) in cases.items():
        result = run("jobs", "run", option, value, env=env, stdin=stdin)
        assert (result.returncode, result.stderr.strip()) == (1, expected), (option, value, result.stderr)


def test_tokens_list_never_cuts_ids_and_create_takes_an_expiry(tmp_path: Path) -> None:
    env = {"STRONGROOM_DATA_DIR": str(tmp_path)}
    run("init", env=env)
    run("users", "create", "carol", env=env)
    before = datetime.now(UTC)
    month = json.loads(run("tokens", "create", "carol", "--expires", "30d", "--json", env=env).stdout)
    half_day = json.loads(run("tokens", "create", "carol", "--expires", "12h", "--json", env=env).stdout)
    dated = json.loads(run("tokens", "create", "carol", "--expires", "2099-01-31", "--json", env=env).stdout)
    month_at = datetime.fromisoformat(month["expiresAt"])
    assert timedelta(days=30) <= month_at - before < timedelta(days=30, minutes=5)
    half_day_at = datetime.fromisoformat(half_day["expiresAt"])
    assert timedelta(hours=12) <= half_day_at - before < timedelta(hours=12, minutes=5)
    assert dated["expiresAt"] == "2099-01-31T00:00:00.000000Z"
    past = run("tokens", "create", "carol", "--expires", "2001-01-01", env=env)
    assert past.returncode == 1 and "in the past" in past.stderr
    listed = {t["id"]: t["expiresAt"] for t in json.loads(run("tokens", "list", "carol", "--json", env=env).stdout)}
    assert listed[dated["id"]] == dated["expiresAt"]
    narrow = run("tokens", "list", "carol", env={**env, "COLUMNS": "40"}).stdout
    assert all(token_id in narrow for token_id in listed)


def test_importing_the_cli_and_the_sdk_loads_nothing_heavy() -> None:
    code = (
        "import sys, strongroom, strongroom.cli, strongroom.client.errors, strongroom.cli.credentials; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_runs_without_the_server_stack() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['strongroom', '--help']\n"
        "try:\n    runpy.run_module('strongroom', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code == 0\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "credentials" in result.stdout and result.stdout.strip().endswith("LOADED []")


def test_sdk_names_still_resolve_lazily() -> None:
    import strongroom

    assert strongroom.Credential.__name__ == "Credential" and issubclass(strongroom.ClientError, Exception)
    with pytest.raises(AttributeError):
        _ = strongroom.NoSuchName  # type: ignore[attr-defined]


def test_missing_token_speaks_cli(tmp_path: Path) -> None:
    env = {"STRONGROOM_ENDPOINT": "http://127.0.0.1:9/api/v2", "STRONGROOM_CONFIG_FILE": str(tmp_path / "none.yaml")}
    (tmp_path / "none.yaml").write_text("{}\n")
    result = run("credentials", "list", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no token configured: set STRONGROOM_API_TOKEN (or write" in result.stderr
    assert "Client(" not in result.stderr


def test_connection_options_after_the_subcommand(server: Server) -> None:
    token = server.new_user("opts")
    env = {"STRONGROOM_CONFIG_FILE": str(server.data_dir / "absent.yaml")}
    Path(env["STRONGROOM_CONFIG_FILE"]).write_text("{}\n")
    after = run("credentials", "list", "--json", "--endpoint", server.api, "--token", token, env=env)
    assert after.returncode == 0 and json.loads(after.stdout) == [], after.stderr
    before = run("credentials", "--endpoint", server.api, "--token", token, "list", "--json", env=env)
    assert before.returncode == 0 and json.loads(before.stdout) == []
    made = run(
        "credentials", "create", "basic", "--name", "n1", "--user", "u", "--password", "p", "--json",
        "--endpoint", server.api, "--token", token, env=env,
    )  # fmt: skip
    assert made.returncode == 0 and json.loads(made.stdout)["name"] == "n1", made.stderr
    bad = run("credentials", "get", "x", "--endpoint", server.api, "--token", "sr_wrong", env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr


def test_create_without_a_terminal_lets_the_server_name_what_is_missing(server: Server) -> None:
    env = {"STRONGROOM_ENDPOINT": server.api, "STRONGROOM_API_TOKEN": server.new_user("notty")}
    result = run("credentials", "create", "basic", "--name", "x", "--user", "y", env=env, stdin="")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "TypeError" not in result.stderr
    assert result.stderr.startswith("Error: ") and "password" in result.stderr
    piped = run("credentials", "create", "basic", "--from-json", "-", "--json", env=env,
                stdin=json.dumps({"name": "x", "user": "y", "password": "from stdin"}))  # fmt: skip
    assert piped.returncode == 0 and json.loads(piped.stdout)["name"] == "x", piped.stderr


def test_unexpected_error_is_a_short_report_without_locals(tmp_path: Path) -> None:
    env = {"STRONGROOM_DATA_DIR": str(tmp_path), "STRONGROOM_DATABASE_URL": "nosuchdriver://x:hunter2@h/db"}
    (tmp_path / "master.key").touch(mode=0o600)
    result = run("users", "list", env=env, process=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1


def _converse(argv: list[str], env: dict[str, str], replies: list[tuple[str, str | None]]) -> tuple[int, str]:
    """Run argv on a pseudo-terminal, waiting for each text in turn and typing its reply (None: type nothing);
    returns (exit status, everything shown)."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: Ctrl-C handled as usual even when this run ignores SIGINT (nohup), then exec
        default_signals()
        os.execve(argv[0], argv, env)  # noqa: S606 - a fixed interpreter and arguments, no shell
    seen = b""
    position = 0
    for prompt, reply in replies:
        while seen.find(prompt.encode(), position) < 0:
            ready, _, _ = select.select([fd], [], [], 30)
            try:
                chunk = os.read(fd, 4096) if ready else b""
            except OSError:
                chunk = b""
            assert chunk, f"no {prompt!r}; got {seen!r}"
            seen += chunk
        position = seen.find(prompt.encode(), position) + len(prompt)
        if reply is not None:
            os.write(fd, reply.encode() + b"\n")
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        try:
            chunk = os.read(fd, 4096) if ready else b""
        except OSError:  # the child closed the terminal
            chunk = b""
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_a_new_secret_is_asked_twice_and_never_empty(server: Server) -> None:
    env = {
        **{k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ},
        "STRONGROOM_ENDPOINT": server.api,
        "STRONGROOM_API_TOKEN": server.new_user("tty"),
    }
    argv = [sys.executable, "-m", "strongroom", "credentials", "create", "api-token", "--name", "tty1"]
    replies = [
        ("apiToken: ", ""),
        ("Repeat for confirmation: ", ""),
        ("apiToken cannot be empty", None),
        ("apiToken: ", "first"),
        ("Repeat for confirmation: ", "other"),
        ("do not match", None),
        ("apiToken: ", "s3cret"),
        ("Repeat for confirmation: ", "s3cret"),
    ]
    status, shown = _converse(argv, env, replies)
    assert status == 0, shown
    assert "Created credential" in shown and "s3cret" not in shown and "first" not in shown


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("STRONGROOM_PORT", "abc"),
        ("STRONGROOM_PUBLIC_URL", "ftp://x"),
        ("STRONGROOM_SQLITE_SYNCHRONOUS", "BOGUS"),
        ("STRONGROOM_DATABASE_URL", "notaurl"),
        ("STRONGROOM_DATABASE_URL", "postgresql+psycopg2://u:SECRET-PW@h/db"),
        ("STRONGROOM_DATABASE_URL", "postgresql://u:SECRET-PW@h:abc/db"),
        ("STRONGROOM_DATABASE_URL", "mysql://u:SECRET-PW@h/db"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, setting: str, value: str) -> None:
    """A setting pydantic or the store cannot read is a refusal naming the variable, not a bug report, and never
    quotes the value (a database URL may hold a password)."""
    result = run("users", "list", env={"STRONGROOM_DATA_DIR": str(tmp_path), setting: value})
    assert result.returncode == 1 and result.stderr.startswith(f"Error: {setting}"), result.stderr
    assert result.stderr.count("\n") == 1 and "SECRET-PW" not in result.stderr and "bug" not in result.stderr


def test_postgres_urls_are_read_as_psycopg() -> None:
    from strongroom.config import Settings

    for scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        url = Settings(database_url=f"{scheme}://u:p%40ss@db.example:5432/x").database_url
        assert url == "postgresql+psycopg://u:p%40ss@db.example:5432/x"


def test_backup_verify_and_restore_on_a_terminal_show_a_bar_and_restore_the_cursor(tmp_path: Path) -> None:
    base = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}
    source = {"STRONGROOM_DATA_DIR": str(tmp_path / "source")}
    assert run("init", env=source).returncode == 0 and run("users", "create", "alice", env=source).returncode == 0
    archive = str(tmp_path / "x.srb")
    cli = [sys.executable, "-m", "strongroom"]
    sessions = (
        ([*cli, "backup", archive], source, []),
        ([*cli, "backup", "--verify", archive], source, []),
        ([*cli, "backup", "--passphrase", archive + "p"], source,
         [("Archive passphrase: ", "correct horse"), ("Repeat for confirmation: ", "correct horse")]),
        ([*cli, "backup", "--verify", archive + "p"], source, [("Archive passphrase: ", "correct horse")]),
        ([*cli, "restore", archive + "p"], {"STRONGROOM_DATA_DIR": str(tmp_path / "target")},
         [("Archive passphrase: ", "correct horse")]),
    )  # fmt: skip
    for argv, env, replies in sessions:
        status, shown = _converse(argv, {**base, "COLUMNS": "200", **env}, replies)
        assert status == 0, shown
        assert "Error" not in shown and shown.count("\x1b[?25l") == shown.count("\x1b[?25h"), shown
    assert "1 user(s)" in shown and "Restored" in shown
    users = run("users", "list", "--json", env={"STRONGROOM_DATA_DIR": str(tmp_path / "target")})
    assert [u["username"] for u in json.loads(users.stdout)] == ["alice"]


def test_ctrl_c_at_a_prompt_is_an_interrupt(tmp_path: Path) -> None:
    """Ctrl-C at a prompt exits 130 like an interrupt anywhere else, not 1 with click's "Aborted!"; nothing is
    written."""
    base = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}
    env = {**base, "STRONGROOM_DATA_DIR": str(tmp_path / "store")}
    assert run("init", env={"STRONGROOM_DATA_DIR": env["STRONGROOM_DATA_DIR"]}).returncode == 0
    archive = tmp_path / "x.srb"
    argv = [sys.executable, "-m", "strongroom", "backup", "--passphrase", str(archive)]
    status, shown = _converse(argv, env, [("Archive passphrase: ", "\x03")])
    assert status == 130, shown
    assert "Aborted" not in shown and "Error" not in shown and not archive.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "rotate", "--pause", "-1", "--settle", "0"),
        ("keys", "rotate", "--settle", "nan"),
        ("keys", "rotate", "--pause", "nan", "--settle", "0"),
        ("keys", "rotate", "--settle", "inf", "--resume"),
        ("keys", "rotate", "--batch-size", "100000000000000000000"),
        ("keys", "retire", "99999999999999999999999"),
        ("keys", "retire", "0"),
        ("worker", "--concurrency", "-1"),
        ("worker", "--concurrency", "0"),
    ],
)
def test_out_of_range_numbers_are_usage_errors_before_anything_changes(tmp_path: Path, argv: tuple[str, ...]) -> None:
    env = {"STRONGROOM_DATA_DIR": str(tmp_path)}
    run("init", env=env)
    keyring = (tmp_path / "master.key").read_text()
    result = run(*argv, env=env)
    assert result.returncode == 2, result.stderr
    assert "Invalid value for" in result.stderr and "unexpected" not in result.stderr
    assert (tmp_path / "master.key").read_text() == keyring
    assert [v["version"] for v in json.loads(run("keys", "status", "--json", env=env).stdout)["versions"]] == [1]


def test_a_kms_key_id_on_a_local_keyring_is_refused_before_anything_changes(tmp_path: Path) -> None:
    env = {"STRONGROOM_DATA_DIR": str(tmp_path)}
    run("init", env=env)
    keyring = (tmp_path / "master.key").read_text()
    result = run("keys", "rotate", "--kms-key-id", "arn:aws:kms:eu-west-1:1:key/x", "--settle", "0", env=env)
    assert result.returncode == 1 and result.stderr.startswith("Error: a KMS key id only applies"), result.stderr
    assert (tmp_path / "master.key").read_text() == keyring
    assert [v["version"] for v in json.loads(run("keys", "status", "--json", env=env).stdout)["versions"]] == [1]
