"""scripts/azurite.py, as `make serve` and `make test` run it: which ports, and never an
emulator it did not start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from scripts import azurite
from tests.support import ROOT

PRINT_CONNECTION = "import os; print('CONNECTION', os.environ['AzureWebJobsStorage'])"

# Several tests here take 127.0.0.1:10000 or ask whether it is free: in two pytest-xdist
# workers at once, one's listener made the other's fixture stand down and its script find the
# port free a moment later. One worker runs them all, in turn.
pytestmark = pytest.mark.xdist_group("azurite-default-ports")


@pytest.fixture
def port_10000_taken() -> Iterator[socket.socket | None]:
    """Something that is not Azurite listening on 127.0.0.1:10000 (None: something else
    listens there for good)."""
    listener = socket.socket()
    # As servers bind: a connection of an emulator stopped on 10000 lingers in TIME-WAIT, which
    # would fail a plain bind while the script, binding as servers do, finds the port free.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(50):  # a listener of a moment (a test's, in another process) goes away
        try:
            listener.bind(("127.0.0.1", azurite.DEFAULT_PORTS["blob"]))
            break
        except OSError:
            time.sleep(0.1)
    else:
        listener.close()
        yield None
        return
    listener.listen()
    listener.setblocking(False)
    try:
        yield listener
    finally:
        listener.close()


def _run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.azurite", "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_with_10000_taken_serve_starts_its_own_azurite_on_other_ports(
    port_10000_taken: socket.socket | None,
) -> None:
    done = _run_script("--prefer-default-ports", "--", sys.executable, "-c", PRINT_CONNECTION)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "127.0.0.1:10000 is already in use" in done.stdout
    (connection,) = [line for line in done.stdout.splitlines() if line.startswith("CONNECTION")]
    assert "127.0.0.1:10000/" not in connection
    # The line another terminal needs to reach the emulator that was started.
    assert f"export AzureWebJobsStorage='{connection.removeprefix('CONNECTION ')}'" in done.stdout
    if port_10000_taken is not None:
        with pytest.raises(BlockingIOError):
            port_10000_taken.accept()  # nothing was sent to the stranger on 10000


def test_requested_ports_that_are_taken_stop_with_one_line(
    port_10000_taken: socket.socket | None,
) -> None:
    env = {"PATH": "/usr/bin:/bin", "AZURITE_PORTS": "10000,10001,10002"}

    done = _run_script("--", sys.executable, "-c", "print('ran')", env=env)

    assert done.returncode != 0
    assert "ran" not in done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("azurite: AZURITE_PORTS asks for 10000 (blob)")
    assert line.endswith("choose other ports, or leave AZURITE_PORTS unset for free ones")


def test_malformed_requested_ports_are_refused() -> None:
    with pytest.raises(SystemExit, match="must be three ports"):
        azurite.choose_ports("10000,10001", prefer_defaults=True)


def test_free_defaults_are_preferred_and_plain_runs_take_free_ports() -> None:
    assert azurite.choose_ports(None, prefer_defaults=False) == (None, "")
    ports, why = azurite.choose_ports(None, prefer_defaults=True)
    if all(azurite._free(p) for p in azurite.DEFAULT_PORTS.values()):
        assert (ports, why) == (azurite.DEFAULT_PORTS, "")
    else:
        assert ports is None and "already in use" in why


def test_a_taken_app_port_stops_serve_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        done = _run_script("--app-port", str(port), "--", sys.executable, "-c", "print('ran')")

    assert done.returncode != 0
    assert "ran" not in done.stdout and "azurite:" not in done.stdout
    assert done.stderr.strip() == (
        f"127.0.0.1:{port} is already in use: stop what listens there, or serve on another "
        f"port (PORT={port + 1} make serve)"
    )


def test_a_port_left_in_time_wait_counts_as_free() -> None:
    with socket.socket() as server:
        # As Node (libuv) binds Azurite's ports; Linux lets a bind over TIME-WAIT when both ask.
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its port waits in TIME-WAIT
        client.close()

    assert azurite._free(port)


COUNT_SIGINTS = """
import signal, sys, time
seen = []
signal.signal(signal.SIGINT, lambda *_: seen.append(1))
print("ready", flush=True)
deadline = time.monotonic() + 60
while not seen and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(1)  # room for a second one
print("SIGINTS", len(seen), flush=True)
"""


def test_a_ctrl_c_reaches_the_command_once() -> None:
    """A terminal's Ctrl-C signals its whole process group; uvicorn takes a second SIGINT for
    "force quit" and answers with a traceback."""
    with subprocess.Popen(
        [sys.executable, "-m", "scripts.azurite", "run", "--", sys.executable, "-c", COUNT_SIGINTS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job
    ) as runner:
        assert runner.stdout is not None
        for line in runner.stdout:
            if line.startswith("ready"):
                break
        os.killpg(runner.pid, signal.SIGINT)
        rest = runner.stdout.read()
    assert "SIGINTS 1" in rest, rest
