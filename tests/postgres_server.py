"""A real, throwaway PostgreSQL server for the tests: `initdb` into a temporary directory,
`postgres` on 127.0.0.1 and a free port, one database, fast shutdown at the end.

The binaries come from the Debian packages (`bash .ci/postgres.sh` installs them) under
`/usr/lib/postgresql/<version>/bin`. PostgreSQL refuses to run as root, so under root the
server runs as the `postgres` system user (created if missing), in a directory it owns.
Only the server process this module starts is ever stopped.

    with PostgresServer.start() as server:
        print(server.url)   # postgresql://postgres@127.0.0.1:<port>/selfmoa_test
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import free_port, log_tail

INSTALL_HINT = "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; install them with `bash .ci/postgres.sh`"
DATABASE = "selfmoa_test"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def find_bindir() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb and postgres, or None."""
    candidates = []
    for bindir in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(bindir).parent.name
        if all(os.access(Path(bindir, exe), os.X_OK) for exe in ("initdb", "postgres")):
            candidates.append((int(version) if version.isdigit() else 0, Path(bindir)))
    return max(candidates)[1] if candidates else None




def _server_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam("postgres")


class PostgresServer:
    """One running server; use `PostgresServer.start()` and `stop()` (or a `with` block)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _server_user()
        # Not under pytest's tmp_path: that is private to root, and the server user must reach
        # it; /tmp also keeps the socket path short (Unix socket paths are limited to ~107 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="selfmoa-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.logfile = self.root / "server.log"
        self.port = 0
        self.process: subprocess.Popen | None = None
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.sockets.mkdir()
        if self.user is not None:
            os.chown(self.sockets, self.user.pw_uid, self.user.pw_gid)

    @property
    def url(self) -> str:
        """Connection string of the test database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @classmethod
    def start(cls, bindir: Path | None = None) -> PostgresServer:
        """Create a cluster, start the server and create the test database.

        Raises:
            FileNotFoundError: No PostgreSQL binaries (see `INSTALL_HINT`).
            RuntimeError: The server did not come up; the message holds its log.
        """
        bindir = bindir or find_bindir()
        if bindir is None:
            raise FileNotFoundError(INSTALL_HINT)
        server = cls(bindir)
        atexit.register(server.stop)
        try:
            server._initdb()
            server._run()
            server._create_database()
        except BaseException:
            server.stop()
            raise
        return server

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        cmd = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
               "--encoding=UTF8", "--no-locale", "--no-sync"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root, **self._as_user())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def _run(self) -> None:
        # A port picked free can be taken before the server binds it: try a few.
        for _ in range(5):
            self.port = free_port()
            cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                   "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockets}",
                   "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                   "-c", "max_connections=50", "-c", "shared_buffers=32MB"]  # fmt: skip
            with open(self.logfile, "ab") as log:
                self.process = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True, **self._as_user()
                )
            if self._wait_ready():
                return
            self._terminate()
        raise RuntimeError(f"PostgreSQL did not start; its log:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.logfile, lines)

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open sessions, stop at once.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Immediate shutdown, then the whole process group the server leads.
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory; safe to call twice."""
        self._terminate()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
