"""Ray as the codec pool's executor: the same `submit(fn, *args) -> Future` as the local process pool.

`CodecPool(executor="ray")` sends each round-trip (or encode job) to a Ray task of one CPU, so a sweep or a folder
encode spreads over every node of a cluster while the driver keeps the task model. Nothing else changes: the work
functions are the same module-level functions the local pool runs, so bytes and records are identical (tested
against a local Ray instance). `address=None` starts a private local instance with `workers` CPUs (and stops it
at `shutdown`); an address ("auto", "ray://head:10001", "10.0.0.5:6379") joins an existing cluster, whose nodes
must have the same prepcodec installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future

from prepcodec.codecs.pool import THREAD_ENV_VARS
from prepcodec.errors import BackendUnavailable


def _ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailable("--executor ray needs Ray: pip install 'ray==2.60.0'") from None
    return ray


PROBE_TIMEOUT_S = 5.0


def probe_address(address: str) -> None:
    """BackendUnavailable unless something listens at a "host:port" / "ray://host:port" address: `ray.init` on an
    unreachable cluster retries for minutes instead of failing ("auto" is resolved by Ray itself, quickly)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address != "auto":
            raise BackendUnavailable(f"Ray address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise BackendUnavailable(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None


def _call(fn: Callable, *args):
    """What a Ray task runs: the pool's work function, unchanged."""
    return fn(*args)


class RayExecutor:
    """A `concurrent.futures`-like executor on Ray (only what `CodecPool` uses: submit and shutdown)."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        ray = _ray()
        self._owned = not ray.is_initialized()
        if self._owned:
            if address is not None:
                probe_address(address)
            kwargs = {"address": address, "include_dashboard": False, "log_to_driver": False,
                      "runtime_env": {"env_vars": dict.fromkeys(THREAD_ENV_VARS, "1")}, "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = workers or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
                where = address or "a new local instance"
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise BackendUnavailable(f"cannot start or reach Ray at {where}: {first}") from None
        self._task = ray.remote(num_cpus=1, max_retries=0)(_call)

    def submit(self, fn: Callable, *args) -> Future:
        return self._task.remote(fn, *args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Stop the local instance this executor started (a cluster it joined keeps running)."""
        if self._owned:
            ray = _ray()
            if ray.is_initialized():
                ray.shutdown()
            self._owned = False
