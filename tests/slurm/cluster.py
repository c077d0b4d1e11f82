"""A one-node SLURM cluster (munged + slurmctld + slurmd) in a temporary directory, for tests.

Everything lives under one folder: the munge key and socket, `slurm.conf`, state, spool and
logs; the daemons run in the foreground as children of the test process, on free localhost
ports, and `stop()` ends them (and every job) so that no daemon outlives the test. Clients find
the cluster through `SLURM_CONF`, which `env()` sets.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
INSTALL = "apt-get install slurm-wlm munge"


def unavailable() -> str | None:
    """Why a cluster cannot start on this machine, or None when it can."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing; `{INSTALL}`)"
    if os.geteuid() != 0:
        return "slurmd launches jobs only when started as root"
    if (os.cpu_count() or 1) < 2:
        return "the SLURM tests run 2 tasks on 2 CPUs"
    return None


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (bound together so that they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Cluster:
    """A running one-node cluster rooted at `root`."""

    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        """The cluster's slurm.conf."""
        return self.root / "slurm.conf"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a client command (and of the jobs it submits)."""
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def start(self, cpus: int = 2) -> Cluster:
        """Write the configuration, start the three daemons and wait for the node to be idle."""
        for name in ("state", "spool", "log", "munge"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        socket_path = self.root / "munge" / "munge.sock"
        ctld_port, node_port = free_ports(2)
        memory = 4096
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=eegfmtest",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={node_port}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={socket_path},cred_expire=10",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "SchedulerType=sched/backfill",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "JobRequeue=1",
                    "JobCompType=jobcomp/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "MinJobAge=300",
                    "KillWait=10",
                    "SlurmdTimeout=60",
                    "SlurmctldTimeout=60",
                    "InactiveLimit=0",
                    "SlurmdParameters=config_overrides",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} "
                    f"RealMemory={memory} State=UNKNOWN",
                    f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        log = self.root / "log"
        self._spawn(
            "munged",
            ["munged", "--foreground", "--force", f"--socket={socket_path}",
             f"--key-file={key}", f"--pid-file={self.root / 'munge' / 'munged.pid'}",
             f"--seed-file={self.root / 'munge' / 'munged.seed'}",
             f"--log-file={log / 'munged.log'}"],
        )  # fmt: skip
        self.wait_for(lambda: socket_path.exists(), "munged", 20)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)])
        self.wait_for(self._node_idle, "the node to be idle", 60)
        return self

    def _spawn(self, name: str, command: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.stdout", "w")  # noqa: SIM115 (lives with the daemon)
        self.processes[name] = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )

    def _node_idle(self) -> bool:
        result = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll `ready` until it is true; fail naming `what` (and the daemon logs) otherwise."""
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}): {self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def run(self, command: list[str], check: bool = True, **extra: str):
        """Run a SLURM client command against this cluster."""
        result = subprocess.run(
            command, env=self.env(**extra), capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> int:
        """Submit a batch job; returns its id."""
        result = subprocess.run(
            ["sbatch", "--parsable", *args],
            env=self.env(**(env or {})), cwd=cwd, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)}: {result.stderr.strip()}")
        return int(result.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (the first record of an array)."""
        result = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False)
        if result.returncode != 0 or not result.stdout.strip():
            return {}
        fields = {}
        for item in result.stdout.splitlines()[0].split():
            key, _, value = item.partition("=")
            fields[key] = value
        return fields

    def states(self, job_id: int) -> list[str]:
        """The states of a job's records (one per array task)."""
        result = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False)
        return [
            item.partition("=")[2]
            for line in result.stdout.splitlines()
            for item in line.split()
            if item.startswith("JobState=")
        ]

    def wait(self, job_id: int, timeout: float, until: tuple[str, ...] = ()) -> list[str]:
        """Wait until every record of the job has ended (or reached a state in `until`)."""
        ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
        deadline = time.monotonic() + timeout
        while True:
            states = self.states(job_id)
            if states and all(s in ended or s in until for s in states):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {states} after {timeout:.0f} s")
            time.sleep(1)

    def stop(self) -> None:
        """Cancel every job, end the daemons and make sure none is left."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run(["scancel", "--full", "--user", "root"], check=False)
        for name in reversed(DAEMONS):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def leftovers(self) -> list[str]:
        """Processes still running that belong to this cluster: its daemons, and every process
        started by them (job steps, jobs), which inherit its SLURM_CONF."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    found.append(f"{proc.name} {command.strip()}")
            except OSError:  # ended meanwhile, or not ours to read
                continue
        return found
