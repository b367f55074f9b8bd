"""A throw-away JupyterLab server on loopback for browser tests, stopped by its PID.

Everything lives in a temporary directory: a copy of the notebooks (so running them never
touches the repository's files), the user settings (news, update checks and autosave off)
and the workspaces (so each test opens a fresh layout). Settings follow
/work/shared/NOTES-ECOSYSTEM.md, "A real browser, offline".
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


class JupyterLabServer:
    """``with JupyterLabServer() as server: page.goto(server.lab_url("notebooks/x.ipynb"))``."""

    def __init__(self, notebooks: Path = REPO / "notebooks", startup_timeout: float = 60.0, env=None):
        self.notebooks = Path(notebooks)
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.port = None
        self.proc: subprocess.Popen | None = None
        self.tmp: Path | None = None
        self.log_path: Path | None = None
        self._log = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "JupyterLabServer":
        self.tmp = Path(tempfile.mkdtemp(prefix="cnnvis-lab-"))
        root = self.tmp / "root"
        shutil.copytree(self.notebooks, root / self.notebooks.name)
        settings = self.tmp / "user-settings"
        for rel, value in _SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        (self.tmp / "workspaces").mkdir()
        self.port = free_port()
        env = dict(os.environ)
        env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        env["JUPYTER_RUNTIME_DIR"] = str(self.tmp / "runtime")
        env.update(self.extra_env)
        cmd = [
            sys.executable, "-m", "jupyter", "lab",
            f"--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}",
        ]
        self.log_path = self.tmp / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/api/status"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"jupyter lab not up after {self.startup_timeout} s:\n{self.log()}")

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

    def lab_url(self, notebook: str, workspace: str | None = None) -> str:
        """A fresh workspace showing ``notebook`` (a path under the server's root)."""
        workspace = workspace or f"test-{os.getpid()}-{int(time.time() * 1000)}"
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?reset"

    def log(self, tail: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]
