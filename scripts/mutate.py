"""`make mutate`: mutation testing (mutmut) of the modules whose mistakes cost most, each
against its own focused tests, with a score per module.

mutmut reads one ``[tool.mutmut]`` section and mutates in ``mutants/`` beside it, so each
group runs in a folder of its own under build/mutate/ (git-ignored): the repository's
``[tool.mutmut]`` and pytest settings, plus the group's files and tests. Temporary files go
there too (TMPDIR), and the folder is removed after, its scores and survivors printed.

    python -m scripts.mutate [GROUP ...]    (Azurite running: `make mutate` starts it)
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutate"
# What the tests import besides runtime/ and tests/ (mutmut copies those two itself).
LINKED = ("runtime", "tests", "scripts", "functions", "function_app.py", "host.json")
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


@dataclass(frozen=True)
class Group:
    name: str
    files: tuple[str, ...]
    tests: tuple[str, ...]
    # mutmut's mutant names to run (fnmatch), when only part of a file is the group's.
    mutants: tuple[str, ...] = ()
    # Tests that start `mlfn serve` in a subprocess, which imports the unmutated runtime/.
    deselect: tuple[str, ...] = field(default=())


GROUPS = (
    Group(
        "redact",
        ("runtime/redact.py",),
        ("tests/test_secrets.py", "tests/telemetry/test_redaction.py"),
        deselect=(
            "tests/test_secrets.py::test_keys_and_signatures_stay_out_of_logs_bodies_and_documents",
            "tests/test_secrets.py::test_the_host_never_logs_a_key_it_accepted_from_the_query",
            "tests/test_secrets.py::test_processes_that_never_register_the_app_redact_their_logs_too",
        ),
    ),
    Group("v1", ("runtime/protocol/v1.py",), ("tests/protocol/test_v1.py",)),
    Group("v2", ("runtime/protocol/v2.py",), ("tests/protocol/test_v2.py",)),
    Group(
        "queue-codec",
        ("runtime/protocol/message_encoding.py", "runtime/protocol/jobs.py"),
        (
            "tests/protocol/test_jobs.py",
            "tests/protocol/test_message_encoding.py",
            "tests/services/test_jobs.py",
        ),
    ),
    Group(
        "predict-limits",
        ("runtime/services/predict.py",),
        ("tests/services/test_predict.py", "tests/triggers/test_http.py"),
        mutants=("runtime.services.predict.*decode*",),
    ),
    Group(
        "cache-verification",
        ("runtime/models/cache.py",),
        ("tests/models/test_cache.py", "tests/models/test_registry.py"),
        mutants=tuple(
            f"runtime.models.cache.*{name}__mutmut_*"
            for name in ("_verified", "_hit", "_well_formed", "_check_digest", "not_private")
        ),
        deselect=("tests/models/test_cache.py::test_worker_processes_on_one_machine_share",),
    ),
    Group(
        "queue-settle",
        ("runtime/host/queue_listener.py",),
        ("tests/host/test_queue_settle.py", "tests/host/test_queue_leases.py"),
        # mutmut names a method xǁClassǁname; "?" stands for the separator.
        mutants=(
            *(
                f"runtime.host.queue_listener.x?QueueListener?{name}__mutmut_*"
                for name in ("_process", "_settle", "_poison")
            ),
            "runtime.host.queue_listener.x?Lease?*__mutmut_*",
            "runtime.host.queue_listener.x_receive__mutmut_*",
        ),
    ),
)


def _toml(table: str, values: dict[str, object]) -> str:
    # JSON's strings, lists, numbers and booleans are TOML's too.
    return f"[{table}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def _workspace(group: Group) -> Path:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    here = WORK / group.name
    shutil.rmtree(here, ignore_errors=True)
    (here / "tmp").mkdir(parents=True)
    for name in LINKED:
        (here / name).symlink_to(ROOT / name)
    deselected = [arg for test in group.deselect for arg in ("--deselect", test)]
    mutmut = {
        **project["mutmut"],
        "only_mutate": list(group.files),
        "pytest_add_cli_args_test_selection": [*group.tests, *deselected],
    }
    (here / "pyproject.toml").write_text(
        _toml("tool.pytest.ini_options", project["pytest"]["ini_options"])
        + _toml("tool.mutmut", mutmut)
    )
    return here


def _mutmut(here: Path, env: dict[str, str], *args: str) -> str:
    """What ``mutmut ARGS`` prints, run in the group's folder."""
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=here, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def _results(here: Path, env: dict[str, str]) -> dict[str, str]:
    listed = _mutmut(here, env, "results", "--all", "true")
    return dict(re.findall(r"^\s+(\S+): (.+)$", listed, re.MULTILINE))


def run_group(group: Group) -> tuple[Counter[str], dict[str, str], float]:
    """Mutate one group; its statuses counted, and the diff of every surviving mutant."""
    here = _workspace(group)
    env = {**os.environ, "TMPDIR": str(here / "tmp")}
    started = time.monotonic()
    try:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", "2", *group.mutants],
            cwd=here, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        statuses = {
            name: status
            for name, status in _results(here, env).items()
            if not group.mutants or any(fnmatch.fnmatch(name, p) for p in group.mutants)
        }
        survivors = {
            name: _mutmut(here, env, "show", name)
            for name, status in sorted(statuses.items())
            if status not in KILLED
        }
    finally:
        shutil.rmtree(here, ignore_errors=True)
    return Counter(statuses.values()), survivors, time.monotonic() - started


def main(names: list[str]) -> int:
    chosen = [g for g in GROUPS if not names or g.name in names]
    if unknown := set(names) - {g.name for g in GROUPS}:
        sys.exit(f"unknown groups {sorted(unknown)}; known: {[g.name for g in GROUPS]}")
    rows = []
    for group in chosen:
        print(f"==> {group.name}: {', '.join(group.files)}", flush=True)
        counts, survivors, took = run_group(group)
        for name, diff in survivors.items():
            print(f"--- not killed: {name}\n{diff}")
        total = sum(counts.values())
        killed = sum(n for status, n in counts.items() if status in KILLED)
        rows.append((group.name, killed, total, dict(counts), took))
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"\n{'group':<20} {'score':>7} {'killed':>13}  {'seconds':>7}  statuses")
    for name, killed, total, counts, took in rows:
        score = f"{100 * killed / total:.0f}%" if total else "-"
        print(f"{name:<20} {score:>7} {f'{killed}/{total}':>13}  {took:>7.0f}  {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
