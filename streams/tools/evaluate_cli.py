"""`xlrec evaluate`: the prequential evaluation from the command line. The files are read
here (streams.tools.event_files); `ranking.evaluate` replays the events it is given."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Annotated

import typer


def evaluate(
    events: Annotated[Path, typer.Option("--events", help="Steam TSV(.gz) or JSON lines of click/review events",
                                         exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, report.md and plots")],
    items: Annotated[Path | None, typer.Option("--items", help="games.tsv (item_id, title) or JSON lines of ItemEvents",
                                               exists=True, dir_okay=False)] = None,
    eval_from: Annotated[float | None, typer.Option("--eval-from", help="Evaluate events from this unix ts on")] = None,
    models: Annotated[str, typer.Option("--models", help="Comma-separated models")] =
        "popularity,recent_popularity,cooccurrence,biased_mf,content,xlrec",
    limit: Annotated[int | None, typer.Option("--limit", help="Read only the first N events")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice")] = 0,
    encoder: Annotated[str, typer.Option("--encoder", help="onnx (the default encoder) or none")] = "onnx",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Token budget per review text")] = 128,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Replay as a consumer group of N workers: "
                                         "each model runs N copies, a user's events reach the copy owning "
                                         "the user's partition (XLREC_PARTITIONS), every copy gets every item")] = 1,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars")] = True,
) -> None:
    """Replay an event stream test-then-train through every model and write DIR/metrics.json."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ranking.embed_cache import CachedEncoder
    from ranking.evaluate import EvalOptions
    from ranking.evaluate import evaluate as run
    from ranking.report import targets, write_outputs
    from streams.contracts.settings import get_settings
    from streams.tools.event_files import load_eval_data

    console = Console(stderr=True)
    settings = get_settings()
    names = [m.strip() for m in models.split(",") if m.strip()]
    enc = None
    if encoder == "onnx":
        from encoders.factory import load_default_encoder

        enc = CachedEncoder(load_default_encoder(device=settings.device, max_tokens=max_tokens,
                                                 threads=settings.encoder_threads,
                                                 cache_dir=settings.cache_dir),
                            settings.cache_dir / "embeddings")
    elif encoder != "none":
        raise typer.BadParameter("use onnx or none", param_hint="--encoder")
    if enc is None and "content" in names:
        names.remove("content")
        console.print("[yellow]--encoder none: the content model is left out")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>7.0f}/s"), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not progress, refresh_per_second=4) as bar:
        embed_task = bar.add_task("embedding", total=None, rate=0.0, info="")
        replay_task = bar.add_task("replay", total=None, rate=0.0, info="", visible=False)

        def on_embed(done: int, total: int) -> None:
            elapsed = bar.tasks[embed_task].elapsed or 1e-9
            bar.update(embed_task, completed=done, total=total, rate=done / elapsed, info="texts")

        def on_progress(done: int, evaluated: int, hr: float) -> None:
            if done % 250 == 0:
                task = bar.tasks[replay_task]
                bar.update(replay_task, completed=done, visible=True,
                           rate=done / (task.elapsed or 1e-9),
                           info=f"evaluated {evaluated:,}  HR@10 {hr:.4f}")

        data = load_eval_data(events, items, limit)
        options = EvalOptions(eval_from=eval_from, models=names, seed=seed, workers=workers,
                              worker_of=group_member(settings.partitions, workers))
        metrics, details = run(data, options, enc, on_progress=on_progress, on_embed=on_embed)
    command = "xlrec evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    write_outputs(out, metrics, details, command)
    for b in details["bad_lines"][:20]:
        console.print(f"[yellow]skipped malformed line {escape(str(b))}")  # the line's text is not markup
    console.print(f"{metrics['events_evaluated']:,} events evaluated; wrote {out / 'metrics.json'} "
                  f"and {out / 'report.md'}")
    for name, m in metrics["models"].items():
        console.print(f"  {name:22s} HR@10 {m['all']['hr@10']:.4f}  NDCG@10 {m['all']['ndcg@10']:.4f}"
                      f"  coverage {m['coverage@10']:.3f}  {m['seconds']:.1f}s")
    for s, v in targets(metrics).items():
        console.print(f"  target {s}: xlrec {v['xlrec_hr']:.4f} vs {v['best_baseline']} "
                      f"{v['baseline_hr']:.4f} = {v['ratio']:.2f}x ({'met' if v['met'] else 'not met'})")


def group_member(partitions: int, workers: int) -> Callable[[str], int]:
    """user_id -> the worker of a group of `workers` owning the user's partition: the SDK's
    murmur2 partition of the user_id (as the worker's users table keys it), partitions dealt
    to the workers in turn (p % workers), as evenly as a group assignment spreads them."""
    from streams.worker.users_table import guess_partition

    if workers > partitions:
        raise typer.BadParameter(f"{workers} workers share {partitions} partitions: some would own none; "
                                 "raise XLREC_PARTITIONS", param_hint="--workers")
    return lambda user_id: guess_partition(user_id, partitions) % workers
