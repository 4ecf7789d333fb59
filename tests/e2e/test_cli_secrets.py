"""The CLI never repeats a secret typed into the wrong place, nor one it cannot send: each case is one line of
`Error: …` that names the option or field, not the value, and never the report of an unexpected error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import Server, cli_in_process, unique

CANARY = "S3CRET-CANARY-456"


def assert_refused_cleanly(result: subprocess.CompletedProcess[str], expected: str, secret: str = CANARY) -> None:
    """One `Error:` line holding `expected`, without `secret`, and no crash report."""
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ") and expected in result.stderr, result.stderr
    assert secret not in result.stderr and secret not in result.stdout
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_token_that_cannot_be_sent_is_refused_unquoted(sqlite_server: Server) -> None:
    token = f"sr_tökén-{CANARY}"
    result = sqlite_server.cli("credentials", "list", env={"STRONGROOM_API_TOKEN": token}, check=False)
    assert_refused_cleanly(result, "the API token contains a character that cannot be sent")


def test_an_unencodable_password_names_the_field(sqlite_server: Server) -> None:
    env = {"STRONGROOM_API_TOKEN": sqlite_server.new_user("enc")}
    args = ("credentials", "create", "basic", "--name", unique("enc"), "--user", "u")
    result = sqlite_server.cli(*args, "--password", f"x{CANARY}\udcff", env=env, check=False)
    assert_refused_cleanly(result, "field 'password' contains a character that cannot be encoded")


def test_an_unencodable_json_value_names_the_field(sqlite_server: Server, tmp_path: Path) -> None:
    env = {"STRONGROOM_API_TOKEN": sqlite_server.new_user("enc")}
    source = tmp_path / "basic.json"
    source.write_text(json.dumps({"name": unique("enc"), "user": "u", "password": f"{CANARY}-\ud800"}))
    result = sqlite_server.cli("credentials", "create", "basic", "--from-json", str(source), env=env, check=False)
    assert_refused_cleanly(result, "field 'password' contains a character that cannot be encoded")


def test_a_key_given_where_a_file_was_expected_is_not_repeated(tmp_path: Path) -> None:
    key = json.dumps({"type": "service_account", "private_key": CANARY})
    env = {"STRONGROOM_ENDPOINT": "http://127.0.0.1:9/api/v2", "STRONGROOM_API_TOKEN": "sr_x"}
    result = cli_in_process(["credentials", "create", "gcp", "--name", "g", "--gcp-key", key], env=env)
    assert_refused_cleanly(result, "cannot read the file given to --gcp-key: no such file or directory")
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = cli_in_process(["credentials", "create", "basic", "--name", "b", "--from-json", str(bad)], env=env)
    assert_refused_cleanly(result, "the file given to --from-json must hold a JSON object", secret=str(bad))


def test_a_secret_given_as_a_field_name_is_not_repeated(sqlite_server: Server, tmp_path: Path) -> None:
    env = {"STRONGROOM_API_TOKEN": sqlite_server.new_user("set")}
    name = unique("set")
    sqlite_server.cli("credentials", "create", "basic", "--name", name, "--user", "u", "--password", "p", env=env)
    result = sqlite_server.cli("credentials", "update", name, "--set", f"{CANARY}-G", env=env, check=False)
    assert_refused_cleanly(result, "--set names a field that credential type 'basic' does not have")
    typo = sqlite_server.cli("credentials", "update", name, "--set", "pasword=x", env=env, check=False)
    assert_refused_cleanly(typo, "(did you mean password?)", secret="pasword")
    source = tmp_path / "update.json"
    source.write_text(json.dumps({CANARY: "x"}))
    from_json = sqlite_server.cli("credentials", "update", name, "--from-json", str(source), env=env, check=False)
    assert_refused_cleanly(from_json, "--from-json names a field")


def test_a_missing_token_is_asked_for_in_the_environment_not_on_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "none.yaml"
    config.write_text("{}\n")
    env = {"STRONGROOM_ENDPOINT": "http://127.0.0.1:9/api/v2", "STRONGROOM_CONFIG_FILE": str(config)}
    for args in (["credentials", "list"], ["users", "list", "--endpoint", "http://127.0.0.1:9/api/v2"]):
        result = cli_in_process(args, env=env)
        assert result.returncode == 1 and "set STRONGROOM_API_TOKEN" in result.stderr, result.stderr
        assert "--token" not in result.stderr


def test_a_passphrase_given_where_its_file_was_expected_is_not_repeated(tmp_path: Path) -> None:
    env = {"STRONGROOM_DATA_DIR": str(tmp_path / "store")}
    assert cli_in_process(["init"], env=env).returncode == 0
    result = cli_in_process(["backup", str(tmp_path / "x.srb"), "--passphrase-file", CANARY], env=env)
    assert_refused_cleanly(result, "cannot read the file given to --passphrase-file: no such file or directory")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = cli_in_process(["backup", str(tmp_path / "y.srb"), "--passphrase-file", str(empty)], env=env)
    assert_refused_cleanly(result, "the file given to --passphrase-file is empty")


def test_json_nested_past_the_readers_depth_is_refused_in_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    env = {"STRONGROOM_ENDPOINT": "http://127.0.0.1:9/api/v2", "STRONGROOM_API_TOKEN": "sr_x"}
    result = cli_in_process(["credentials", "create", "basic", "--name", "b", "--from-json", str(deep)], env=env)
    assert_refused_cleanly(result, "the file given to --from-json nests JSON deeper than this reader follows")
