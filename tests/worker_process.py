"""`xlrec worker` as a subprocess for the integration and fault tests: its own process group
(so a SIGKILL takes everything), data dir, web port and log file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from streams.contracts.settings import Settings

START_S = 180.0   # the first start on a machine may export the encoder (about a minute)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """`xlrec worker` as a subprocess (own process group, data dir, web port and log)."""

    def __init__(self, settings: Settings, data_dir: Path, name: str = "worker",
                 env: dict[str, str] | None = None, loglevel: str = "warning") -> None:
        self.settings = settings
        self.loglevel = loglevel
        self.data_dir = data_dir
        self.port = free_port()
        self.log = data_dir.parent / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XLREC_")}
        self.env.update({
            "XLREC_BOOTSTRAP": settings.bootstrap, "XLREC_TOPIC_PREFIX": settings.topic_prefix,
            "XLREC_GROUP_ID": settings.group_id, "XLREC_PARTITIONS": str(settings.partitions),
            "XLREC_DATA_DIR": str(data_dir), "XLREC_WEB_PORT": str(self.port),
            "XLREC_CACHE_DIR": str(os.environ.get("XLREC_CACHE_DIR", settings.cache_dir))})
        for key, value in (("SECURITY_PROTOCOL", settings.security_protocol),
                           ("SASL_MECHANISM", settings.sasl_mechanism),
                           ("SASL_USERNAME", settings.sasl_username),
                           ("SASL_PASSWORD", settings.sasl_password and settings.sasl_password.get_secret_value()),
                           ("QDRANT_URL", settings.qdrant_url)):
            if value:
                self.env[f"XLREC_{key}"] = str(value)
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
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

    def stop(self) -> int | None:
        """SIGTERM (clean stop) and the exit code; SIGKILL after 30 s."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def rss_mb(self) -> float:
        """Resident memory of the worker process now."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def wait_ready(self, timeout: float = START_S) -> None:
        """Until the web port answers (the app runs; partitions are assigned soon after)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.alive(), f"worker exited:\n{self.output()[-3000:]}"
            try:
                if http_get(self.port, "/users/nobody/recommendations")[0] == 404:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready within {timeout:.0f}s:\n{self.output()[-3000:]}")


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
