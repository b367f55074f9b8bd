"""Throw-away Jupyter servers on loopback for browser tests, stopped by their PIDs.

``JupyterLabServer``: everything lives in a temporary directory: a copy of the notebooks (so
running them never touches the repository's files), the user settings (news, update checks
and autosave off) and the workspaces (so each test opens a fresh layout).
``VoilaServer``: one notebook served as an app (``voila nb.ipynb``), like ``cnnvis app``.
Settings follow /work/shared/NOTES-ECOSYSTEM.md, "A real browser, offline".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SETTINGS = {
    # news and update checks would try the internet
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    # never write the executed notebook back (it is a copy anyway)
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_env(extra: dict) -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.update(extra)
    return env


class _ServerProcess:
    """A server in a session of its own, in a temporary directory; ``stop()`` ends it and its
    kernels (which jupyter_client starts in sessions of their own) by PID, even after a failure."""

    name = "server"

    def __init__(self, startup_timeout: float = 60.0, env=None):
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.tmp: Path | None = None
        self.log_path: Path | None = None
        self._log = None

    # subclasses: the command line (self.port and self.tmp are set), the working directory,
    # and a URL that answers (any HTTP status) once the server is up, without side effects
    def command(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> Path:
        return self.tmp

    def probe_url(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        self.tmp = Path(tempfile.mkdtemp(prefix=f"cnnvis-{self.name}-"))
        try:
            self.prepare()
            self.port = free_port()
            env = _test_env({"JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"), **self.extra_env})
            self.log_path = self.tmp / "server.log"
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the server runs
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd(),
                env=env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._wait_until_up()
        except BaseException:
            self.cleanup()
            raise
        return self

    def prepare(self) -> None:
        """Fill self.tmp before the server starts."""

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = self.probe_url()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not up after {self.startup_timeout} s:\n{self.log()}")

    def _children(self) -> list[int]:
        """PIDs whose parent is the server (its kernels run in sessions of their own)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def stop(self) -> None:
        """Stop the server and its kernels by PID; idempotent."""
        kernels = []
        if self.proc is not None and self.proc.poll() is None:
            kernels = self._children()
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own new session
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        for pid in kernels:  # the server shuts its kernels down on SIGTERM; make sure
            try:
                if "kernel" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    continue  # exited, and the PID is not (or no longer) one of our kernels
            except OSError:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # ------------------------------------------------------------------ helpers
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, tail: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]


class JupyterLabServer(_ServerProcess):
    """``with JupyterLabServer() as server: page.goto(server.lab_url("notebooks/x.ipynb"))``."""

    name = "lab"

    def __init__(self, notebooks: Path = REPO / "notebooks", startup_timeout: float = 60.0, env=None):
        super().__init__(startup_timeout, env)
        self.notebooks = Path(notebooks)

    @property
    def root(self) -> Path:
        return self.tmp / "root"

    def prepare(self) -> None:
        shutil.copytree(self.notebooks, self.root / self.notebooks.name)
        settings = self.tmp / "user-settings"
        for rel, value in _SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        (self.tmp / "workspaces").mkdir()

    def cwd(self) -> Path:
        return self.root

    def probe_url(self) -> str:
        return f"{self.base_url}/api/status"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "jupyter", "lab",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            f"--LabApp.user_settings_dir={self.tmp / 'user-settings'}",
            f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}",
        ]  # fmt: skip

    def lab_url(self, notebook: str, workspace: str | None = None) -> str:
        """A fresh workspace showing ``notebook`` (a path under the server's root)."""
        workspace = workspace or f"test-{os.getpid()}-{int(time.time() * 1000)}"
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?reset"

    def write_notebook(self, rel: str, cells: list[str]) -> str:
        """A notebook of code cells under the server's root (never in the repository); returns ``rel``."""
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(path))
        return rel

    def shutdown_kernels(self, timeout: float = 15.0) -> None:
        """Shut every session and kernel down through the REST API (a test's kernels must not
        keep computing, or holding memory, while the next test runs)."""

        def call(method: str, path: str):
            req = urllib.request.Request(f"{self.base_url}{path}", method=method)
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
            return json.loads(body) if body else None

        if self.proc is None or self.proc.poll() is not None:
            return
        for session in call("GET", "/api/sessions") or []:
            try:
                call("DELETE", f"/api/sessions/{session['id']}")
            except urllib.error.HTTPError:
                pass
        for kernel in call("GET", "/api/kernels") or []:
            try:
                call("DELETE", f"/api/kernels/{kernel['id']}")
            except urllib.error.HTTPError:
                pass


class VoilaServer(_ServerProcess):
    """``voila notebook.ipynb`` on loopback, the way ``cnnvis app`` serves it; the app is at ``url``."""

    name = "voila"

    def __init__(self, notebook: Path, startup_timeout: float = 60.0, env=None):
        super().__init__(startup_timeout, env)
        self.notebook = Path(notebook)

    def probe_url(self) -> str:
        # a static path: answers (404) without starting a kernel, unlike the app at "/"
        return f"{self.base_url}/voila/static/cnnvis-probe"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "voila", str(self.notebook),
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            f"--port={self.port}",
            "--Voila.port_retries=0",
            "--token=",
            "--show_tracebacks=True",  # a failing cell shows why, in the page and its screenshot
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"{self.base_url}/"
