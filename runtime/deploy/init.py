"""``mlfn init DIR``: a new app folder that passes ``mlfn check`` and serves with ``mlfn serve``:
host.json, function_app.py, requirements.txt naming this mlfn, local settings for Azurite,
.funcignore, .gitignore, a README and one example endpoint with its model."""

from __future__ import annotations

from pathlib import Path
from string import Template

from runtime.config import Settings
from runtime.deploy import example_model
from runtime.errors import ScaffoldError
from runtime.version import package_version

EXAMPLE = "example"
EXAMPLE_MODEL = Path("models") / "example.onnx"
# template file -> the file it becomes in the new app
FILES = {
    "host.json": "host.json",
    "function_app.py.tmpl": "function_app.py",
    "requirements.txt.tmpl": "requirements.txt",
    "local.settings.json.tmpl": "local.settings.json",
    "funcignore": ".funcignore",
    "gitignore": ".gitignore",
    "README.md.tmpl": "README.md",
}


def app_templates() -> Path:
    """The ``app`` scaffold shipped with mlfn."""
    from runtime.scaffold import TEMPLATES_DIR

    return TEMPLATES_DIR / "app"


def mlfn_requirement() -> str:
    version = package_version()
    return f"mlfn=={version}" if version != "0" else "mlfn"


def init_app(target: Path, with_example: bool = True) -> list[Path]:
    """Write a new app into ``target`` (created if missing; refused if it has any of the files
    already). Returns the files written."""
    clashes = [name for name in FILES.values() if (target / name).exists()]
    if (target / "functions").exists():
        clashes.append("functions/")
    if clashes:
        raise ScaffoldError(f"{target} already has {', '.join(clashes)}: not overwriting")
    templates = app_templates()
    values = {"mlfn_requirement": mlfn_requirement(), "app_name": target.resolve().name}
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source, name in FILES.items():
        text = (templates / source).read_text()
        if source.endswith(".tmpl"):
            text = Template(text).substitute(values)
        (target / name).write_text(text)
        written.append(target / name)
    (target / "functions").mkdir()
    (target / "functions" / "__init__.py").write_text("")
    if with_example:
        written.extend(_example(target))
    return written


def _example(target: Path) -> list[Path]:
    from runtime.scaffold import render_tensor_endpoint

    model = target / EXAMPLE_MODEL
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(example_model.build())
    endpoint = render_tensor_endpoint(
        EXAMPLE, f"./{EXAMPLE_MODEL.as_posix()}", target, Settings.from_mapping({})
    )
    return [model, endpoint]
