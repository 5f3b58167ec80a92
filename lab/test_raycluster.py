"""The loopback Ray cluster: bad input gives one clear line, and no process of
a cluster outlives it, whether the run ends, fails or is interrupted.

The tests that start Ray are marked integration (seconds each, serial)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from lab import raycluster
from lab.raycluster import NODE_IPS, RayCluster, marked_processes
from tools.common import ROOT, ForkError, run


def test_too_little_shared_memory_is_one_clear_line(tmp_path):
    with pytest.raises(ForkError, match=r"Ray needs \d+ MiB of shared memory .* MiB free"):
        raycluster.check_shared_memory(tmp_path, need=1 << 60)
    raycluster.check_shared_memory(tmp_path, need=1)
    with pytest.raises(ForkError, match="Ray needs shared memory at"):
        raycluster.check_shared_memory(tmp_path / "missing")


def test_the_cluster_has_one_or_two_nodes():
    with pytest.raises(ValueError):
        RayCluster(nodes=3, workers_per_node=1)
    with pytest.raises(ValueError):
        RayCluster(nodes=0, workers_per_node=1)


def test_the_processes_of_a_cluster_are_found_by_its_marker():
    env = {**os.environ, raycluster.MARKER_ENV: "abc123"}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert marked_processes("abc123") == [child.pid]
        assert child.pid in marked_processes(None)
        assert other.pid not in marked_processes(None)
    finally:
        child.kill(), other.kill(), child.wait(), other.wait()
    assert marked_processes("abc123") == []


def nodes_of(address: str) -> list[tuple[str, float]]:
    import ray

    ray.init(address=address, logging_level="ERROR")
    try:
        return sorted((n["NodeManagerAddress"], n["Resources"].get("GPU", 0))
                      for n in ray.nodes() if n["Alive"])
    finally:
        ray.shutdown()


@pytest.mark.integration
def test_two_nodes_on_loopback_hold_one_worker_slot_each_and_leave_nothing():
    """Also where SIGINT is ignored, as for every process CI starts in the
    background: the cluster stops without anything killed by force."""
    import signal

    cluster = RayCluster(nodes=2, workers_per_node=1)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the nodes
    try:
        address = cluster.__enter__()
    finally:
        signal.signal(signal.SIGINT, before)
    try:
        assert address.startswith(f"{NODE_IPS[0]}:")
        assert nodes_of(address) == [(NODE_IPS[0], 1.0), (NODE_IPS[1], 1.0)]
        assert len(marked_processes(cluster.marker)) >= 4  # 2 x (ray start, raylet)
    finally:
        cluster.stop()
    assert marked_processes(cluster.marker) == []
    assert cluster.stopped_forcibly == 0
    assert not cluster.root.exists()


@pytest.mark.integration
def test_a_failure_inside_the_cluster_stops_it():
    cluster = RayCluster(nodes=1, workers_per_node=2)
    with pytest.raises(RuntimeError, match="the engine failed"):
        with cluster:
            raise RuntimeError("the engine failed")
    assert marked_processes(cluster.marker) == []


@pytest.mark.integration
def test_a_port_in_use_is_one_clear_line_and_leaves_nothing():
    with socket.socket() as taken:
        taken.bind((NODE_IPS[0], 0))
        taken.listen()
        cluster = RayCluster(nodes=1, workers_per_node=2, port=taken.getsockname()[1])
        with pytest.raises(ForkError, match=r"^Ray could not start node 1 \(127\.0\.0\.2\): "):
            with cluster:
                pass
    assert marked_processes(cluster.marker) == []


@pytest.mark.integration
def test_a_picked_port_taken_before_ray_binds_it_is_picked_again(monkeypatch, capfd):
    """The head's port is picked free and released; if something takes it
    before Ray binds it, the cluster starts again on ports picked anew."""
    from lab import raycluster

    with socket.socket() as taken:
        taken.bind((NODE_IPS[0], 0))
        taken.listen()
        picks = [taken.getsockname()[1]]
        real = raycluster.free_port
        monkeypatch.setattr(raycluster, "free_port",
                            lambda ip: picks.pop() if picks else real(ip))
        cluster = RayCluster(nodes=1, workers_per_node=2)
        with cluster as address:
            assert address != f"{NODE_IPS[0]}:{taken.getsockname()[1]}"
    assert "starting the cluster again on other ports" in capfd.readouterr().err
    assert marked_processes(cluster.marker) == []


HOLD = """
import signal, sys, time
from lab.raycluster import RayCluster
# As in a terminal: a process started in the background inherits SIGINT
# ignored, and Ctrl-C reaches only a foreground one.
signal.signal(signal.SIGINT, signal.default_int_handler)
cluster = RayCluster(nodes=2, workers_per_node=1)
with cluster as address:
    print("MARKER", cluster.marker, flush=True)
    time.sleep(600)
"""


def start_holder() -> tuple[subprocess.Popen, str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD], cwd=ROOT, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, start_new_session=True)
    line = holder.stdout.readline()
    assert line.startswith("MARKER "), line
    return holder, line.split()[1]


@pytest.mark.integration
def test_ctrl_c_stops_the_cluster():
    holder, marker = start_holder()
    assert marked_processes(marker)
    os.kill(holder.pid, 2)  # SIGINT to the process, as Ctrl-C in a terminal
    holder.wait(timeout=60)
    assert marked_processes(marker) == []


@pytest.mark.integration
def test_a_run_stopped_by_its_caller_leaves_no_ray_process():
    """tools.common.run stops a command that runs too long, by process group:
    the cluster's processes are in it."""
    started = time.monotonic()
    with pytest.raises(ForkError, match="did not finish"):
        run([sys.executable, "-c", HOLD], "holding a cluster", cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=25)
    assert time.monotonic() - started < 60
    time.sleep(1)
    assert marked_processes(None) == []


class PortReusingSocket:
    """A socket whose kernel hands out the lowest free port, as a real one
    may after a port is released: picks made one after another, each
    socket closed before the next, then all get the same port."""
    in_use: set[int] = set()

    def __init__(self, *args):
        self.port = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        PortReusingSocket.in_use.discard(self.port)

    def bind(self, address):
        self.port = min(set(range(40000, 40100)) - PortReusingSocket.in_use)
        PortReusingSocket.in_use.add(self.port)

    def getsockname(self):
        return ("127.0.0.2", self.port)


def test_a_nodes_ports_differ_even_where_the_kernel_reuses_a_released_one(monkeypatch):
    """A node's ports, and the head's port picked before them, are all
    different (Ray refuses a node with one port twice)."""
    monkeypatch.setattr(raycluster.socket, "socket", PortReusingSocket)
    head = raycluster.free_port("127.0.0.1")
    ports = raycluster.free_ports("127.0.0.1", 7, avoid=frozenset({head}))
    assert len(ports) == 7 and len(set(ports) | {head}) == 8
    assert PortReusingSocket.in_use == set()
