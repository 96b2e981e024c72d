"""Every ```python block of the docs runs, as a program of its own, against a live server.

Conventions for the examples in ``docs/**/*.md`` and ``README.md`` (also in docs/README.md,
"Examples in these docs"):

- A ```python (or ```py) block is a complete program: it has its own imports, creates over REST
  what it needs (a job, a session ...), and ends by itself with exit status 0 within 20 s. A loop
  that waits for events stops after the event it came for.
- ``127.0.0.1:5100`` and ``localhost:5100`` in a block are replaced by the test server's address
  (default settings, auth off). The blocks share that server, one after another: a block must not
  count on it being empty. Jobs a block leaves queued or running are cancelled before the next
  block runs, so a worker example claims its own job.
- A block that is deliberately not a complete program takes another fence (```text, ```pycon),
  but prefer a runnable one.
- An HTML comment on the line directly above the fence sets options:
  ``<!-- example: auth=token -->`` runs the block against a second server with
  ``LOCAL_BRIDGE_AUTH=token``; the block finds the server's secret in the environment variable
  ``LOCAL_BRIDGE_SECRET_KEY``, to mint a token with ``local-bridge token create`` or
  ``local_bridge.auth.tokens.mint``. There is no option to skip a block: every example runs.
- A block runs with ``sys.executable`` in a fresh temporary directory, with
  ``QT_QPA_PLATFORM=offscreen`` and without the test run's own ``LOCAL_BRIDGE_*`` variables.

A failure names the block as ``file:line`` (the line of its opening fence), in the test id too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from support import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0  # seconds a block may run
SECRET = "docs-examples-secret-key-0123456789abcdef"
PYTHON_FENCES = {"python", "py", "python3"}
ADDRESSES = ("127.0.0.1:5100", "localhost:5100")
OPTIONS = {"auth": {"none", "token"}}  # marker keys and their allowed values

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*example:(?P<body>.*?)-->\s*$")


@dataclass(frozen=True)
class Example:
    """One fenced Python block: where it is, its code and its marker options."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    options: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # a malformed marker: the test reports it instead of running

    @property
    def id(self) -> str:
        try:
            name = self.path.relative_to(ROOT).as_posix()
        except ValueError:
            name = self.path.name
        return f"{name}:{self.line}"


@dataclass(frozen=True)
class Outcome:
    """How a block's program ended."""

    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float


def parse_options(body: str) -> dict[str, str]:
    """``key=value`` pairs of a marker (comma or space separated); ValueError when unknown."""
    options: dict[str, str] = {}
    for item in filter(None, re.split(r"[,\s]+", body.strip())):
        key, _, value = item.partition("=")
        if key == "skip-reason" or key == "skip":
            raise ValueError("examples cannot be skipped: every example runs")
        if key not in OPTIONS or value not in OPTIONS[key]:
            allowed = ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in OPTIONS.items())
            raise ValueError(f"unknown example option {item!r} (allowed: {allowed})")
        options[key] = value
    return options


def extract(path: Path, text: str) -> list[Example]:
    """The Python blocks of one Markdown file, with the options of their markers."""
    lines = text.splitlines()
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
            examples.append(
                Example(
                    path, i + 1, "", error="an example marker must stand directly above a fence"
                )
            )
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        language = (opening["info"].split() or [""])[0].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(
            rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]
        ):
            # the content of an indented fence loses up to the fence's own indentation
            body.append(re.sub(rf"^ {{0,{indent}}}", "", lines[j]))
            j += 1
        if language in PYTHON_FENCES:
            above = MARKER.match(lines[i - 1]) if i > 0 else None
            try:
                options = parse_options(above["body"]) if above else {}
                examples.append(Example(path, i + 1, "\n".join(body) + "\n", options))
            except ValueError as exc:
                examples.append(Example(path, i + 1, "", error=str(exc)))
        i = j + 1
    return examples


def documents(root: Path = ROOT) -> list[Path]:
    """The Markdown files whose examples run: docs/ (at any depth) and the README."""
    return sorted(root.glob("docs/**/*.md")) + [root / "README.md"]


def collect(root: Path = ROOT) -> list[Example]:
    return [e for p in documents(root) for e in extract(p, p.read_text(encoding="utf-8"))]


def program(example: Example, port: int) -> str:
    """The block's code, pointed at the test server."""
    code = example.code
    for address in ADDRESSES:
        code = code.replace(address, f"127.0.0.1:{port}")
    return code


def run_example(
    example: Example, port: int, workdir: Path, env: dict[str, str] | None = None, timeout=TIMEOUT
) -> Outcome:
    """Run the block as ``sys.executable <file>`` in ``workdir``; kill it (and anything it
    started) at the timeout."""
    script = workdir / f"{example.path.stem}_line{example.line}.py"
    script.write_text(program(example, port), encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")}
    environment.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        QT_QPA_PLATFORM="offscreen",
        PYTHONUNBUFFERED="1",  # what a killed block printed is still shown
        **(env or {}),
    )
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=workdir,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends its children too
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        stdout, stderr = process.communicate(timeout=10)
        returncode = None
    _kill_group(process.pid)  # whatever the block left running behind it
    return Outcome(returncode, stdout, stderr, time.monotonic() - started)


def failure(example: Example, outcome: Outcome, timeout: float = TIMEOUT) -> str | None:
    """Why the block failed (file:line, how, its standard error and output), or None."""
    if outcome.returncode == 0:
        return None
    how = (
        f"did not end within {timeout:g} s"
        if outcome.returncode is None
        else f"exited with status {outcome.returncode}"
    )
    return (
        f"{example.id}: the example {how}\n"
        f"--- stderr ---\n{outcome.stderr.rstrip()}\n--- stdout ---\n{outcome.stdout.rstrip()}"
    )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def cancel_leftover_jobs(server: ServerProcess, headers: dict[str, str]) -> None:
    """Cancel the jobs earlier blocks left queued or running, so each block starts with an
    empty queue (a running job needs two requests: the first only asks its worker)."""
    for status in ("queued", "running"):
        answer = requests.get(
            f"{server.http}/api/jobs", params={"status": status}, headers=headers, timeout=10
        )
        answer.raise_for_status()
        body = answer.json()
        for job in body.get("items", body) if isinstance(body, dict) else body:
            for _ in range(2):
                requests.post(
                    f"{server.http}/api/jobs/{job['id']}/cancel",
                    json={"reason": "left over by an earlier example"},
                    headers=headers,
                    timeout=10,
                )


EXAMPLES = collect()


@pytest.fixture(scope="module")
def docs_server():
    """The server the blocks run against: default settings, auth off."""
    process = ServerProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def auth_docs_server():
    """The server of the blocks marked ``auth=token``."""
    process = ServerProcess({"AUTH": "token", "SECRET_KEY": SECRET}).start()
    yield process
    process.stop()


def _admin_headers() -> dict[str, str]:
    from local_bridge.auth.tokens import mint

    token, _ = mint(SECRET, sub="docs-examples", role="admin", ttl=300)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs(example: Example, request, tmp_path):
    if example.error:
        pytest.fail(f"{example.id}: {example.error}", pytrace=False)
    if example.options.get("auth") == "token":
        server = request.getfixturevalue("auth_docs_server")
        headers, env = _admin_headers(), {"LOCAL_BRIDGE_SECRET_KEY": SECRET}
    else:
        server, headers, env = request.getfixturevalue("docs_server"), {}, {}
    cancel_leftover_jobs(server, headers)
    problem = failure(example, run_example(example, server.port, tmp_path, env))
    if problem:
        pytest.fail(problem, pytrace=False)


# ---------------------------------------------------------------------- the runner itself


def test_the_collector_finds_the_examples():
    """A broken collector fails here rather than passing on zero blocks."""
    found = {e.path.relative_to(ROOT).as_posix() for e in EXAMPLES}
    assert len(EXAMPLES) >= 10, [e.id for e in EXAMPLES]
    assert {"README.md", "docs/user-guide.md", "docs/clients.md"} <= found, found


def test_markers_fences_and_indentation_are_read():
    text = "\n".join(
        [
            "# Title",  # 1
            "```python",  # 2
            "print(1)",
            "```",
            "```text",  # 5: not run
            "print(2)",
            "```",
            "<!-- example: auth=token -->",
            "```py",  # 9
            "print(3)",
            "```",
            "1. a step:",
            "   ```python",  # 13
            "   if True:",
            "       print(4)",
            "   ```",
            "<!-- example: skip-reason=slow -->",
            "```python",  # 18
            "print(5)",
            "```",
            "<!-- example: auth=token -->",  # 21: nothing below it
            "",
            "````python",  # 23
            "s = '```'",
            "````",
        ]
    )
    found = extract(ROOT / "docs" / "synthetic.md", text)
    assert [(e.line, e.code, e.options) for e in found if not e.error] == [
        (2, "print(1)\n", {}),
        (9, "print(3)\n", {"auth": "token"}),
        (13, "if True:\n    print(4)\n", {}),
        (23, "s = '```'\n", {}),
    ]
    errors = {e.line: e.error for e in found if e.error}
    assert errors.keys() == {18, 21}
    assert "every example runs" in errors[18]
    assert found[0].id == "docs/synthetic.md:2"


def test_a_failing_block_fails_naming_its_file_and_line(docs_server, tmp_path):
    example = Example(
        ROOT / "docs" / "synthetic.md",
        7,
        "import sys, urllib.request\n"
        "urllib.request.urlopen('http://127.0.0.1:5100/api/system/health', timeout=5)\n"
        "print('reached the server', file=sys.stderr)\n"
        "sys.exit(3)\n",
    )
    outcome = run_example(example, docs_server.port, tmp_path)
    problem = failure(example, outcome)
    assert problem is not None
    assert problem.startswith("docs/synthetic.md:7: the example exited with status 3")
    assert "reached the server" in problem  # the address was rewritten, stderr is shown


def test_a_block_that_never_ends_is_killed_at_the_timeout(tmp_path):
    example = Example(ROOT / "README.md", 3, "import time\nprint('waiting')\ntime.sleep(60)\n")
    outcome = run_example(example, 1, tmp_path, timeout=1)
    assert outcome.seconds < 10
    problem = failure(example, outcome, timeout=1)
    assert problem and "README.md:3: the example did not end within 1 s" in problem
    assert "waiting" in problem
