"""What a test needs from the machine, asked for in one place so that nothing passes in CI by not running.

Locally a missing tool or capability skips the test with what to install or enable. Under CI
(`CI=true`, as `.ci/run` and hosted CI set it) the same words fail the test instead.

Tests that need a user without root's powers (root reads and writes through chmod) run their check
in a forked child that has dropped to the user nobody when the suite runs as root, as it does in CI.
A fork, not a new interpreter: the child needs no access to the Python or the checkout, which may
sit in root's private home, only to the folder it is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

UNPRIVILEGED_USER = "nobody"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(what: str, fix: str) -> NoReturn:
    """Skip locally, fail under CI: `what` is missing here; `fix` says how to provide it."""
    __tracebackhide__ = True  # the report names the test's line, not this one
    message = f"{what}; {fix}"
    if in_ci():
        pytest.fail(f"CI=true, so this test must run: {message}", pytrace=False)
    pytest.skip(message)


def require_tool(tool: str, install: str) -> str:
    """The tool's path on PATH; without it, `unavailable` with how to install it."""
    __tracebackhide__ = True
    path = shutil.which(tool)
    if path is None:
        unavailable(f"{tool} is not on PATH", install)
    return path


def _drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _clear_folder(folder: Path) -> None:
    """Remove a folder whose check may have left parts of it read-only."""
    for root, dirs, _files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
    shutil.rmtree(folder)


def as_unprivileged_user(check: Callable[[Path], None]) -> None:
    """Run check(folder) as a user without root's powers, in an empty folder that user owns.

    Not root: in this process. Root: in a forked child that has dropped to the user nobody; a
    failing assertion there fails the test with the child's traceback."""
    folder = Path(tempfile.mkdtemp(prefix="stride-unprivileged-"))
    try:
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            check(folder)
            return
        import pwd  # POSIX only, and only root gets here

        try:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError:
            unavailable(f"there is no user '{UNPRIVILEGED_USER}' to run this check as", "add one: useradd nobody")
        os.chown(folder, user.pw_uid, user.pw_gid)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os.close(read_end)
            status = 1
            try:
                _drop_to(user.pw_uid, user.pw_gid)
                check(folder)
                status = 0
            except BaseException:  # an assertion, pytest.raises' Failed, anything: report it
                os.write(write_end, traceback.format_exc().encode())
            finally:
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            report = reader.read().decode(errors="replace")
        _, wait_status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(wait_status) != 0:
            pytest.fail(f"as the user {UNPRIVILEGED_USER} (uid {user.pw_uid}):\n{report}", pytrace=False)
    finally:
        _clear_folder(folder)
