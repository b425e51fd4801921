"""``launcher=multinode``: one study on several machines, each started with the same
``ablate run … launcher=multinode launcher.node_rank=K`` command.

Node 0 leads: its driver plans, decides (skip / resume / run / refuse / share), takes the study
lock and is the only one that writes into the results folder. For the whole session it hosts a
small key-value store (torch's ``TCPStore``) on ``launcher.rdzv_endpoint``; every torchrun
agent, on every node, joins each run's c10d rendezvous through that store
(``--rdzv-conf is_host=false``), and node 0 announces there each run it launches.

The other nodes follow: their drivers compose and check the same study (so a typo stops every
node before anything runs) but never decide anything from the results folder — they would race
with node 0, which writes it. They launch exactly the runs node 0 announces, in node 0's order,
after checking that their own config for that run has the same hash (the same command on every
node). They take no lock and write nothing under the results root: their copy of each run's
``config.yaml`` and their torchrun output go to a node-local spool folder (``launcher.spool``).
The workers then agree on the writer: the first rank of node 0 (``ABLATE_NODE_RANK``, see
``engine.dist``), which reads the checkpoint and broadcasts it to the others.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ablate.engine.run_io import atomic_write_text
from ablate.errors import AblateError
from ablate.launch._proc import OnLine
from ablate.launch.local import run_command

KEY = "ablate/launch/{}"   # node 0's announcements, numbered from 0
DONE = "ablate/done/{}"    # node 0's exit code of announcement k
ACKS = "ablate/acks"       # followers that saw the end of the session


def endpoint(cfg: Mapping[str, Any]) -> tuple[str, int]:
    ep = cfg.get("rdzv_endpoint")
    if not ep:
        raise AblateError("launcher.rdzv_endpoint: set it to host:port of node 0, reachable from "
                          "every node (e.g. launcher.rdzv_endpoint=node0.cluster:29400)")
    host, _, port = str(ep).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AblateError(f"launcher.rdzv_endpoint must be host:port, got '{ep}'")
    return host.strip("[]"), int(port)


def check(cfg: Mapping[str, Any], nproc: int) -> None:
    endpoint(cfg)
    nnodes, rank = cfg.get("nnodes"), cfg.get("node_rank")
    if not isinstance(nnodes, int) or nnodes < 1:
        raise AblateError(f"launcher.nnodes must be a positive integer, got {nnodes!r}")
    if not isinstance(rank, int) or not 0 <= rank < nnodes:
        raise AblateError(f"launcher.node_rank must be 0 … {nnodes - 1} (launcher.nnodes="
                          f"{nnodes}), got {rank!r}")
    if cfg.get("rdzv_backend", "c10d") != "c10d":
        raise AblateError(f"launcher.rdzv_backend: only c10d is supported (node 0 hosts its "
                          f"store), got '{cfg.get('rdzv_backend')}'")


def node_rank(cfg: Mapping[str, Any]) -> int:
    return int(cfg.get("node_rank") or 0)


def run_key(run_dir: Path) -> str:
    """A run's name shared by all nodes: ``<study>/<scale>/<step>/seed<k>`` (the results root
    may be mounted at different paths on different nodes)."""
    return "/".join(Path(run_dir).parts[-4:])


def torchrun_command(config: Path, cfg: Mapping[str, Any], nproc: int, config_hash: str,
                     module: str = "ablate.worker") -> list[str]:
    """The torchrun agent of one node for one run. The rendezvous id is per run (``rdzv_id``
    + the config hash), so runs never join each other's rendezvous on the shared store."""
    host, port = endpoint(cfg)
    rdzv_conf = f"is_host=false,join_timeout={int(cfg.get('join_timeout') or 600)}"
    local_addr = cfg.get("local_addr")
    return [sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={int(cfg['nnodes'])}", f"--nproc-per-node={nproc}",
            f"--rdzv-backend={cfg.get('rdzv_backend') or 'c10d'}",
            f"--rdzv-endpoint={host}:{port}",
            f"--rdzv-id={cfg.get('rdzv_id') or 'ablate'}-{config_hash}",
            f"--rdzv-conf={rdzv_conf}",
            *([f"--local-addr={local_addr}"] if local_addr else []),
            "-m", module, str(config)]


def worker_env(cfg: Mapping[str, Any]) -> dict[str, str]:
    return {"ABLATE_NODE_RANK": str(node_rank(cfg))}


# --- node 0 -------------------------------------------------------------------------------------

class Leader:
    """Node 0's side of a session: hosts the store, announces each run before launching it."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        from torch.distributed import TCPStore

        self.cfg = dict(cfg)
        host, port = endpoint(cfg)
        try:
            self.store = TCPStore(host, port, is_master=True, wait_for_workers=False,
                                  timeout=timedelta(seconds=60))
        except Exception as e:  # noqa: BLE001  (torch raises several kinds)
            raise AblateError(f"launcher.rdzv_endpoint {host}:{port}: node 0 cannot listen "
                              f"there ({str(e).splitlines()[0]}); pick a free port") from None
        self.lock = threading.Lock()
        self.count = 0

    def announce(self, key: str, config_hash: str, env: Mapping[str, str]) -> int:
        with self.lock:
            k = self.count
            self.count += 1
            msg = {"kind": "run", "key": key, "hash": config_hash,
                   "devices": env.get("CUDA_VISIBLE_DEVICES"),
                   "threads": env.get("OMP_NUM_THREADS")}
            self.store.set(KEY.format(k), json.dumps(msg))
        return k

    def finished(self, k: int, code: int) -> None:
        with self.lock:
            self.store.set(DONE.format(k), str(code))

    def close(self, code: int, reason: str = "") -> None:
        """Announce the end and wait until every other node has read it (at most
        ``join_timeout``): a node started late still learns that node 0 is done."""
        with self.lock:
            self.store.set(KEY.format(self.count), json.dumps({"kind": "end", "code": code,
                                                               "reason": reason}))
        others = int(self.cfg.get("nnodes") or 1) - 1
        timeout = int(self.cfg.get("join_timeout") or 600)
        deadline, told = time.time() + timeout, False
        while time.time() < deadline and self.store.add(ACKS, 0) < others:
            if not told and time.time() > deadline - timeout + 5:
                print(f"node 0: waiting (at most {timeout} s) for the other nodes to see the "
                      "end of the study", file=sys.stderr, flush=True)
                told = True
            time.sleep(0.1)


_LEADER: Leader | None = None


@contextmanager
def leading(cfg: Mapping[str, Any]) -> Iterator[Leader]:
    """Node 0's session (``ablate run``): every multinode launch inside is announced. The end,
    with the exit code, is announced however the block ends."""
    global _LEADER
    leader = Leader(cfg)
    _LEADER = leader
    code, reason = 0, ""
    try:
        yield leader
    except AblateError as e:
        code, reason = 2, str(e)
        raise
    except KeyboardInterrupt:
        code, reason = 130, "interrupted on node 0"
        raise
    except BaseException as e:
        exit_code = getattr(e, "exit_code", None)  # the command line's exit with a code
        code, reason = (exit_code, "") if isinstance(exit_code, int) else (1, str(e))
        raise
    finally:
        _LEADER = None
        leader.close(code, reason)


def run(config: Path, cfg: Mapping[str, Any], nproc: int, on_line: OnLine | None = None,
        env: Mapping[str, str] | None = None) -> int:
    """Node 0 launches one run (announced to the followers first)."""
    from omegaconf import OmegaConf

    from ablate.config import config_hash

    if node_rank(cfg) != 0:
        raise AblateError("only node 0 launches runs itself; the other nodes follow it "
                          "(`ablate run … launcher.node_rank=K`)")
    if _LEADER is None:
        raise AblateError("launcher=multinode runs through `ablate run` (node 0 coordinates "
                          "the nodes for the whole study)")
    chash = config_hash(OmegaConf.load(config))
    full_env = {**(env or {}), **worker_env(cfg)}
    k = _LEADER.announce(run_key(config.parent), chash, full_env)
    code = 1
    try:
        code = run_command(torchrun_command(config, cfg, nproc, chash),
                           config.parent / "stdout.log", on_line, full_env)
    finally:
        _LEADER.finished(k, code)
    return code


# --- the other nodes ----------------------------------------------------------------------------

def spool_dir(cfg: Mapping[str, Any]) -> Path:
    import tempfile

    return Path(cfg.get("spool") or Path(tempfile.gettempdir()) / "ablate-spool")


def _join(host: str, port: int, rank: int, timeout: int) -> Any:
    """A client of node 0's store, or an error saying how to start node 0."""
    from torch.distributed import TCPStore

    try:
        return TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout))
    except Exception as e:  # noqa: BLE001
        raise AblateError(f"node {rank}: cannot reach node 0 at {host}:{port} within "
                          f"{timeout} s ({str(e).splitlines()[0]}); start `ablate run` on node "
                          "0 with the same command and launcher.node_rank=0") from None


def _check_planned(msg: Mapping[str, Any], configs: Mapping[str, tuple[Any, str]],
                   rank: int) -> None:
    """Node 0's run is one this node planned, with the same config."""
    key = msg["key"]
    if key not in configs:
        raise AblateError(f"node {rank}: node 0 launched {key}, which this node did not "
                          "plan: run the same command (study, --scale, --only, --set) "
                          "on every node")
    chash = configs[key][1]
    if chash != msg["hash"]:
        raise AblateError(f"node {rank}: {key}: node 0's config hash {msg['hash']} ≠ "
                          f"this node's {chash}: run the same command on every node")


def _write_config(run_dir: Path, config: Any) -> Path:
    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(config))
    return run_dir / "config.yaml"


def _run_env(cfg: Mapping[str, Any], msg: Mapping[str, Any]) -> dict[str, str]:
    """The worker environment, with the devices and threads node 0 gave the run."""
    env = worker_env(cfg)
    if msg.get("devices") is not None:
        env["CUDA_VISIBLE_DEVICES"] = msg["devices"]
    if msg.get("threads"):
        env["OMP_NUM_THREADS"] = msg["threads"]
    return env


def follow(configs: Mapping[str, tuple[Any, str]], cfg: Mapping[str, Any], nproc: int,
           say: Callable[[str], None] = print) -> int:
    """A follower node's session: launch each run node 0 announces until node 0 ends.

    Args:
        configs: ``run_key → (resolved config, its hash)`` for every run this node planned.
        cfg: the launcher config (this node's ``node_rank``).
        nproc: processes per run on this node.
        say: where progress lines go.

    Returns:
        The exit code: node 0's, or 1 when a run failed here or node 0 went away.
    """
    check(cfg, nproc)
    host, port = endpoint(cfg)
    rank = node_rank(cfg)
    timeout = int(cfg.get("join_timeout") or 600)
    spool = spool_dir(cfg)
    say(f"node {rank}: following node 0 at {host}:{port} (run files in {spool})")
    store = _join(host, port, rank, timeout)
    threads: list[threading.Thread] = []
    codes: dict[int, int] = {}

    def launch(k: int, key: str, config: Path, env: dict[str, str]) -> None:
        say(f"node {rank}: {key}: started")
        code = 1
        try:
            code = run_command(torchrun_command(config, cfg, nproc, configs[key][1]),
                               config.parent / "stdout.log", None, env)
        finally:
            codes[k] = code
            log = config.parent / "stdout.log"
            say(f"node {rank}: {key}: " + ("done" if code == 0 else
                                           f"FAILED (exit {code}; see {log})"))

    k, end = 0, None
    try:
        while end is None:
            if not store.check([KEY.format(k)]):
                time.sleep(0.1)
                continue
            msg = json.loads(store.get(KEY.format(k)))
            if msg["kind"] == "end":
                end = msg
                break
            key = msg["key"]
            _check_planned(msg, configs, rank)
            if store.check([DONE.format(k)]):  # node 0 already gave up on it (e.g. a timeout)
                codes[k] = int(store.get(DONE.format(k)))
                k += 1
                continue
            config = _write_config(spool / key, configs[key][0])
            t = threading.Thread(target=launch, args=(k, key, config, _run_env(cfg, msg)),
                                 daemon=True)
            t.start()
            threads.append(t)
            k += 1
        store.add(ACKS, 1)
    except AblateError:
        store.add(ACKS, 1)  # node 0 need not wait for this node at its end
        raise
    except Exception as e:  # noqa: BLE001  (the store is gone: node 0 stopped)
        say(f"node {rank}: lost node 0 ({str(e).splitlines()[0]})")
        end = {"code": 1, "reason": "node 0 went away"}
    for t in threads:
        t.join()
    code = int(end.get("code", 1))
    if code != 0:
        say(f"node {rank}: node 0 ended with exit code {code}"
            + (f": {end['reason']}" if end.get("reason") else ""))
        return code
    return 1 if any(c != 0 for c in codes.values()) else 0


def describe(cfg: Mapping[str, Any], nproc: int, config: Path | None = None,
             config_hash: str = "<hash>") -> str:
    cmd = torchrun_command(config or Path("config.yaml"), cfg, nproc, config_hash)
    return (f"ABLATE_NODE_RANK={node_rank(cfg)} torchrun " + " ".join(cmd[3:]))


def is_follower(cfg: Mapping[str, Any]) -> bool:
    return cfg.get("name") == "multinode" and node_rank(cfg) > 0
