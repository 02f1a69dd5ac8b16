"""`xlrec worker`: run the streaming pipeline (Faust app, agents, web port) until stopped.

Everything that can be wrong at start (broker address, model files, a Qdrant path held by
another process, a Qdrant server that does not answer) is checked before the app starts,
and reported as one clear line with a non-zero exit.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import faust

    from streams.worker.engine_runner import EngineRunner
    from streams.contracts.settings import Settings

log = logging.getLogger("xlrec.worker")

SNAPSHOT_FILE = "engine.snapshot"
# One onnxruntime thread per encoder call in the worker (items, queries, and review texts when
# they stay in the worker): each call then runs on its calling thread, so the review-text
# thread's lower OS priority (streams.worker.engine_runner) covers all of its work, and profile
# updates, rankings and new items keep the CPU they need. XLREC_ENCODER_THREADS overrides it.
WORKER_ENCODER_THREADS = 1
# Review texts (`review_encoder`) are embedded in a child process at this niceness: the
# scheduler then gives the event path (nice 0) all but ~1.5% of a core it wants.
REVIEW_PROCESS_NICE = 19


def snapshot_path(data_dir: Path, group_id: str) -> Path:
    """Worker-side engine state (River models, counters) of one consumer group."""
    return data_dir / "snapshots" / group_id / SNAPSHOT_FILE


def worker(
    loglevel: str = typer.Option("info", "--loglevel", "-l", help="debug, info, warning or error"),
    web_port: int | None = typer.Option(None, "--web-port", help="Overrides XLREC_WEB_PORT"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Overrides XLREC_DATA_DIR"),
) -> None:
    """Run a worker: items into Qdrant, profiles into the users table, recommendations out."""
    from ranking.vectors import one_blas_thread
    from streams.sdk.cli import fail
    from streams.contracts.settings import get_settings

    settings = get_settings()
    updates = {k: v for k, v in (("web_port", web_port), ("data_dir", data_dir)) if v is not None}
    if updates:
        settings = settings.model_copy(update=updates)
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    one_blas_thread()
    try:
        app, runner = prepare(settings)
    except Exception as exc:  # one line for the operator, no traceback
        fail(str(exc))
    run(app, runner, loglevel)


def prepare(settings: Settings) -> tuple[faust.App, EngineRunner]:
    """Check the broker, create topics, load the encoder and store, restore the engine, and
    build the Faust app with its pipeline. Raises with a readable message on any problem."""
    from encoders.factory import load_default_encoder
    from ranking.engine import Recommender
    from ranking.qdrant_store import open_store
    from streams.worker.wiring import Worker
    from streams.worker.app import build_app, repartition_name
    from streams.worker.catalog_feed import load_resume
    from streams.worker.engine_runner import EngineRunner
    from streams.contracts.topics import create_topics

    # Fails fast, naming the bootstrap servers, when no broker answers.
    create_topics(settings, [repartition_name(settings)])
    encoder = load_default_encoder(device=settings.device, max_tokens=settings.encoder_max_tokens,
                                   threads=settings.encoder_threads or WORKER_ENCODER_THREADS,
                                   cache_dir=settings.cache_dir)
    # qdrant-client warns when it cannot read a server's version; a server that does not answer
    # is reported by the one-line error below, which the warning would only bury.
    warnings.filterwarnings("ignore", message="Failed to obtain server version", category=UserWarning)
    store = open_store(settings, encoder.dim)
    recommender = Recommender(store=store, encoder=encoder, review_encoder=review_encoder(settings, encoder))
    snap = snapshot_path(settings.data_dir, settings.group_id)
    resume = None
    if snap.exists():
        log.info("restoring engine state from %s", snap)
        try:
            recommender.restore(snap)
        except Exception as exc:
            raise RuntimeError(f"cannot restore the engine snapshot {snap} ({type(exc).__name__}: {exc}); "
                               "move it away to start from the users table and the topics alone") from None
        resume = load_resume(snap)
    snap.parent.mkdir(parents=True, exist_ok=True)
    runner = EngineRunner(recommender, store)
    app = build_app(settings)
    Worker(app, settings, runner, snapshot_path=snap, resume=resume)
    return app, runner


def review_encoder(settings: Settings, encoder: Any) -> Any:
    """On CPU (and unless `review_text_process` is off), the same encoder in a child process at
    `REVIEW_PROCESS_NICE`, with every core, its threads spinning between steps (the process does
    nothing else): it takes what the event path leaves idle."""
    from encoders.factory import load_default_encoder
    from encoders.process_encoder import ProcessEncoder

    if not settings.review_text_process or getattr(encoder, "device", "cpu") != "cpu":
        return None
    load = functools.partial(load_default_encoder, device="cpu", max_tokens=settings.encoder_max_tokens,
                             threads=settings.encoder_threads, cache_dir=settings.cache_dir, spin=True)
    return ProcessEncoder(load, name=encoder.name, dim=encoder.dim, nice=REVIEW_PROCESS_NICE)


def run(app: faust.App, runner: EngineRunner, loglevel: str) -> None:
    """Run the Faust worker in this process until SIGINT/SIGTERM, then release the store."""
    from faust import Worker

    try:
        worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        # Faust's start-up spinner sets the root logger to DEBUG to spin on every record, so
        # every debug line of aiokafka's send path would become a LogRecord on the hot path.
        worker.spinner = None
        worker.execute_from_commandline()
    finally:
        runner.close()
        if runner.store is not None:
            runner.store.close()
