"""A local Apache Kafka 4.x broker without Docker: one KRaft node (broker and controller in one
JVM) on 127.0.0.1, for development, the demo and the integration tests.

Maven resolves the broker's jars (deploy/kafka/pom.xml) into a cache outside the repository;
`start` formats the storage once, writes server.properties, runs the JVM detached in its own
process group and waits until it answers metadata requests; `stop` ends that process group.
Everything a broker owns lives in its data dir:

    server.properties   generated at every start
    kraft/              log.dirs: topic data and the KRaft metadata log
    logs/server.log     the broker's log (log4j2, rolled at 10 MB); logs/jvm.out: JVM stdout/stderr
    broker.pid          pid (and process group) of the running JVM
    broker.json         ports and version of the last start, read by `status`
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path

from streams.contracts.settings import get_settings

KAFKA_DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM = KAFKA_DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DEPLOY_DIR / "log4j2.properties"
HOST = "127.0.0.1"
NODE_ID = 1
INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven"
# A modest heap: the machine has 2 cores and 24 GiB shared with the tests and the workers.
# KAFKA_HEAP_OPTS overrides it, as it does for Kafka's own scripts.
DEFAULT_HEAP_OPTS = "-Xms128m -Xmx512m"
# C1 only: the broker is ready in about half the time (2 s instead of 4 s here) and leaves the
# two cores to the tests; a local broker is never the bottleneck next to Python consumers.
# KAFKA_JVM_PERFORMANCE_OPTS overrides it, as for Kafka's scripts ("" gives the JVM's defaults).
DEFAULT_JVM_PERFORMANCE_OPTS = "-XX:TieredStopAtLevel=1"
_COMPLETE_MARKER = ".complete"


class BrokerError(RuntimeError):
    """A broker operation failed; the message says why and what to do, in one line or a log tail."""


@dataclasses.dataclass(frozen=True)
class BrokerInfo:
    """Where a broker listens and whether its JVM runs."""

    data_dir: Path
    port: int
    controller_port: int
    version: str
    running: bool
    pid: int | None = None
    sasl_port: int | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers of the PLAINTEXT listener."""
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        """Bootstrap servers of the SASL_PLAINTEXT (PLAIN) listener, when it has one."""
        return f"{HOST}:{self.sasl_port}" if self.sasl_port else None

    @property
    def log_path(self) -> Path:
        """The broker's own log file."""
        return self.data_dir / "logs" / "server.log"


# ---------------------------------------------------------------------------------------------
# install


def kafka_version() -> str:
    """The Kafka version pinned in deploy/kafka/pom.xml, the one place it is set."""
    if not POM.is_file():
        raise BrokerError(f"{POM} not found: the broker needs the xlrec source tree (deploy/kafka/)")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    if not version:
        raise BrokerError(f"{POM} has no <kafka.version> property")
    return version.strip()


def lib_dir(cache_dir: Path | None = None) -> Path:
    """Where `install` puts the broker's jars: outside the repository, one folder per version."""
    return (cache_dir or get_settings().cache_dir) / f"kafka-{kafka_version()}" / "lib"


def _tool(name: str) -> str:
    """Path of java or mvn, or one clear message saying what to install."""
    java_home = os.environ.get("JAVA_HOME")
    if name == "java" and java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which(name)
    if not found:
        raise BrokerError(f"`{name}` not found: the local Kafka broker needs Java 17+ and Maven "
                          f"({INSTALL_HINT})")
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise installs so that two processes never copy jars into the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(cache_dir: Path | None = None) -> Path:
    """Resolve the broker's jars with Maven once and return the lib dir; fast when present.

    The jars are copied into a temporary folder and renamed into place with a marker file,
    so an interrupted install is never mistaken for a complete one."""
    lib = lib_dir(cache_dir)
    if (lib / _COMPLETE_MARKER).is_file():
        return lib
    _tool("java")
    mvn = _tool("mvn")
    with _locked(lib.parent / ".install.lock"):
        if (lib / _COMPLETE_MARKER).is_file():
            return lib
        staging = lib.parent / f"lib.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM),
               "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        jar = staging / f"kafka_2.13-{kafka_version()}.jar"
        if done.returncode != 0 or not jar.is_file():
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise BrokerError(f"Maven could not resolve the Kafka jars ({' '.join(cmd)}):\n{tail}")
        (staging / _COMPLETE_MARKER).write_text(kafka_version() + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
    return lib


# ---------------------------------------------------------------------------------------------
# start / stop / status


def default_data_dir() -> Path:
    """Broker data outside the repository, beside the jars (follows XLREC_CACHE_DIR)."""
    return get_settings().cache_dir / "kafka-data"


def _data_dir(data_dir: Path | str | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as Uuid.randomUuid).

    Generated here rather than with `kafka-storage random-uuid` to save one JVM start."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka rejects ids that look like a CLI flag
            return cluster_id


def _jaas(sasl_users: Mapping[str, str]) -> str:
    for user, password in sasl_users.items():
        if not user or any(c in user for c in ' ="\\\n') or any(c in password for c in '"\\\n'):
            raise BrokerError(f"SASL user {user!r}: names may not hold spaces, '=', quotes, "
                              "backslashes or newlines, passwords no quotes, backslashes or newlines")
    users = " ".join(f'user_{user}="{password}"' for user, password in sasl_users.items())
    return f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"


def server_properties(data_dir: Path, port: int, controller_port: int,
                      sasl_port: int | None = None, sasl_users: Mapping[str, str] | None = None,
                      auto_create_topics: bool = True) -> str:
    """server.properties of one combined broker+controller listening on 127.0.0.1 only."""
    listeners = [f"PLAINTEXT://{HOST}:{port}"]
    if sasl_port:
        listeners.append(f"SASL_PLAINTEXT://{HOST}:{sasl_port}")
    lines = [
        "# Written by streams/ops/broker.py at every start; edits are overwritten.",
        "process.roles=broker,controller",
        f"node.id={NODE_ID}",
        # A static one-voter quorum: the controller port is free to change between starts.
        f"controller.quorum.voters={NODE_ID}@{HOST}:{controller_port}",
        "controller.listener.names=CONTROLLER",
        f"listeners={','.join([*listeners, f'CONTROLLER://{HOST}:{controller_port}'])}",
        f"advertised.listeners={','.join(listeners)}",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map="
        "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data_dir / 'kraft'}",
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        # Few internal partitions: the first consumer group and transaction start in well
        # under a second on 2 cores instead of creating 50 partitions.
        "offsets.topic.num.partitions=4",
        "transaction.state.log.num.partitions=4",
        # Groups form at once instead of waiting 3 s for more members: tests join groups often.
        "group.initial.rebalance.delay.ms=0",
        # Kept true, as in Kafka's defaults and the apache/kafka image, so the Docker and the
        # no-Docker broker behave alike. xlrec creates its own topics with the configured
        # partition counts; auto-creation (num.partitions=1) only serves ad-hoc producers.
        f"auto.create.topics.enable={'true' if auto_create_topics else 'false'}",
        "num.partitions=1",
        "num.network.threads=2",
        "num.io.threads=4",
    ]
    if sasl_port:
        lines += [
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={_jaas(sasl_users or {})}",
        ]
    return "\n".join(lines) + "\n"


def _pid_alive(pid: int, data_dir: Path) -> bool:
    """Whether pid is a live (not zombie) JVM of this data dir; reaps it if it is our child."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # no procfs: fall back to a signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    # A recycled pid belongs to some other program: only ours names this server.properties.
    return state != "Z" and str(data_dir / "server.properties") in cmdline


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "broker.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def status(data_dir: Path | str | None = None) -> BrokerInfo | None:
    """The broker of a data dir (running or not), or None if none was ever started there."""
    data_dir = _data_dir(data_dir)
    try:
        state = json.loads((data_dir / "broker.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = _read_pid(data_dir)
    running = pid is not None and _pid_alive(pid, data_dir)
    return BrokerInfo(data_dir=data_dir, port=state["port"], controller_port=state["controller_port"],
                      version=state["version"], sasl_port=state.get("sasl_port"),
                      running=running, pid=pid if running else None)


def log_tail(data_dir: Path | str | None = None, lines: int = 25) -> str:
    """Last lines of the JVM's stdout and of server.log: what to show when a start fails."""
    logs = _data_dir(data_dir) / "logs"
    parts = []
    for name in ("jvm.out", "server.log"):
        path = logs / name
        if path.is_file() and path.stat().st_size:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or f"(no log in {logs})"


def _format_storage(java: str, lib: Path, data_dir: Path) -> None:
    """Format the KRaft storage once; a formatted data dir keeps its cluster id and topics."""
    if (data_dir / "kraft" / "meta.properties").is_file():
        return
    cmd = [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", *_log_opts(data_dir), "-cp", f"{lib}/*",
           "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(data_dir / "server.properties")]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise BrokerError(f"formatting {data_dir / 'kraft'} failed:\n{done.stdout}{done.stderr}")


def _log_opts(data_dir: Path) -> list[str]:
    return [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={data_dir / 'logs'}"]


def _wait_ready(info: BrokerInfo, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until the broker answers a metadata request, its JVM dies, or timeout passes."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    admin = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(info.data_dir)  # drops the pid file of the dead JVM
            raise BrokerError(f"the broker exited during start (code {proc.returncode}):\n"
                              f"{log_tail(info.data_dir)}")
        # Wait for the socket first, so librdkafka does not log a refused connection per try.
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, info.port)) != 0:
                time.sleep(0.1)
                continue
        admin = admin or AdminClient({"bootstrap.servers": info.bootstrap})
        with contextlib.suppress(Exception):
            if admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic()))).brokers:
                return
        time.sleep(0.1)
    stop(info.data_dir)
    raise BrokerError(f"the broker did not answer on {info.bootstrap} within {timeout:.0f} s:\n"
                      f"{log_tail(info.data_dir)}")


def start(port: int = 9092, data_dir: Path | str | None = None, *,
          sasl_users: Mapping[str, str] | None = None, sasl_port: int | None = None,
          auto_create_topics: bool = True, timeout: float = 60.0) -> BrokerInfo:
    """Start the broker of data_dir on 127.0.0.1:port (0 = any free port) and wait until ready.

    If it already runs, returns it as it is, unless it listens elsewhere than asked.
    sasl_users ({"user": "password"}) adds a SASL_PLAINTEXT listener with the PLAIN mechanism
    on sasl_port (any free port by default); no authorizer is set, so every authenticated user
    may do everything."""
    data_dir = _data_dir(data_dir)
    current = status(data_dir)
    if current and current.running:
        if port not in (0, current.port) or (sasl_users and not current.sasl_port):
            raise BrokerError(f"the broker of {data_dir} already runs on {current.bootstrap} "
                              f"(pid {current.pid}) with other listeners; stop it first")
        return current
    for wanted in (port, sasl_port):
        if wanted and _port_in_use(wanted):
            raise BrokerError(f"port {wanted} on {HOST} is already in use by another process; "
                              "stop it or choose another port (--port)")
    lib = install()
    java = _tool("java")
    port = port or free_port()
    if sasl_users:
        sasl_port = sasl_port or free_port()
    else:
        sasl_port = None
    info = BrokerInfo(data_dir=data_dir, port=port, controller_port=free_port(),
                      version=kafka_version(), running=True, sasl_port=sasl_port)
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    (data_dir / "server.properties").write_text(server_properties(
        data_dir, port, info.controller_port, sasl_port, sasl_users, auto_create_topics))
    _format_storage(java, lib, data_dir)
    jvm_opts = (os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS).split()
                + os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS", DEFAULT_JVM_PERFORMANCE_OPTS).split())
    cmd = [java, *jvm_opts, "-Djava.awt.headless=true", *_log_opts(data_dir), "-cp", f"{lib}/*",
           "kafka.Kafka", str(data_dir / "server.properties")]
    with (data_dir / "logs" / "jvm.out").open("wb") as out:
        # Own session and process group: Ctrl-C in the caller's terminal does not reach it,
        # and stop() ends the whole group.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=data_dir)
    info = dataclasses.replace(info, pid=proc.pid)
    (data_dir / "broker.pid").write_text(f"{proc.pid}\n")
    (data_dir / "broker.json").write_text(json.dumps(
        {"port": port, "controller_port": info.controller_port, "sasl_port": sasl_port,
         "version": info.version}, indent=2) + "\n")
    _wait_ready(info, proc, timeout)
    return info


def stop(data_dir: Path | str | None = None, timeout: float = 30.0) -> bool:
    """Stop the broker of data_dir cleanly (SIGTERM, then SIGKILL after timeout).

    Returns whether a running broker was stopped; a stale pid file is removed either way."""
    data_dir = _data_dir(data_dir)
    pid = _read_pid(data_dir)
    stopped = False
    if pid is not None and _pid_alive(pid, data_dir):
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _pid_alive(pid, data_dir):
                time.sleep(0.1)
            if not _pid_alive(pid, data_dir):
                stopped = True
                break
        if not stopped:
            raise BrokerError(f"the broker (pid {pid}) survived SIGKILL; see {data_dir / 'logs'}")
    (data_dir / "broker.pid").unlink(missing_ok=True)
    return stopped
