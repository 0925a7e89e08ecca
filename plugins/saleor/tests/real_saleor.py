"""A real Saleor for the end-to-end test: built once per machine, started per run.

The source is the tarball in ``../shared/saleor/`` (beside the repository; CI copies
``shared/`` next to its fresh clone). Nothing of Saleor is copied into the repository.
``FOURWS_PAY_SALEOR_SOURCE=<folder>`` points at another folder of the same shape (one
``saleor-*.tar.gz`` and its ``requirements-py312*.txt``), e.g. an older release built by hand
to check the App against what shops run; opt-in only, CI never sets it.

- **Build, once per machine** (``prepare``): the tarball is extracted and a Python 3.12
  virtual environment is installed with ``uv`` from ``requirements-py312.txt`` under
  ``/var/tmp/fourws-pay-saleor/<first 16 hex of the tarball's sha256>/`` (override the root
  with ``FOURWS_PAY_SALEOR_CACHE``). A ``ready`` file marks a finished build; a file lock
  keeps two runs from building at once.
- **Template database, once per build**: ``migrate`` (Saleor's ~1,400 migrations) and
  ``populatedb --createsuperuser`` run into ``fourws_saleor_tpl_<hash>_building``, which is
  renamed to ``fourws_saleor_tpl_<hash>`` only when both succeeded, so a half-migrated
  template is never used. ``manage.py migrate`` does not create a database: we do.
- **Per run** (``started``): ``CREATE DATABASE … TEMPLATE`` the template (seconds), start
  uvicorn (``saleor.asgi``) and one Celery worker on a run-private queue, on loopback, with
  one RSA key for both (webhook signatures verify against the JWKS uvicorn serves). On exit
  both processes are stopped and the run's database is dropped.

Run ``python plugins/saleor/tests/real_saleor.py prepare`` to build ahead of the test
(``.ci/saleor-e2e`` does); the test's fixture calls the same code and finds it done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED = REPO_ROOT.parent / "shared" / "saleor"
CACHE_ROOT = Path(os.environ.get("FOURWS_PAY_SALEOR_CACHE", "/var/tmp/fourws-pay-saleor"))
ADMIN_URL = os.environ.get(
    "FOURWS_PAY_SALEOR_ADMIN_DB", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS = os.environ.get("FOURWS_PAY_SALEOR_REDIS", "redis://127.0.0.1:6379")
QUEUE_SETTINGS = Path("fourws_e2e_settings.py")
QUEUE_SETTINGS_TEXT = '''"""Saleor's settings plus the run's Celery queue."""

import os

from saleor.settings import *  # noqa: F403

CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
'''
SUPERUSER = ("admin@example.com", "admin")  # what populatedb --createsuperuser creates


def source(environ: Mapping[str, str] | None = None) -> Path:
    """The folder Saleor is built from: ``FOURWS_PAY_SALEOR_SOURCE``, else ``../shared/saleor/``.

    A folder of the same shape as the shared one lets the test run against another Saleor
    release (what shops run) without that release's code ever entering the repository.
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get("FOURWS_PAY_SALEOR_SOURCE", "").strip()
    return Path(chosen).expanduser() if chosen else SHARED


def other_source(environ: Mapping[str, str]) -> bool:
    """True when the environment points at a folder other than ``../shared/saleor/``."""
    return bool(environ.get("FOURWS_PAY_SALEOR_SOURCE", "").strip())


def tarball(shared: Path | None = None) -> Path | None:
    """The Saleor source tarball in ``shared`` (default: ``source()``), or None."""
    folder = source() if shared is None else shared
    found = sorted(folder.glob("saleor-*.tar.gz"))
    return found[-1] if found else None


def python312() -> Path | None:
    """Saleor needs Python 3.12: ``FOURWS_PAY_SALEOR_PYTHON``, else pyenv's 3.12.x."""
    explicit = os.environ.get("FOURWS_PAY_SALEOR_PYTHON")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        prefix = subprocess.run(
            ["pyenv", "prefix", "3.12.1"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if prefix and (Path(prefix) / "bin" / "python").is_file():
            return Path(prefix) / "bin" / "python"
    for candidate in sorted(Path("/root/.pyenv/versions").glob("3.12.*"), reverse=True):
        if (candidate / "bin" / "python").is_file():
            return candidate / "bin" / "python"
    found = shutil.which("python3.12")
    return Path(found) if found else None


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _psql(sql: str, url: str = ADMIN_URL) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(sql)  # type: ignore[arg-type]
        if cursor.description is None:
            return ""
        row = cursor.fetchone()
        return "" if row is None else str(row[0])


def _db_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _log(message: str) -> None:
    print(f"[real-saleor] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SaleorBuild:
    """One extracted Saleor source with its virtual environment, keyed by the tarball."""

    archive: Path
    key: str
    root: Path

    @classmethod
    def of(cls, archive: Path) -> SaleorBuild:
        key = _digest(archive)
        return cls(archive, key, CACHE_ROOT / key)

    @property
    def source(self) -> Path:
        folders = [p for p in (self.root / "src").iterdir() if (p / "manage.py").is_file()]
        return folders[0]

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def template(self) -> str:
        return f"fourws_saleor_tpl_{self.key}"

    @property
    def version(self) -> str:
        for line in (self.source / "saleor" / "__init__.py").read_text().splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
        return ""

    def prepare(self) -> None:
        """Extract, install the venv and migrate the template database, each once."""
        with _locked(self.root.parent / f"{self.key}.lock"):
            if not (self.root / "ready").is_file():
                self._install()
            if _psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.template}'") != "1":
                self._migrate_template()

    def _install(self) -> None:
        python = python312()
        if python is None:
            raise RuntimeError("no Python 3.12 for Saleor (set FOURWS_PAY_SALEOR_PYTHON)")
        started = time.monotonic()
        shutil.rmtree(self.root, ignore_errors=True)
        (self.root / "src").mkdir(parents=True)
        with tarfile.open(self.archive) as archive:
            archive.extractall(self.root / "src", filter="data")
        requirements = sorted(self.archive.parent.glob("requirements-py312*.txt"))
        venv = self.root / "venv"
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "uv"], check=True)
        install = [str(venv / "bin" / "uv"), "pip", "install", "-q", "--python", str(self.python)]
        for requirement in requirements:
            install += ["-r", str(requirement)]
        # random_data imports Saleor's test fixtures at start-up, hence pytest.
        subprocess.run([*install, "pytest"], check=True)
        (self.root / "ready").write_text(f"{self.archive.name}\n")
        _log(f"installed {self.archive.name} in {time.monotonic() - started:.0f} s")

    def _migrate_template(self) -> None:
        started = time.monotonic()
        building = self.template + "_building"
        _psql(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        _psql(f'CREATE DATABASE "{building}"')
        env = self.environment(_db_url(building), port=0, queue="unused")
        env.pop("CELERY_BROKER_URL")  # populatedb's tasks run eagerly, in-process
        for command in (["migrate", "--noinput"], ["populatedb", "--createsuperuser"]):
            subprocess.run(
                [str(self.python), "manage.py", *command],
                cwd=self.source,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        _psql(f'ALTER DATABASE "{building}" RENAME TO "{self.template}"')
        _log(f"template {self.template} migrated in {time.monotonic() - started:.0f} s")

    def environment(self, database_url: str, *, port: int, queue: str) -> dict[str, str]:
        """Saleor's settings for a loopback run (what ../shared/saleor/README.md lists)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FOURWS_", "PYTEST"))}
        env.update(
            DATABASE_URL=database_url,
            SECRET_KEY="fourws-e2e-secret",
            DEBUG="True",
            ALLOWED_HOSTS="localhost,127.0.0.1",
            ALLOWED_CLIENT_HOSTS="localhost,127.0.0.1",
            PUBLIC_URL=f"http://127.0.0.1:{port}/",
            HTTP_IP_FILTER_ENABLED="False",  # else Saleor refuses to call an App on loopback
            HTTP_IP_FILTER_ALLOW_LOOPBACK_IPS="True",
            CELERY_BROKER_URL=f"{REDIS}/5",
            CELERY_TASK_DEFAULT_QUEUE=queue,  # a run-private queue: runs never share work
            CACHE_URL=f"{REDIS}/6?key_prefix={queue}",
            DJANGO_SETTINGS_MODULE="saleor.settings",
            SEND_USAGE_TELEMETRY="False",
            PYTHONPATH=str(self.source),
        )
        if not self.reads_queue_from_environment():
            env.update(
                DJANGO_SETTINGS_MODULE=QUEUE_SETTINGS.stem,
                PYTHONPATH=os.pathsep.join((str(self.source), str(self._queue_settings()))),
            )
        return env

    def reads_queue_from_environment(self) -> bool:
        """Whether this release's settings take ``CELERY_TASK_DEFAULT_QUEUE`` from the env.

        Saleor 3.24 does; 3.23 and older do not, and their tasks would go to the shared
        ``celery`` queue that the run's worker does not listen to (an App install that
        never finishes), or that another run's worker would take.
        """
        settings = (self.source / "saleor" / "settings.py").read_text(encoding="utf-8")
        return 'environ.get("CELERY_TASK_DEFAULT_QUEUE"' in settings

    def _queue_settings(self) -> Path:
        """A folder with a settings module of ours: Saleor's, plus the run's queue."""
        folder = self.root / "settings"
        folder.mkdir(exist_ok=True)
        target = folder / QUEUE_SETTINGS.name
        if not target.is_file() or target.read_text() != QUEUE_SETTINGS_TEXT:
            target.write_text(QUEUE_SETTINGS_TEXT)
        return folder


@dataclass
class RunningSaleor:
    """A Saleor started on a fresh copy of the template; ``url`` is its GraphQL endpoint."""

    build: SaleorBuild
    url: str
    database: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rsa_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_until_up(url: str, processes: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"Saleor exited ({process.returncode}); see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.5)  # a real server process booting
    raise TimeoutError(f"{url} did not come up; see {log}")


@contextlib.contextmanager
def started(build: SaleorBuild, log_dir: Path) -> Iterator[RunningSaleor]:
    """Saleor (uvicorn + a Celery worker) on a copy of the template, torn down on exit."""
    build.prepare()
    run = uuid.uuid4().hex[:10]
    database = f"fourws_saleor_run_{run}"
    _psql(f'CREATE DATABASE "{database}" TEMPLATE "{build.template}"')
    port = _free_port()
    queue = f"fourws-e2e-{run}"
    env = build.environment(_db_url(database), port=port, queue=queue)
    env["RSA_PRIVATE_KEY"] = _rsa_key()
    log = log_dir / "saleor.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as out:
            for command in (
                [
                    str(build.root / "venv" / "bin" / "uvicorn"),
                    "saleor.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                ],
                [
                    str(build.root / "venv" / "bin" / "celery"),
                    "--app",
                    "saleor.celeryconf:app",
                    "worker",
                    "--concurrency",
                    "1",
                    "--queues",
                    queue,
                    "--loglevel",
                    "INFO",
                ],
            ):
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=build.source,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        _wait_until_up(f"http://127.0.0.1:{port}/health/", processes, log)
        yield RunningSaleor(build, f"http://127.0.0.1:{port}/graphql/", database, log)
    finally:
        for process in processes:
            _stop(process)
        with contextlib.suppress(Exception):
            _psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def unavailable_reason(environ: Mapping[str, str], shared: Path | None = None) -> str | None:
    """Why the real-Saleor test cannot run here, or None when it can."""
    shared = source(environ) if shared is None else shared
    if tarball(shared) is None:
        return (
            f"real Saleor not available: no saleor-*.tar.gz in {shared} "
            "(opt-in: see plugins/saleor/README.md, 'End-to-end against a real Saleor')"
        )
    if python312() is None:
        return "real Saleor not available: no Python 3.12 (set FOURWS_PAY_SALEOR_PYTHON)"
    return None


def main(argv: list[str]) -> int:
    if argv[1:] != ["prepare"]:
        print("usage: real_saleor.py prepare", file=sys.stderr)
        return 2
    archive = tarball()
    if archive is None:
        _log(f"no Saleor tarball in {source()}: nothing to prepare")
        return 0
    SaleorBuild.of(archive).prepare()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
