"""The HTML report as a browser shows it: headless Chromium's screenshot, kept in
build/test-output/drift-report.png for a person to look at."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import main
from tests.drift.records import traffic, write_reference

OUTPUT = Path(__file__).resolve().parents[2] / "build" / "test-output" / "drift-report.png"
INSTALL = "apt-get install -y chromium (as root; make frameworks-setup does it)"


def pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (still filtered) scanlines of a PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, width, height, data = 8, 0, 0, b""
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            data += body
        at += 12 + length
    return width, height, zlib.decompress(data)


def test_the_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip(f"no chromium to render the report: {INSTALL}")
    reference = write_reference(tmp_path / "train.parquet")
    traffic(tmp_path / "logs", seed=40, n=3000, shift_width=0.3)
    report = tmp_path / "drift-iris.html"
    result = CliRunner().invoke(
        main,
        ["drift", "iris", "--reference", str(reference), "--logs", str(tmp_path / "logs"),
         "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output

    shot = tmp_path / "drift-report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,2000", report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip

    width, height, lines = pixels(shot.read_bytes())
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, OUTPUT)
    print(f"screenshot of the drift report: {OUTPUT}")
    assert (width, height) == (1200, 2000)
    # A PNG's scanlines are filtered: a byte is a pixel's difference from its neighbours, so a
    # blank page is zeros but for its first line; text, table and bars make the others.
    changes = len(lines) - lines.count(0)
    assert changes > 0.005 * len(lines), f"the screenshot is blank ({changes} changes)"
