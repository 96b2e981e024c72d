"""Every JavaScript example in the docs runs, in a real headless Chromium against a live server.

Each ```js / ```javascript block of docs/*.md and README.md is one test. The convention the
examples follow:

- **Self-contained**: a block runs on its own, as an ES module in an empty page of the server's
  own origin. It may ``import ... from "/static/local-bridge.js"``, and ``react`` /
  ``react-dom/client`` (React 18, through an import map). It creates what it needs (sessions,
  jobs ...) over REST itself; the server has authentication off.
- **Terminating**: its top-level code (top-level ``await`` included) finishes within 20 s, and
  it leaves nothing running that logs errors afterwards. A thrown error, a rejected top-level
  await, an uncaught exception or a console error fails the test (Chromium's own log line for
  an HTTP 4xx answer excepted: an example may show how a refusal is handled).
- **Address substituted**: ``127.0.0.1:5100`` and ``localhost:5100`` in the text are replaced by
  the test server's address, so examples show the default address and still run here.

A block that is not a program (a fragment of one, or code for another environment) is fenced
with another language tag (``text``, ``html``) and says so in the text around it.

React comes from the npm registry (``npm pack react@18 react-dom@18``, the UMD builds) into a
cache directory, and is served to the page through Playwright's request interception, wrapped in
tiny ES module shims. Without npm or Chromium the tests are skipped, except under CI
(``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import browser_support
from browser_support import chromium
from support import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
BLOCK_TIMEOUT_MS = 20000
SETTLE_MS = 200  # after a block ends: time for a late error of what it left behind to show
CACHE = Path(
    os.environ.get("LOCAL_BRIDGE_TEST_CACHE", Path.home() / ".cache" / "local-bridge-tests")
)
REACT = ("react@18", "react-dom@18")
FENCE = re.compile(r"^```(?:js|javascript)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
DEFAULT_ADDRESSES = ("127.0.0.1:5100", "localhost:5100")
# What Chromium itself logs for an HTTP error answer: an example may show how a 4xx is handled
# (an unhandled one throws, and fails the example anyway).
NETWORK_LOG = "Failed to load resource: the server responded with a status of 4"
HELPERS = "/__docs__/"  # the URL space Playwright answers for the examples' page

# React's and ReactDOM's named exports, re-exported from the UMD globals.
REACT_EXPORTS = (
    "Children Component Fragment Profiler PureComponent StrictMode Suspense cloneElement "
    "createContext createElement createRef forwardRef isValidElement lazy memo startTransition "
    "useCallback useContext useDebugValue useDeferredValue useEffect useId useImperativeHandle "
    "useInsertionEffect useLayoutEffect useMemo useReducer useRef useState "
    "useSyncExternalStore useTransition version"
).split()
SHIMS = {
    "react.js": "const React = globalThis.React;\nexport default React;\n"
    + "".join(f"export const {name} = React.{name};\n" for name in REACT_EXPORTS),
    "react-dom.js": "const ReactDOM = globalThis.ReactDOM;\nexport default ReactDOM;\n"
    + "export const { createPortal, flushSync, version } = ReactDOM;\n",
    "react-dom-client.js": "const ReactDOM = globalThis.ReactDOM;\n"
    + "export const { createRoot, hydrateRoot } = ReactDOM;\n"
    + "export default { createRoot: ReactDOM.createRoot, hydrateRoot: ReactDOM.hydrateRoot };\n",
}
IMPORT_MAP = {
    "imports": {
        "react": HELPERS + "react.js",
        "react-dom": HELPERS + "react-dom.js",
        "react-dom/client": HELPERS + "react-dom-client.js",
    }
}

RUN = """async ({url, timeout}) => {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`did not finish within ${timeout} ms`)), timeout);
  });
  try {
    await Promise.race([import(url), expired]);
    return null;
  } catch (error) {
    return String(error && error.stack || error);
  } finally {
    clearTimeout(timer);
  }
}"""


def unavailable(reason: str) -> None:
    """Missing tooling: skipped, except under CI, where it is a failure."""
    browser_support.unavailable(reason, "documentation's JavaScript examples")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def js_blocks() -> list[tuple[str, str]]:
    """(id ``file:line``, code) of every ```js / ```javascript block."""
    blocks = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


BLOCKS = js_blocks()


def test_the_docs_have_javascript_examples():
    names = {block_id.split(":")[0] for block_id, _ in BLOCKS}
    assert "docs/browser-client.md" in names, names
    assert any("useBridge" in code for _, code in BLOCKS), "the React hook is not an example"


def substituted(code: str, address: str) -> str:
    for default in DEFAULT_ADDRESSES:
        code = code.replace(default, address)
    return code


def uses_react(code: str) -> bool:
    return re.search(r"""from\s+["']react(-dom(/client)?)?["']""", code) is not None


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def react_builds() -> dict[str, Path]:
    """The React 18 UMD development builds (their warnings are console errors: a bad example
    fails), fetched with npm into the cache once."""
    target = CACHE / "react18-umd"
    files = {
        "react.development.js": target / "react.development.js",
        "react-dom.development.js": target / "react-dom.development.js",
    }
    if all(f.is_file() for f in files.values()):
        return files
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed (needed to fetch React 18 for the React examples)")
    target.mkdir(parents=True, exist_ok=True)
    packed = subprocess.run(
        [npm, "pack", *REACT, "--pack-destination", str(target), "--silent"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=target,
    )
    if packed.returncode != 0:
        unavailable(f"npm pack {' '.join(REACT)} failed: {packed.stderr.strip()[-300:]}")
    for tarball in packed.stdout.split():
        with tarfile.open(target / tarball) as archive:
            for name, path in files.items():
                member = f"package/umd/{name}"
                if member in archive.getnames():
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    path.write_bytes(extracted.read())
        (target / tarball).unlink()
    missing = [name for name, path in files.items() if not path.is_file()]
    assert not missing, f"the React packages had no {missing}"
    return files


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess()
    yield process.start()
    process.stop()


# ---------------------------------------------------------------------------- the examples


def run_example(browser, server: ServerProcess, code: str, react: dict[str, Path]):
    """Run ``code`` as a module in a fresh page of ``server``'s origin: (the error it threw or
    None, the console errors and uncaught exceptions it caused)."""
    address = server.http.removeprefix("http://")
    helpers = {"example.js": substituted(code, address), **(SHIMS if react else {})}
    helpers.update({name: path.read_text(encoding="utf-8") for name, path in react.items()})
    errors: list[str] = []
    context = browser.new_context()
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda m: (
                m.type == "error"
                and not m.text.startswith(NETWORK_LOG)
                and errors.append(f"console: {m.text}")
            ),
        )
        page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        page.route(
            server.http + HELPERS + "*",
            lambda route: route.fulfill(
                body=helpers[route.request.url.rsplit("/", 1)[1]],
                content_type="text/javascript; charset=utf-8",
            ),
        )
        # A document of the server's own origin that the server really served (one Playwright
        # made up would count as public to Chromium's local network access checks), then an
        # empty page in it with the import map and React's globals (React before ReactDOM).
        page.goto(server.http + "/static/local-bridge.js")
        scripts = "".join(f'<script src="{HELPERS}{name}"></script>' for name in react)
        page.set_content(
            "<!doctype html><meta charset=utf-8><title>example</title>"
            f'<script type="importmap">{json.dumps(IMPORT_MAP)}</script>{scripts}<body></body>'
        )
        failure = page.evaluate(RUN, {"url": HELPERS + "example.js", "timeout": BLOCK_TIMEOUT_MS})
        page.wait_for_timeout(SETTLE_MS)
    finally:
        context.close()
    return failure, errors


@pytest.mark.parametrize(
    "code, expected",
    [
        ('throw new Error("broken example");', "broken example"),
        ('await Promise.reject(new TypeError("rejected"));', "rejected"),
        ('console.error("logged");', "logged"),
        ('setTimeout(() => { throw new Error("late"); }, 0);', "late"),
        ('import { Nope } from "/static/local-bridge.js";', "Nope"),
    ],
)
def test_a_broken_example_is_caught(browser, server, code, expected):
    failure, errors = run_example(browser, server, code, {})
    assert expected in f"{failure} {errors}"


@pytest.mark.parametrize("block_id, code", BLOCKS, ids=[block_id for block_id, _ in BLOCKS])
def test_example_runs(block_id, code, browser, server, request):
    react = request.getfixturevalue("react_builds") if uses_react(code) else {}
    failure, errors = run_example(browser, server, code, react)
    assert failure is None, f"{block_id} failed:\n{failure}"
    assert not errors, f"{block_id} logged errors: {errors}"
