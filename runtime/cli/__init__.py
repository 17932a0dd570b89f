"""The ``mlfn`` command line: the group and its error shell here, the commands by what they
work on (``local``: the app folder and models; ``calls``: a running app's endpoints;
``batch_files``, ``spark_score``; deploy and convert in their own packages)."""

from __future__ import annotations

from typing import Any

import click


class _Commands(click.Group):
    """mlfn's commands; a file one of them cannot read or write is one line naming it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.filename is None:  # not about a file a person named: a bug, with its trace
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror or exc}") from None


@click.group(cls=_Commands)
@click.version_option(package_name="mlfn")
def main() -> None:
    """mlfn: ONNX models and predict functions as Azure Functions endpoints."""
    from runtime import redact

    # The client commands log storage URLs and connection errors too (a SAS among them).
    redact.install_in_logging()


def _add_commands() -> None:
    from runtime.cli import batch_files, calls, drift, local, releases, spark_score
    from runtime.convert.command import convert
    from runtime.deploy import commands

    for command in (
        local.serve,
        local.new,
        local.upload,
        releases.release_group,
        calls.invoke,
        calls.enqueue,
        calls.results,
        spark_score.spark_score,
        batch_files.batch,
        drift.drift,
        commands.init,
        commands.check,
        commands.pack,
        commands.publish,
        commands.kube,
        convert,
    ):
        main.add_command(command)


_add_commands()
