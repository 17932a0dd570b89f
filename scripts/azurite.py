"""Start Azurite (installed by `make setup` into node_modules/) on loopback, run a command
against it, and stop it whatever the outcome.

    python -m scripts.azurite run [--default-ports] [--location DIR] -- COMMAND...

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
    default_ports: bool = False,
    ports: dict[str, int] | None = None,
    timeout: float = 60,
    cert: Path | None = None,
    key: Path | None = None,
    oauth: str | None = None,
) -> Azurite:
    """Start Azurite with its data in ``location``. Ports: ``ports`` if given (blob, queue,
    table), the defaults with ``default_ports``, else free ones. ``cert`` and ``key`` (PEM
    files) serve HTTPS; ``oauth="basic"`` then also takes bearer tokens, checking their
    audience, issuer and lifetime but not their signature."""
    if not BINARY.exists():
        raise SystemExit(f"{BINARY} is missing: run `make setup` (npm installs Azurite there)")
    location.mkdir(parents=True, exist_ok=True)
    args = [str(BINARY), "--location", str(location), "--disableTelemetry", "--skipApiVersionCheck"]
    if cert and key:
        args += ["--cert", str(cert), "--key", str(key)]
    if oauth:
        args += ["--oauth", oauth]
    for service in ("blob", "queue", "table"):
        port = (ports or {}).get(service, DEFAULT_PORTS[service] if default_ports else 0)
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.azurite")
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="start Azurite, run COMMAND, stop Azurite")
    run.add_argument(
        "--default-ports",
        action="store_true",
        help="10000-10002, as UseDevelopmentStorage=true expects",
    )
    run.add_argument("--location", type=Path, help="data folder (default: a temporary one)")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")

    if args.default_ports and _listening(DEFAULT_PORTS["blob"]):
        print(
            "azurite: something already listens on 127.0.0.1:10000; "
            "using it as the storage emulator"
        )
        return _run(command, dict(os.environ))

    with tempfile.TemporaryDirectory(prefix="mlfn-azurite-") as tmp:
        location = args.location or Path(tmp) / "data"
        azurite = start(location, Path(tmp) / "azurite.log", default_ports=args.default_ports)
        print(
            f"azurite: blob on 127.0.0.1:{azurite.blob_port}, "
            f"queue on 127.0.0.1:{azurite.queue_port}",
            flush=True,
        )
        try:
            return _run(command, {**os.environ, **azurite.env()})
        finally:
            azurite.stop()


def _run(command: list[str], env: dict[str, str]) -> int:
    """Run the command to its end; SIGINT and SIGTERM sent to this runner are passed on to it."""
    child = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
