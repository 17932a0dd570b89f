"""Start Azurite (installed by `make setup` into node_modules/) on loopback, run a command
against it, and stop it whatever the outcome.

    python -m scripts.azurite run [--prefer-default-ports] [--location DIR] -- COMMAND...

Ports: free ones; with ``--prefer-default-ports`` 10000-10002 (what ``UseDevelopmentStorage=true``
means) when all three are free, else free ones, said in a line with the ``export`` another
terminal needs; ``AZURITE_PORTS=BLOB,QUEUE,TABLE`` asks for exactly those. An emulator this
script did not start is never used: whatever listens on a port was put there by someone else.

The command gets ``AzureWebJobsStorage`` (a connection string with the actual ports),
``AZURITE_BLOB_PORT``, ``AZURITE_QUEUE_PORT`` and ``AZURITE_LOG`` (Azurite's
access log: one line per request, which tests use to count downloads).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public; it only opens the local emulator).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}
_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at https?://[\d.]+:(\d+)"
)


def connection_string(blob_port: int, queue_port: int, scheme: str = "http") -> str:
    return (
        f"DefaultEndpointsProtocol={scheme};AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={scheme}://127.0.0.1:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint={scheme}://127.0.0.1:{queue_port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    log_path: Path
    scheme: str = "http"

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.scheme)

    def env(self) -> dict[str, str]:
        return {
            "AzureWebJobsStorage": self.connection_string,
            "AZURITE_BLOB_PORT": str(self.blob_port),
            "AZURITE_QUEUE_PORT": str(self.queue_port),
            "AZURITE_LOG": str(self.log_path),
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(
    location: Path,
    log_path: Path,
    *,
    ports: dict[str, int] | None = None,
    timeout: float = 60,
    cert: Path | None = None,
    key: Path | None = None,
    oauth: str | None = None,
) -> Azurite:
    """Start Azurite with its data in ``location``. Ports: ``ports`` if given (blob, queue,
    table), else free ones. ``cert`` and ``key`` (PEM files) serve HTTPS; ``oauth="basic"``
    then also takes bearer tokens, checking their audience, issuer and lifetime but not their
    signature."""
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: `make serve` or `make test` installs it (npm ci)")
    location.mkdir(parents=True, exist_ok=True)
    args = [str(BINARY), "--location", str(location), "--disableTelemetry", "--skipApiVersionCheck"]
    if cert and key:
        args += ["--cert", str(cert), "--key", str(key)]
    if oauth:
        args += ["--oauth", oauth]
    for service in ("blob", "queue", "table"):
        port = (ports or {}).get(service, 0)
        args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = dict(_LISTENING.findall(log_path.read_text(errors="replace")))
        if {"Blob", "Queue", "Table"} <= ports.keys():
            scheme = "https" if cert else "http"
            return Azurite(process, int(ports["Blob"]), int(ports["Queue"]), log_path, scheme)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit(f"Azurite did not start; its output:\n{log_path.read_text(errors='replace')}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:PORT (and it can be bound)."""
    with socket.socket() as s:
        # As servers bind: a closed connection's TIME-WAIT (a minute after a stop) is no owner.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not _listening(port)


def choose_ports(requested: str | None, prefer_defaults: bool) -> tuple[dict[str, int] | None, str]:
    """The ports to start Azurite on (None: free ones) and a line saying why, if any.
    ``requested`` is AZURITE_PORTS ("BLOB,QUEUE,TABLE"). Raises SystemExit with one line when
    the requested ports are malformed or taken."""
    if requested:
        try:
            blob, queue, table = (int(p) for p in requested.split(","))
        except ValueError:
            raise SystemExit(
                f"azurite: AZURITE_PORTS={requested!r} must be three ports, BLOB,QUEUE,TABLE "
                "(say 20000,20001,20002)"
            ) from None
        ports = {"blob": blob, "queue": queue, "table": table}
        taken = [f"{port} ({name})" for name, port in ports.items() if not _free(port)]
        if taken:
            raise SystemExit(
                f"azurite: AZURITE_PORTS asks for {', '.join(taken)}, already in use on "
                "127.0.0.1: choose other ports, or leave AZURITE_PORTS unset for free ones"
            )
        return ports, ""
    if not prefer_defaults:
        return None, ""
    taken = [port for port in DEFAULT_PORTS.values() if not _free(port)]
    if not taken:
        return dict(DEFAULT_PORTS), ""
    return None, (
        f"azurite: 127.0.0.1:{taken[0]} is already in use (by something this did not start, "
        "so nothing is written there): starting Azurite on free ports instead"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.azurite")
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="start Azurite, run COMMAND, stop Azurite")
    run.add_argument(
        "--prefer-default-ports",
        action="store_true",
        help="10000-10002, as UseDevelopmentStorage=true expects, when they are free",
    )
    run.add_argument("--location", type=Path, help="data folder (default: a temporary one)")
    run.add_argument(
        "--app-port",
        type=int,
        help="the port COMMAND will serve on: refused before anything starts when it is taken",
    )
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")

    if args.app_port is not None and not _free(args.app_port):
        raise SystemExit(
            f"127.0.0.1:{args.app_port} is already in use: stop what listens there, or serve "
            f"on another port (PORT={args.app_port + 1} make serve)"
        )
    ports, why = choose_ports(os.environ.get("AZURITE_PORTS"), args.prefer_default_ports)
    if why:
        print(why, flush=True)
    with tempfile.TemporaryDirectory(prefix="mlfn-azurite-") as tmp:
        location = args.location or Path(tmp) / "data"
        azurite = start(location, Path(tmp) / "azurite.log", ports=ports)
        print(
            f"azurite: blob on 127.0.0.1:{azurite.blob_port}, "
            f"queue on 127.0.0.1:{azurite.queue_port}",
            flush=True,
        )
        if args.prefer_default_ports and (azurite.blob_port, azurite.queue_port) != (
            DEFAULT_PORTS["blob"],
            DEFAULT_PORTS["queue"],
        ):
            # local.settings.json says UseDevelopmentStorage=true (10000-10002): the mlfn
            # commands of another terminal read this variable first.
            print(
                "azurite: for mlfn commands in another terminal: "
                f"export AzureWebJobsStorage='{azurite.connection_string}'",
                flush=True,
            )
        try:
            return _run(command, {**os.environ, **azurite.env()})
        finally:
            azurite.stop()


def _run(command: list[str], env: dict[str, str]) -> int:
    """Run the command to its end in this runner's process group (the terminal's: it may read
    it, and a hang-up reaches it). A Ctrl-C signals the whole group, so the command has its
    SIGINT from the terminal and the runner passes none on: a second one is uvicorn's "force
    quit", answered with a traceback. SIGTERM sent to the runner is passed on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # before the child exists: no window
    child = subprocess.Popen(
        command, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
