"""The `xlrec` command line. Each command group lives in its own module and imports
heavy libraries inside its commands, so `xlrec --help` stays fast."""

from __future__ import annotations

import typer

from encoders import cli as encoder_cli
from streams.ops import kafka_cli, lag_cli
from streams.sdk import cli as sdk_cli
from streams.tools import bench_pipeline, bench_scale, evaluate_cli
from streams.worker import cli as worker_cli

app = typer.Typer(help="xlrec: streaming multilingual recommender.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
bench_app = typer.Typer(help="Benchmarks that print numbers and write JSON.", no_args_is_help=True)

sdk_cli.register(app)
app.command("worker")(worker_cli.worker)
app.command("lag")(lag_cli.lag)
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
