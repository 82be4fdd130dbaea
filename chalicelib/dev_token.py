"""The development token: what `make run`, `make demo`, `make local` and a bare `chalice local` accept
when API_TOKENS is not set. Created once per checkout and kept in its local data directory
(chalicelib/local_data.py), outside the project folder that `chalice local` watches.

`python -m chalicelib.dev_token` prints it (creating it if needed): `TOKEN=$(.venv/bin/python -m chalicelib.dev_token)`.
"""
from __future__ import annotations

import os
import pathlib
import secrets
import typing

from chalicelib import local_data

OWNER = "dev"  # the owner name of the jobs submitted with it
STAGE_VARIABLE = "DEV_TOKEN_STAGE"  # set by the dev stage of .chalice/config.json, by no other stage


def path() -> pathlib.Path:
    return local_data.directory() / "dev-token"


def read_or_create() -> str:
    """The checkout's token; the first call creates it, readable by its owner only."""
    token_file = path()
    if token_file.exists():
        return token_file.read_text().strip()
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    try:
        descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return token_file.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


def install(environ: typing.MutableMapping[str, str]) -> str:
    """Make the token the only API token of this process and of the children it starts."""
    token = read_or_create()
    environ["API_TOKENS"] = f"{OWNER}:{token}"
    return token


def install_under_chalice_local(environ: typing.MutableMapping[str, str], argv: list[str]) -> str | None:
    """`chalice local` without API_TOKENS serves with the development token, as `make run` does.

    Only there: the process is the Chalice CLI (AWS_CHALICE_CLI_MODE, set by the CLI and never in
    Lambda) running `local`, on a stage whose variables include DEV_TOKEN_STAGE (the dev stage only:
    `chalice local --stage prod`, `chalice package` and Lambda never create one).
    """
    if environ.get("API_TOKENS") or not environ.get(STAGE_VARIABLE):
        return None
    if environ.get("AWS_CHALICE_CLI_MODE") != "true" or chalice_command(argv) != "local":
        return None
    token = install(environ)
    print(f"development token (API_TOKENS was not set): {token}", flush=True)
    return token


def chalice_command(argv: list[str]) -> str | None:
    """The command of a `chalice [--debug] [--project-dir DIR] COMMAND ...` command line."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "--project-dir":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


if __name__ == "__main__":
    print(read_or_create())
