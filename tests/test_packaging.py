"""Packaging: `pip install gantry` is the API and the CLI without torch; `gantry[worker]` adds what only
the worker imports; the lock files pin one version of each package and agree with pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Imported by gantry/worker only: the base package must neither depend on them nor import them.
WORKER_ONLY = {"torch": "torch", "scikit-learn": "sklearn", "scikit-image": "skimage", "numpy": "numpy",
               "pillow": "PIL"}  # fmt: skip
# Pulled in by the worker's packages, never by the base package (the dev tools need some of them).
WORKER_TREE = {"scipy", "networkx", "sympy", "imageio", "tifffile", "joblib", "threadpoolctl"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(line: str) -> tuple[str, str]:
    """("celery", "5.7.0") from "celery[redis]==5.7.0"."""
    name, _, version = line.partition("==")
    return canonical(name.split("[")[0].strip()), version.strip()


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def lock(name: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / f"{name}.lock").read_text().splitlines()
    return dict(requirement(line) for line in lines if line.strip() and not line.startswith("#"))


def test_the_base_package_leaves_the_worker_packages_to_the_worker_extra() -> None:
    base = dict(requirement(r) for r in project()["dependencies"])
    worker = dict(requirement(r) for r in project()["optional-dependencies"]["worker"])
    assert not set(base) & set(WORKER_ONLY), "the base package must not need the worker's packages"
    assert set(WORKER_ONLY) <= set(worker)
    assert worker["torch"] == "2.13.0"


def test_every_pin_is_exact_and_in_the_lock_of_its_extra() -> None:
    locks = {"api": lock("api"), "worker": lock("worker"), "dev": lock("dev")}
    groups = {"api": project()["dependencies"], **project()["optional-dependencies"]}
    for group, requirements in groups.items():
        for line in requirements:
            name, version = requirement(line)
            assert version, f"{line}: pyproject.toml pins every direct dependency"
            for in_lock in ("api", "worker", "dev") if group == "api" else (group,):
                if in_lock in locks:  # `text` has no lock: make never installs it
                    assert locks[in_lock].get(name) == version, f"{line} in requirements/{in_lock}.lock"


def test_the_lock_files_agree_and_the_api_lock_has_no_worker_package() -> None:
    api, worker, dev = lock("api"), lock("worker"), lock("dev")
    assert not set(api) & (set(WORKER_ONLY) | WORKER_TREE), "the api lock holds a worker package"
    assert not set(dev) & set(WORKER_ONLY), "dev.lock is installed without the worker (make lint)"
    assert set(api) <= set(worker) and set(api) <= set(dev)
    for name in set(worker) & set(dev):
        assert worker[name] == dev[name], f"{name}: worker.lock and dev.lock pin different versions"
    for name, version in api.items():
        assert worker[name] == dev[name] == version, name


def _without_worker_packages(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter in which the worker's packages cannot be imported."""
    blocked = [*sorted(WORKER_ONLY.values()), "scipy", "gantry.worker"]
    prelude = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in {blocked!r}):
                    raise ImportError(f"{{name}} is not installed (a base install has no worker packages)")
        sys.meta_path.insert(0, Block())
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env)


def test_the_api_and_the_cli_import_and_run_without_the_worker_packages() -> None:
    # Every module of the base package's layers, whatever they are called after a reshape.
    code = textwrap.dedent("""
        import importlib, pkgutil
        import gantry.api, gantry.jobs, gantry.migrations
        for package in (gantry.api, gantry.jobs, gantry.migrations):
            for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if module.name not in ("gantry.migrations.env",):  # alembic runs it, with its context
                    importlib.import_module(module.name)
        from click.testing import CliRunner
        from gantry.api.cli import cli
        result = CliRunner().invoke(cli, ["--help"])
        assert result.exit_code == 0 and "train" in result.output, result.output
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn", "skimage", "numpy", "PIL")))
    """)
    result = _without_worker_packages(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_embedded_mode_without_the_worker_packages_refuses_before_recording_a_job(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import os
        os.environ.pop("GANTRY_BROKER_URL", None)
        os.environ["GANTRY_HOME"] = {str(tmp_path)!r}
        from click.testing import CliRunner
        from gantry.api.cli import cli
        result = CliRunner().invoke(cli, ["train", "dcgan", "--steps", "2"])
        print(result.exit_code)
        print(result.output, repr(result.exception))
        listed = CliRunner().invoke(cli, ["list", "--json"])
        print(listed.output.strip())
    """)
    result = _without_worker_packages(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "4", result.stdout  # a service is missing: the worker
    assert "pip install 'gantry[worker]'" in result.stdout and "GANTRY_BROKER_URL" in result.stdout
    assert lines[-1] == "[]"  # nothing recorded


def test_serve_without_the_worker_packages_serves_and_says_what_jobs_need(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        from gantry.api.serve import plan, startup_lines
        from gantry.jobs.errors import ServiceUnavailable
        from gantry.jobs.settings import Settings
        p = plan(Settings(home={str(tmp_path)!r}, broker_url=None), with_worker=None)
        print(p.start_worker, p.settings.broker_url)
        print(*startup_lines(p, host="127.0.0.1", port=8000, api_workers=1, database_note=""), sep="\\n")
        try:
            plan(Settings(home={str(tmp_path)!r}, broker_url=None), with_worker=True)
        except ServiceUnavailable as exc:
            print("refused:", exc)
    """)
    result = _without_worker_packages(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "False None"  # no worker, no local queue nobody reads
    assert "pip install 'gantry[worker]'" in result.stdout and "GANTRY_BROKER_URL" in result.stdout
    assert "refused: worker" in result.stdout


@pytest.mark.slow
def test_a_fresh_venv_with_the_api_lock_runs_the_cli(tmp_path: Path) -> None:
    """What deploy/Dockerfile.api does, without Docker: a venv that sees no other site-packages, the
    api lock installed without dependency resolution (so it must be the whole tree), then the base
    package. About a minute; pip takes the packages from wherever its configuration points."""
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the repository
    source.mkdir()
    shutil.copytree(ROOT / "gantry", source / "gantry", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # Nothing of this checkout or of the test's environment on the venv's path.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANTRY_", "PYTHON", "VIRTUAL_ENV"))}
    env["GANTRY_HOME"] = str(tmp_path / "home")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements" / "api.lock")], check=True, env=env, cwd=tmp_path)
    subprocess.run([*pip, str(source)], check=True, env=env, cwd=tmp_path)
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout  # the lock is the whole tree of the base package
    listed = subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True, env=env)
    assert not {canonical(line.split()[0]) for line in listed.stdout.splitlines()[2:]} & set(WORKER_ONLY)

    def gantry(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [venv / "bin" / "gantry", *args], capture_output=True, text=True, env=env, cwd=tmp_path
        )

    assert gantry("--help").returncode == 0
    assert gantry("db", "upgrade").returncode == 0
    assert gantry("list", "--json").stdout.strip() == "[]"
    refused = gantry("train", "dcgan", "--set", "nosuch=1")
    assert refused.returncode == 2 and "nosuch" in refused.stderr

    # The image's other use: the API in front of Redis. Kombu's Redis transport loads (it needs
    # the redis package, which only the lock brings), and `gantry serve` answers.
    redis_transport = (
        "from gantry.jobs.queue import make_celery; from gantry.jobs.settings import Settings; "
        "print(type(make_celery(Settings(broker_url='redis://127.0.0.1:1/0')).connection_for_write().transport))"
    )
    loaded = subprocess.run(
        [python, "-c", redis_transport], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert "kombu.transport.redis" in loaded.stdout, loaded.stderr
    port = _free_port()
    serve = subprocess.Popen(
        [venv / "bin" / "gantry", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _answers(f"http://127.0.0.1:{port}/healthz", serve), "gantry serve did not answer /healthz"
    finally:
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=30)
    assert serve.returncode == 0, output
    assert "pip install 'gantry[worker]'" in output, output  # what jobs need: said at start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return answer.status == 200
        except OSError:
            time.sleep(0.2)
    return False
