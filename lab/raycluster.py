"""A Ray cluster of one or two nodes on this machine's loopback, started and
stopped by the engine run that needs it (proof/generate.py).

Each node is a `ray start --block` process with its own IP on the loopback
network (127.0.0.2, 127.0.0.3: Ray rewrites 127.0.0.1 to the host's outward
address, so it is not used). The processes run in the caller's process
group, and every process of the cluster carries a marker in its environment
(Ray's workers inherit their raylet's), so that stopping can find and check
them all: a run, a failure or an interrupt leaves no GCS, raylet or worker.

The cluster starts with the caller's environment: Ray's workers import vLLM
and the streamer from their raylet's PYTHONPATH, so one cluster serves one
tree and one loader.

vLLM places one worker per Ray "GPU" (its platform's ray_device_key); on CPU
that key is empty in vLLM 0.21 (the Ray executor refuses), and the test
environment's platform plugin (env/cpu_ray_resource) names "GPU". Each node
here declares as many logical "GPU" slots as workers it is to host, so that
the placement is fixed: all on one node, or one worker per node. No GPU is
used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.common import ForkError, root_cause

NODE_IPS = ("127.0.0.2", "127.0.0.3")
# Small on purpose: vLLM's Ray executor passes its messages through its own
# shared-memory queues, not Ray's object store (Ray's minimum is 75 MiB).
OBJECT_STORE_BYTES = 80 * 1024 * 1024
SHM = Path("/dev/shm")
MARKER_ENV = "LAB_RAY_CLUSTER"
START_TIMEOUT_S = 120
# Starts of a cluster whose ports this module picked (see __enter__).
START_ATTEMPTS = 2
STOP_GRACE_S = 30
RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(ip: str, count: int, avoid: frozenset[int] = frozenset()) -> list[int]:
    """count different free ports on ip, none of them in avoid (picked
    earlier and not yet listened on). All are held until all are picked: a
    port released after one pick may be the kernel's next pick, and Ray then
    refuses to start ("trying to use a port number ... that is used by other
    components")."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count + len(avoid))]
        for s in socks:
            s.bind((ip, 0))
        return [p for p in (s.getsockname()[1] for s in socks) if p not in avoid][:count]


def free_port(ip: str) -> int:
    return free_ports(ip, 1)[0]


def check_shared_memory(path: Path = SHM, need: int = OBJECT_STORE_BYTES) -> None:
    """Ray keeps its object store in shared memory; with too little it
    would fall back to disk or fail late. Say so at once."""
    try:
        stats = os.statvfs(path)
    except OSError as e:
        raise ForkError(f"Ray needs shared memory at {path}: {e.strerror}") from e
    free = stats.f_bavail * stats.f_frsize
    if free < need:
        raise ForkError(f"Ray needs {need // 2**20} MiB of shared memory for its object store; "
                        f"{path} has {free // 2**20} MiB free")


def marked_processes(marker: str | None) -> list[int]:
    """Pids of the live processes whose environment carries the marker (None:
    that of any cluster)."""
    needle = f"{MARKER_ENV}={marker or ''}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone, or not ours to read
        if state != "Z" and any(var == needle or (marker is None and var.startswith(needle))
                                for var in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def cluster_for(layout: str):
    """The cluster an engine run of this layout (lab/engine.LAYOUTS) runs on,
    with RAY_ADDRESS set for vLLM while it lasts; nothing for mp."""
    from lab.engine import LAYOUTS, TENSOR_PARALLEL

    nodes = LAYOUTS[layout]
    if nodes is None:
        yield None
        return
    with RayCluster(nodes, TENSOR_PARALLEL // nodes) as address:
        os.environ["RAY_ADDRESS"] = address
        try:
            yield address
        finally:
            os.environ.pop("RAY_ADDRESS", None)


def placement_problems(result: dict, layout: str) -> list[str]:
    """How a run's workers were placed unlike its layout: under Ray, every
    rank on a node of its own loopback cluster, on as many nodes as the
    layout has; otherwise no Ray at all."""
    from lab.engine import LAYOUTS

    nodes = [rank.get("ray_node") for rank in result["ranks"]]
    if LAYOUTS[layout] is None:
        return [f"ranks ran on Ray nodes {nodes}, expected no Ray"] if any(nodes) else []
    if not all(node in NODE_IPS for node in nodes):
        return [f"ranks ran on Ray nodes {nodes}, expected this machine's {NODE_IPS}"]
    if len(set(nodes)) != LAYOUTS[layout]:
        return [f"ranks ran on Ray nodes {nodes}, expected {LAYOUTS[layout]} distinct nodes"]
    return []


class RayCluster:
    """`with RayCluster(nodes=2, workers_per_node=1) as address:` a cluster
    whose head listens at `address` (host:port), stopped on exit."""

    def __init__(self, nodes: int, workers_per_node: int, env: dict | None = None,
                 port: int | None = None) -> None:
        if not 1 <= nodes <= len(NODE_IPS):
            raise ValueError(f"{nodes} nodes: this machine's loopback cluster has 1 to "
                             f"{len(NODE_IPS)}")
        self.nodes, self.workers_per_node = nodes, workers_per_node
        self.marker = secrets.token_hex(8)
        self.env = {**(os.environ if env is None else env), MARKER_ENV: self.marker,
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="lab-ray-"))
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.address = ""
        self.stopped_forcibly = 0

    def _start_node(self, index: int) -> None:
        ip = NODE_IPS[index]
        log = self.root / f"node{index}.log"
        # Every port this node listens on is picked here, on its own IP, so
        # that two nodes (or two clusters) on one machine never share one.
        flags = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--metrics-export-port",
                 "--runtime-env-agent-port", "--ray-client-server-port"]
        picked = free_ports(ip, len(flags), avoid=frozenset({self.port}))
        ports = dict(zip(flags, map(str, picked), strict=True))
        if index != 0:
            del ports["--ray-client-server-port"]  # the head's only
        cmd = [RAY, "start", "--block", f"--node-ip-address={ip}",
               f"--num-gpus={self.workers_per_node}", "--num-cpus=1",
               f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats",
               *[f"{flag}={port}" for flag, port in ports.items()]]
        env = dict(self.env)
        if index == 0:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false",
                    f"--temp-dir={self.root / 'head'}"]
        else:
            cmd += [f"--address={self.address}"]
            # Not the head's session directory: each node caches its own IP
            # there, and a driver on the head must read the head's.
            env["RAY_TMPDIR"] = str(self.root / f"node{index}")
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        self.logs.append(log)
        self._wait_started(proc, log, f"node {index + 1} ({ip})")

    def _wait_started(self, proc: subprocess.Popen, log: Path, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                text = log.read_text(errors="replace")
                cause = root_cause(text) or text.strip().splitlines()[-1:] or ["nothing printed"]
                cause = cause if isinstance(cause, str) else cause[0]
                raise ForkError(f"Ray could not start {what}: {cause}")
            if time.monotonic() > deadline:
                raise ForkError(f"Ray did not start {what} in {START_TIMEOUT_S} s; see {log}")
            time.sleep(0.5)

    def __enter__(self) -> str:
        check_shared_memory()
        asked = self.port
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = asked or free_port(NODE_IPS[0])
            self.address = f"{NODE_IPS[0]}:{self.port}"
            try:
                for index in range(self.nodes):
                    self._start_node(index)
                return self.address
            except ForkError as err:
                self.stop()
                # Ports are picked free and released, so anything on the machine
                # (an engine's processes bind ports all the time) can take one
                # before Ray binds it: once more on ports picked anew. A port the
                # caller named is not picked again.
                if asked or attempt == START_ATTEMPTS:
                    raise
                print(f"==> {err}; starting the cluster again on other ports",
                      file=sys.stderr, flush=True)
                self.root = Path(tempfile.mkdtemp(prefix="lab-ray-"))
                self.procs, self.logs = [], []
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process of the cluster, then check that none is left;
        the cluster's files go too.

        By SIGTERM to each process the marker finds (Ray's own processes
        exit cleanly on it), then SIGKILL to what is left after STOP_GRACE_S.
        Not by SIGINT to `ray start --block`: a process started in the
        background (CI, `make demo &`) inherits SIGINT ignored, and
        `ray start` has no other way to stop its children; SIGTERM kills it
        alone."""
        self._signal(marked_processes(self.marker), signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while marked_processes(self.marker) and time.monotonic() < deadline:
            for proc in self.procs:
                proc.poll()  # reap our own children, so they do not linger as zombies
            time.sleep(0.2)
        left = marked_processes(self.marker)
        self._signal(left, signal.SIGKILL)
        self.stopped_forcibly = len(left)
        for proc in self.procs:
            proc.wait()
        time.sleep(0.2 if left else 0)
        still = marked_processes(self.marker)
        shutil.rmtree(self.root, ignore_errors=True)
        if still:
            raise ForkError(f"Ray processes {still} outlived their cluster")

    @staticmethod
    def _signal(pids: list[int], sig: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
