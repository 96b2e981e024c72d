"""``--profile``: py-spy samples the server's worker during saturation (diagnosis only: it
skews the figures)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench.procs import spawn, terminate


def start(pid: int, duration: float, path: Path):
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    proc = spawn(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(duration) - 1)),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            str(path),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, path


def finish(proc: subprocess.Popen, path: Path) -> dict:
    """Top functions of a py-spy raw (collapsed stacks) profile: self and inclusive share."""
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    terminate(proc, 2)
    self_counts: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        total += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        if frames:
            self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    top_self = sorted(self_counts.items(), key=lambda kv: -kv[1])[:25]
    top_incl = sorted(incl.items(), key=lambda kv: -kv[1])[:40]
    return {
        "samples": total,
        "path": str(path),
        "self": [(f, round(100.0 * c / total, 1)) for f, c in top_self] if total else [],
        "inclusive": [(f, round(100.0 * c / total, 1)) for f, c in top_incl] if total else [],
    }


def print_report(r: dict) -> None:
    prof = r["profile"]
    print(
        f"\n## py-spy: {r['target']} N={r['n']} ({prof.get('samples')} samples, {prof.get('path')})"
    )
    print("\nself %  function")
    for f, share in prof.get("self", []):
        print(f"{share:6.1f}  {f}")
    print("\ninclusive %  function")
    for f, share in prof.get("inclusive", []):
        print(f"{share:6.1f}  {f}")
    sys.stdout.flush()
