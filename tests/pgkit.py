"""A throwaway PostgreSQL cluster on loopback, for the tests and the benchmarks.

`start_postgres(root)` runs initdb (Debian's `postgresql` package) and `postgres` on 127.0.0.1
with a password for TCP clients; as root, both run as user postgres (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POSTGRES_USER = "ferry"
POSTGRES_PASSWORD = "pg-pass-7Hq2xV"  # the tests check it never shows in output


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: Path

    def url(self, database: str = "postgres") -> str:
        return (
            f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@{self.host}:{self.port}/{database}"
        )


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), if any."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    return found[-1].parent if found else None


def start_postgres(
    root: Path, *, fsync: bool, settings: Mapping[str, str] | None = None
) -> tuple[PostgresServer, subprocess.Popen[bytes]]:
    """initdb a cluster under `root` and run it on 127.0.0.1 (as user postgres when root).

    `root` (created if needed) must be reachable by user postgres; stop the returned process
    with SIGQUIT (immediate) or SIGINT (fast). `settings`: more server settings (`-c k=v`);
    the server's log is `root/log`."""
    import pwd
    import socket
    import time

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    data, sockets, pwfile = root / "data", root / "sock", root / "pw"
    sockets.mkdir()
    pwfile.write_text(POSTGRES_PASSWORD + "\n")
    # PostgreSQL refuses to run as root: the server runs as user postgres, with no wrapper
    # process in between (so a signal reaches it).
    as_postgres: dict[str, Any] = {}
    if os.getuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in (root, sockets, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        as_postgres = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    root.chmod(0o700)
    initdb = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, f"--pwfile={pwfile}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"],
        capture_output=True, text=True, timeout=120, check=False, **as_postgres,
    )  # fmt: skip
    if initdb.returncode:
        raise RuntimeError(f"initdb failed: {initdb.stderr}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data), "-k", str(sockets),
         "-p", str(port), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
         "-c", f"fsync={'on' if fsync else 'off'}",
         *(f"-c{key}={value}" for key, value in (settings or {}).items())],
        stdout=subprocess.DEVNULL, stderr=(root / "log").open("wb"), **as_postgres,
        # A session of its own, as pg_ctl starts it: on Linux that is also its own scheduling
        # group (autogroup), as a server has, rather than a share of the test runner's.
        start_new_session=True,
    )  # fmt: skip
    server = PostgresServer("127.0.0.1", port, sockets)
    deadline = time.monotonic() + 60
    while subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
    ).returncode:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"postgres did not start: {(root / 'log').read_text()[-2000:]}")
        time.sleep(0.1)
    return server, process


def wait_for_ferry_sessions(store_url: str, remaining: int = 0) -> None:
    """PostgreSQL: wait until the server has ended a killed ferry's sessions, until `remaining`
    ferry sessions are left in the database (the test's own). The server notices a dead client
    once it has finished what that client sent: a commit under way on the run's lock session
    ends, committed or rolled back, before the lock goes. SQLite: nothing to wait for."""
    if store_url.startswith("sqlite:"):
        return
    import time

    import psycopg

    with psycopg.connect(store_url, autocommit=True) as admin:
        deadline = time.monotonic() + 30  # a guard against a hang, not a measure
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'ferry'"
        ).fetchone() != (remaining,):
            assert time.monotonic() < deadline, "the killed ferry's sessions never ended"
            time.sleep(0.01)
