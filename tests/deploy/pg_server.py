"""A throwaway PostgreSQL server for the deployment tests: Debian's own binaries, started as an
unprivileged user on 127.0.0.1, a free port and a temporary data directory, always stopped.

PostgreSQL refuses to run as root. When the suite runs as root (CI containers), the server runs as
the `postgres` system user Debian's package creates (else `nobody`): its data directory is made
outside pytest's temporary folders, which only root can enter. Run as anyone else, it runs as that
user. Not a conftest: the tests import it explicitly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
SERVICE_USERS = ("postgres", "nobody")
START_TIMEOUT_S = 30


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def server_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres: PATH first, then Debian's versioned folders
    (newest first; Debian puts only client wrappers on PATH)."""
    candidates = [Path(found).resolve().parent for found in filter(None, (shutil.which(p) for p in SERVER_PROGRAMS))]
    debian = sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")),
                    key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0], reverse=True)
    for folder in [*candidates, *debian]:
        if all(os.access(folder / program, os.X_OK) for program in SERVER_PROGRAMS):
            return folder
    raise PostgresMissing(
        f"no PostgreSQL server binaries ({', '.join(SERVER_PROGRAMS)}) on PATH or in {DEBIAN_BIN_DIRS}: "
        "install Debian's postgresql package (apt-get install postgresql; .ci/run does when it is missing)")


def service_user() -> pwd.struct_passwd | None:
    """The user the server runs as when this process is root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresMissing(f"running as root and none of the users {', '.join(SERVICE_USERS)} exists to run PostgreSQL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Database:
    """One database and its owner on the running server."""

    host: str
    port: int
    name: str
    user: str
    password: str = ""

    def connect(self):
        return psycopg2.connect(host=self.host, port=self.port, dbname=self.name, user=self.user,
                                password=self.password, connect_timeout=5)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with contextlib.closing(self.connect()) as con, con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


class PostgresServer:
    """`with PostgresServer() as pg:` a running server; `pg.create_database(name, user, password)`."""

    def __init__(self) -> None:
        self.bin = server_bin_dir()
        self.user = service_user()
        self.superuser_password = secrets.token_hex(16)
        self.root = Path(tempfile.mkdtemp(prefix="comet-ledger-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0

    # --- running programs as the server's user ------------------------------------------------------

    def _run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        identity = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run([str(self.bin / program), *args], cwd=self.root, env=env, capture_output=True,
                              text=True, timeout=timeout, **identity)

    def _own(self, path: Path) -> None:
        if self.user:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    # --- life cycle ---------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        self._own(self.root)
        password_file = self.root / "superuser-password"
        password_file.write_text(self.superuser_password + "\n")
        password_file.chmod(0o600)
        self._own(password_file)
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                         f"--pwfile={password_file}", "-E", "UTF8", "--no-locale", "--no-sync")
        password_file.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        for _ in range(3):  # another process may take the free port between the probe and the start
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S),
                             "-o", options, "start", timeout=START_TIMEOUT_S + 10)
            if done.returncode == 0:
                return self
        raise RuntimeError(f"PostgreSQL did not start: {done.stdout.strip()} {self.log_tail()}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            done = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
            if done.returncode != 0:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    # --- databases ----------------------------------------------------------------------------------

    @property
    def superuser(self) -> Database:
        return Database("127.0.0.1", self.port, "postgres", "postgres", self.superuser_password)

    def create_database(self, name: str, owner: str, password: str | None = None) -> Database:
        """A database owned by `owner`, as the production recipe creates it; with a password, the owner
        is created first as a login role. Returns the database as its owner connects to it."""
        con = self.superuser.connect()
        try:
            con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with con.cursor() as cur:
                if password is not None:
                    cur.execute(sql.SQL("CREATE USER {} WITH PASSWORD %s").format(sql.Identifier(owner)), (password,))
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        finally:
            con.close()
        return Database("127.0.0.1", self.port, name, owner, password or "")

    # --- the backup recipe (docs/operations.md, "Backups and restore") --------------------------------

    def client(self, program: str, db: Database, *args: str) -> None:
        """pg_dump / pg_restore of this server's version, as the database's owner; the password goes in
        the environment (PGPASSWORD), never on the command line."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": db.password, "LC_ALL": "C"}
        target = f"host={db.host} port={db.port} dbname={db.name} user={db.user}"
        done = subprocess.run([str(self.bin / program), *args, f"--dbname={target}"], env=env, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
