"""`xlrec worker` as a subprocess, for the benchmark and the integration and fault tests: its own
process group (so a SIGKILL takes everything), data dir, web port and log file.

    worker = WorkerProcess(settings, tmp / "data", env={"XLREC_DEVICE": "cpu"}).start()
    worker.wait_ready()          # the web port answers
    ...
    worker.stop()                # SIGTERM, SIGKILL after 30 s; worker.output() is its log
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from streams.contracts.settings import Settings
from streams.ops.broker import free_port

START_S = 300.0   # a first start on a machine may export the encoder (about a minute)
STOP_S = 30.0     # a clean stop (snapshot, commit) gets this long before the SIGKILL


class WorkerNotReady(AssertionError):
    """The worker exited or did not answer in time (an AssertionError: tests report it as one)."""


def settings_env(settings: Settings) -> dict[str, str]:
    """The XLREC_* variables that give a worker these settings' broker, topics, group and stores."""
    env = {"XLREC_BOOTSTRAP": settings.bootstrap, "XLREC_TOPIC_PREFIX": settings.topic_prefix,
           "XLREC_GROUP_ID": settings.group_id, "XLREC_PARTITIONS": str(settings.partitions),
           "XLREC_CACHE_DIR": str(settings.cache_dir)}
    for key, value in (("SECURITY_PROTOCOL", settings.security_protocol),
                       ("SASL_MECHANISM", settings.sasl_mechanism),
                       ("SASL_USERNAME", settings.sasl_username),
                       ("SASL_PASSWORD", settings.sasl_password and settings.sasl_password.get_secret_value()),
                       ("QDRANT_URL", settings.qdrant_url),
                       ("WEB_TOKEN", settings.web_token and settings.web_token.get_secret_value())):
        if value:
            env[f"XLREC_{key}"] = str(value)
    return env


class WorkerProcess:
    """`xlrec worker` as a subprocess (own process group, data dir, web port and log).

    Its environment is this process's without any XLREC_* variable (but those in `inherit`),
    then `settings_env(settings)` (when given), its data dir and web port, then `env`. The log
    (`<data_dir's parent>/<name>.log`) is appended to, so a restarted worker keeps one log."""

    def __init__(self, settings: Settings | None, data_dir: Path, name: str = "worker",
                 env: dict[str, str] | None = None, loglevel: str = "warning",
                 inherit: Iterable[str] = ("XLREC_CACHE_DIR",)) -> None:
        self.settings = settings
        self.loglevel = loglevel
        self.data_dir = data_dir
        self.port = free_port()
        self.log = data_dir.parent / f"{name}.log"
        keep = set(inherit)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XLREC_") or k in keep}
        if settings is not None:
            self.env.update(settings_env(settings))
            if "XLREC_CACHE_DIR" in keep and "XLREC_CACHE_DIR" in os.environ:
                self.env["XLREC_CACHE_DIR"] = os.environ["XLREC_CACHE_DIR"]
        self.env.update({"XLREC_DATA_DIR": str(data_dir), "XLREC_WEB_PORT": str(self.port)})
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--loglevel", self.loglevel],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: no snapshot, no flush, no commit."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = STOP_S) -> int | None:
        """SIGTERM (clean stop) and the exit code; SIGKILL after `timeout` seconds."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        """The log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _status(self, field: str) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def rss_mb(self) -> float:
        """Resident memory of the worker process now (VmRSS)."""
        return self._status("VmRSS")

    def peak_rss_mb(self) -> float:
        """The most resident memory the process has had (VmHWM)."""
        return self._status("VmHWM")

    def wait_ready(self, timeout: float = START_S) -> None:
        """Until the web port answers (the app runs; partitions are assigned soon after)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise WorkerNotReady(f"worker exited with {code}; log tail:\n{self.output()[-3000:]}")
            try:
                if http_get(self.port, "/metrics")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise WorkerNotReady(f"worker did not answer on port {self.port} within {timeout:.0f}s "
                             f"(log {self.log}):\n{self.output()[-3000:]}")


def http_get(port: int, path: str, timeout: float = 5.0, token: str | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET on 127.0.0.1:port, with the worker's `XLREC_WEB_TOKEN` when given;
    HTTP errors are answers, not exceptions."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
