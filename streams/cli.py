"""The `xlrec` command line. Each command group lives in its own module and imports
heavy libraries inside its commands, so `xlrec --help` stays fast."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from encoders import cli as encoder_cli
from streams.ops import dlq_cli, kafka_cli, lag_cli
from streams.sdk import cli as sdk_cli
from streams.sdk import forget_cli
from streams.tools import bench_pipeline, bench_scale, evaluate_cli
from streams.worker import cli as worker_cli

# Invalid XLREC_* settings: distinct from 1 (a runtime error such as an unreachable broker).
EXIT_BAD_SETTINGS = 2


class XlrecGroup(TyperGroup):
    """The root command: invalid settings, met by any command, end it with one line per bad
    variable and exit status 2 instead of a pydantic traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context is private
        from pydantic import ValidationError

        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            from rich.markup import escape

            from streams.contracts.settings import describe_settings_error
            from streams.sdk.cli import console

            for line in describe_settings_error(exc):
                console.print(f"[bold red]error:[/] {escape(line)}", highlight=False)
            raise typer.Exit(EXIT_BAD_SETTINGS) from None


app = typer.Typer(help="xlrec: streaming multilingual recommender.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=XlrecGroup)
bench_app = typer.Typer(help="Benchmarks that print numbers and write JSON.", no_args_is_help=True)

sdk_cli.register(app)
sdk_cli.tail_app.command("dlq")(dlq_cli.tail_dlq)
app.add_typer(dlq_cli.dlq_app, name="dlq")
app.command("worker")(worker_cli.worker)
app.command("lag")(lag_cli.lag)
app.command("forget")(forget_cli.forget)
app.command("dashboard")(lag_cli.dashboard)
app.add_typer(bench_app, name="bench")
app.add_typer(encoder_cli.app, name="encoder")
bench_app.command("encoder")(encoder_cli.bench_encoder)
bench_app.command("pipeline")(bench_pipeline.bench_pipeline)
bench_app.command("scale")(bench_scale.bench_scale)
app.add_typer(kafka_cli.app, name="kafka")
app.command("evaluate")(evaluate_cli.evaluate)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
