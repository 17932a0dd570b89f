"""The Functions entry point: one FunctionApp built from the endpoints in functions/."""

from pathlib import Path

from runtime import build_app

app = build_app(Path(__file__).parent / "functions")
