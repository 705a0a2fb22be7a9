"""Every fenced block in README.md and docs/*.md runs or is checked, so the docs cannot drift.

One test per Markdown file; it reports every bad block of the file, one line each, as
``FILE:LINE: FIRST LINE OF THE BLOCK: what is wrong``.

What each kind of block must do
-------------------------------
* ```` ```python ```` (or ``py``): executed, in document order. **All the Python blocks of
  one file share one namespace** (a later block may use ``z`` from an earlier one), and
  the whole file runs inside ``zibrato.testing.capture()``, so no broker is needed and
  nothing is sent: ``ZIBRATO_PUBLISH`` points at a loopback port that refuses
  connections, and every client the blocks create is closed before the capture ends.
  Top-level ``await`` and ``async with`` are allowed. Once a block fails, the later Python
  blocks of its namespace are not run (they would fail for the same reason).
* ```` ```sh ```` / ``bash`` / ``shell``: every line is a command; ```` ```console ````:
  the lines that start with ``$ `` are. Comments, a trailing ``&``, ``VAR=value``
  prefixes and ``.venv/bin/`` are ignored, and a line ending in ``\\`` or an indented
  line continues the one before. Then:

  - ``zibrato ...`` and ``python -m zibrato ...`` must parse with the real argument
    parser (``zibrato.cli``): dry, nothing runs. A *synopsis* (a line with ``[``) is
    checked instead option by option: each ``--option`` must exist, and a value shown in
    ``[--option VALUE]`` that is not an UPPERCASE placeholder must equal the default;
  - ``make TARGET`` must name a target of the Makefile;
  - ``pip install`` extras (``'.[django]'``, ``"zibrato[flask]"``) must exist in
    pyproject.toml;
  - ``python -m MODULE`` must name an importable module, and ``python DIR/SCRIPT.py`` a
    file of the repository.

  Other commands (``cd``, ``curl``, ...) are not checked.
* ```` ```json ````: must parse as JSON.
* Any other fence (none, ``text``, ``toml``, ...) is not checked.

Directives
----------
HTML comments on the line(s) right before a fence (invisible on GitHub):

* ``<!-- docs-test: skip: REASON -->`` — the block is not run or checked. The reason is
  required; the number of skipped blocks is printed at the end of the run.
* ``<!-- docs-test: new-namespace -->`` — this Python block starts a fresh namespace
  (and a fresh capture).
* ``<!-- docs-test: file: PATH -->`` — this Python block is not executed but written to
  PATH in a scratch directory that is on ``sys.path`` while the file's blocks run (so
  ``--backend mypkg.alerts:Cls`` in a later shell block can load it).
* ``<!-- docs-test: stub: NAME ... -->`` — the names stand for "your code" in this
  block (``render()``, ``await send()``): each is bound to a callable that does nothing,
  whose result may also be awaited.

A ``docs-test:`` comment anywhere else, or one the harness does not know, is an error.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import io
import itertools
import json
import os
import re
import shlex
import socket
import sys
import tomllib
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from zibrato import cli, publisher
from zibrato.testing import capture

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell"}
CONSOLE = {"console"}
JSON = {"json"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_:-]*(\.\.\.)?$|^\.\.\.$")

skipped_blocks: list[str] = []  # "FILE:LINE REASON", printed by conftest.py at the end


@dataclass
class Block:
    """One fenced block: where it starts (1-based line of its first content line)."""

    path: Path
    line: int
    language: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        first = next((line.strip() for line in self.text.splitlines() if line.strip()), "")
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{shown}:{self.line}: {first[:60]}"


class DocError(Exception):
    """A problem with the document itself (a fence never closed, a bad directive)."""


def parse_blocks(path: Path) -> list[Block]:
    """Return the fenced blocks of ``path`` with their directives; raise DocError."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: dict[str, str] = {}
    pending_line = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        fence = _FENCE.match(line)
        if directive:
            name, _, value = directive["body"].partition(":")
            name, value = name.strip(), value.strip()
            if name not in ("skip", "new-namespace", "file", "stub"):
                raise DocError(f"{path.name}:{index + 1}: unknown directive {name!r}")
            if name in ("skip", "file", "stub") and not value:
                raise DocError(f"{path.name}:{index + 1}: docs-test: {name} needs a value")
            pending[name] = value
            pending_line = index + 1
        elif "docs-test" in line:
            raise DocError(f"{path.name}:{index + 1}: malformed docs-test comment")
        elif fence:
            indent, marker = fence["indent"], fence["fence"]
            language = fence["info"].strip().split(" ")[0].lower() if fence["info"] else ""
            body: list[str] = []
            index += 1
            start = index + 1
            while index < len(lines):
                closing = lines[index].strip()
                if closing.startswith(marker[0] * len(marker)) and not closing.strip(marker[0]):
                    break
                content = lines[index]
                body.append(content[len(indent) :] if content.startswith(indent) else content)
                index += 1
            else:
                raise DocError(f"{path.name}:{start - 1}: the fence is never closed")
            blocks.append(Block(path, start, language, "\n".join(body) + "\n", pending))
            pending = {}
        elif pending:
            raise DocError(
                f"{path.name}:{pending_line}: a docs-test directive must be on the line "
                "right before a fence"
            )
        index += 1
    return blocks


# -- Python blocks -------------------------------------------------------------------------
class _Done:
    """What a stub returns: nothing, but awaitable too."""

    def __await__(self) -> Iterator[None]:
        return iter(())


def _stub(*args: Any, **kwargs: Any) -> _Done:
    return _Done()


@contextlib.contextmanager
def refused_address() -> Iterator[str]:
    """A loopback TCP address that refuses connections (bound, never listening)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        yield f"tcp://127.0.0.1:{holder.getsockname()[1]}"
    finally:
        holder.close()


class PythonRunner:
    """Runs a file's Python blocks: one namespace (until ``new-namespace``), one capture."""

    def __init__(self, stack: contextlib.ExitStack, scratch: Path) -> None:
        self.stack = stack
        self.scratch = scratch
        self.namespace: dict[str, Any] | None = None
        self.failed = False
        self._capture: contextlib.ExitStack | None = None

    def _fresh(self) -> None:
        self._end()
        self._capture = contextlib.ExitStack()
        self._capture.enter_context(capture())
        self._before = set(publisher.live_publishers())
        self.namespace = {"__name__": "__docs__"}
        self.failed = False

    def _end(self) -> None:
        if self._capture is not None:
            # Close what the blocks created while the capture still holds their events.
            for pub in set(publisher.live_publishers()) - self._before:
                pub.close(linger=0)
            self._capture.close()
            self._capture = None

    def close(self) -> None:
        self._end()

    def run(self, block: Block) -> str | None:
        """Run ``block``; return why it failed, or None."""
        if "file" in block.directives:
            target = self.scratch / block.directives["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            return None
        if self.namespace is None or "new-namespace" in block.directives:
            self._fresh()
        assert self.namespace is not None
        if self.failed:
            return None  # an earlier block of this namespace failed: reported there
        for name in block.directives.get("stub", "").split():
            self.namespace[name] = _stub
        filename = f"{block.path.name}:{block.line}"
        try:
            code = compile(block.text, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            self.failed = True
            return f"SyntaxError: {exc.msg} (line {block.line + (exc.lineno or 1) - 1})"
        try:
            result = eval(code, self.namespace)  # our own documentation
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        except BaseException as exc:  # SystemExit too: a block must not end the run
            self.failed = True
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
            at = f" (line {block.line + frames[-1].lineno - 1})" if frames else ""
            return f"{type(exc).__name__}: {exc}{at}"
        return None


# -- shell blocks --------------------------------------------------------------------------
def commands(block: Block) -> list[tuple[int, str]]:
    """Return the commands of a shell or console block, continuation lines joined, each
    with the line of the document it starts on."""
    joined: list[tuple[int, str]] = []
    continuing = False
    for offset, line in enumerate(block.text.splitlines()):
        if block.language in CONSOLE:
            if not line.startswith("$ "):
                continuing = False
                continue
            line = line[2:]
        if not line.strip():
            continuing = False
            continue
        if joined and (continuing or line[:1].isspace()):
            joined[-1] = (joined[-1][0], joined[-1][1] + " " + line.strip())
        else:
            joined.append((block.line + offset, line.strip()))
        continuing = line.rstrip().endswith("\\")
        if continuing:
            joined[-1] = (joined[-1][0], joined[-1][1].rstrip().removesuffix("\\"))
    return joined


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))


def extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(pyproject["project"]["optional-dependencies"])


def check_command(command: str) -> str | None:
    """Return what is wrong with one documented command line, or None."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError as exc:
        return f"cannot split the line: {exc}"
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)  # VAR=value prefixes
    if words and words[-1] == "&":
        words.pop()
    if not words:
        return None
    program = words[0].removeprefix(".venv/bin/").removeprefix("$(BIN)/")
    if program.startswith("python") and words[1:3] == ["-m", "pip"]:
        program, words = "pip", ["pip", *words[3:]]
    if program == "zibrato":
        return check_zibrato(words[1:], synopsis="[" in command)
    if program in ("python", "python3"):
        if words[1:2] == ["-m"] and len(words) > 2:
            if words[2] == "zibrato":
                return check_zibrato(words[3:], synopsis="[" in command)
            if importlib.util.find_spec(words[2]) is None:
                return f"no module {words[2]!r} to run with python -m"
        elif len(words) > 1 and "/" in words[1] and not (ROOT / words[1]).is_file():
            return f"no script {words[1]!r} in the repository"
        return None
    if program == "make":
        unknown = [word for word in words[1:] if not word.startswith("-")]
        missing = [target for target in unknown if "=" not in target]
        missing = [target for target in missing if target not in make_targets()]
        return f"no Makefile target {missing[0]!r}" if missing else None
    if program == "pip":
        for word in words:
            wanted = re.findall(r"\[([^\]]*)\]", word)
            for extra in (e.strip() for group in wanted for e in group.split(",")):
                if extra and extra not in extras():
                    return f"no extra {extra!r} in pyproject.toml"
        return check_install(words)
    return None


def check_install(words: list[str]) -> str | None:
    """An install of ``zibrato`` by name gets the package index's 2013 release (0.2.0,
    which does not build on Python 3) until 2.0.0 is published: only paths work."""
    if "install" not in words:
        return None
    for word in words[words.index("install") + 1 :]:
        if re.match(r"(?i)^zibrato($|\[|[<>=!~ ;@])", word):
            return (
                f"{word!r} installs the package index's 2013 zibrato: install from a "
                "checkout ('.[django]') or a wheel (dist/zibrato-2.0.0-py3-none-any.whl)"
            )
    return None


def check_zibrato(argv: list[str], *, synopsis: bool) -> str | None:
    """Parse ``zibrato ARGV`` with the real parser, dry; a synopsis option by option."""
    if synopsis:
        return check_synopsis(argv)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()) as errors,
        ):
            parse_zibrato(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            last = errors.getvalue().strip().splitlines()[-1:] or [f"exit {exc.code}"]
            return last[0]
    return None


def parse_zibrato(argv: list[str]) -> None:
    """What ``zibrato.cli.main`` parses, without running anything."""
    parser = cli.build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "own_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "backend":
        sub, cls = cli.backend_parser(rest)
        sub.parse_args(rest)
        if cls is None:
            sub.error("name a backend KIND")
    elif args.command == "run":
        cli.run_parser(rest)[0].parse_args(rest)


def subcommand_parser(words: list[str]) -> tuple[Any, list[str]]:
    """Return the parser that a synopsis' options belong to, and the words after it."""
    parser = cli.build_parser()
    command = next((word for word in words if not word.startswith(("-", "["))), None)
    if command is None:
        return parser, words
    after = words[words.index(command) + 1 :]
    if command == "backend":
        kind = after[0] if after and not after[0].startswith("-") else "KIND"
        return cli.backend_parser([] if _PLACEHOLDER.match(kind) else [kind])[0], after[1:]
    if command == "run":
        named = [value for option, value in itertools.pairwise(after) if option == "--backend"]
        kinds = [kind for kind in named if not _PLACEHOLDER.match(kind)]
        return cli.run_parser([arg for kind in kinds for arg in ("--backend", kind)])[0], after
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return subparsers.choices[command], after


def check_synopsis(argv: list[str]) -> str | None:
    """Check a synopsis: each ``--option`` must exist, and a literal VALUE in
    ``[--option VALUE]`` must be the option's default."""
    words = [word.strip("[]") for word in argv]
    try:
        parser, words = subcommand_parser(words)
    except (KeyError, StopIteration, SystemExit) as exc:
        return f"zibrato {' '.join(argv)}: unknown command ({exc})"
    options = {opt: action for action in parser._actions for opt in action.option_strings}
    for index, word in enumerate(words):
        if not word.startswith("--") or _PLACEHOLDER.match(word[2:]) or "KIND" in word:
            continue
        action = options.get(word)
        if action is None:
            return f"{word} is not an option of {parser.prog}"
        value = words[index + 1] if index + 1 < len(words) else None
        if value is None or value.startswith("-") or _PLACEHOLDER.match(value):
            continue
        shown = action.type(value) if callable(action.type) else value
        if shown != action.default:
            return f"{word} {value}: the default is {action.default!r}; a synopsis shows defaults"
    return None


# -- the test ----------------------------------------------------------------------------------
def shared_tasks() -> set[object]:
    """Celery's tasks for every app (``@app.task`` is shared by default), if Celery is here."""
    state = sys.modules.get("celery._state")
    return set(getattr(state, "_on_app_finalizers", ()))


def forget_shared_tasks(before: set[object]) -> None:
    """A docs example's ``@app.task(name="shop.confirm")`` would join every Celery app made
    later in this process, and collide with a test's task of the same name."""
    state = sys.modules.get("celery._state")
    finalizers = getattr(state, "_on_app_finalizers", None)
    if isinstance(finalizers, set):
        finalizers.intersection_update(before)


def check_file(path: Path, scratch: Path) -> list[str]:
    """Return one line per failing block of ``path``."""
    failures: list[str] = []
    blocks = parse_blocks(path)
    added = str(scratch)
    sys.path.insert(0, added)
    modules_before = set(sys.modules)
    finalizers_before = shared_tasks()
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(refused_address())
        previous = os.environ.get(cli_publish_env())
        os.environ[cli_publish_env()] = address
        stack.callback(restore_env, cli_publish_env(), previous)
        runner = PythonRunner(stack, scratch)
        stack.callback(runner.close)
        for block in blocks:
            if "skip" in block.directives:
                skipped_blocks.append(f"{block.where} ({block.directives['skip']})")
                continue
            problem = check_block(block, runner)
            if problem:
                failures.append(f"{block.where}: {problem}")
    sys.path.remove(added)
    forget_shared_tasks(finalizers_before)
    for name in set(sys.modules) - modules_before:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(added) or name == "__docs__":
            del sys.modules[name]
    return failures


def check_block(block: Block, runner: PythonRunner) -> str | None:
    if block.language in PYTHON:
        return runner.run(block)
    if block.language in SHELL | CONSOLE:
        for line, command in commands(block):
            problem = check_command(command)
            if problem:
                return f"{problem} (line {line})" if line != block.line else problem
        return None
    if block.language in JSON:
        try:
            json.loads(block.text)
        except ValueError as exc:
            return f"not JSON: {exc}"
    return None


def cli_publish_env() -> str:
    from zibrato.client import PUBLISH_ENV

    return PUBLISH_ENV


def restore_env(name: str, previous: str | None) -> None:
    if previous is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = previous


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_fenced_block_runs_or_checks(path: Path, tmp_path: Path) -> None:
    try:
        failures = check_file(path, tmp_path)
    except DocError as exc:
        pytest.fail(str(exc), pytrace=False)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


# -- the harness itself ------------------------------------------------------------------------
def harness_on(tmp_path: Path, markdown: str) -> list[str]:
    doc = tmp_path / "doc.md"
    doc.write_text(markdown, encoding="utf-8")
    return check_file(doc, tmp_path / "scratch")


def test_harness_reports_file_line_and_first_line(tmp_path: Path) -> None:
    failures = harness_on(
        tmp_path,
        "# Doc\n\n```python\nx = 1\n```\n\ntext\n\n```python\n"
        "assert x == 1\ny = undefined_name\n```\n\n```sh\nzibrato tail --nope\nmake nothing\n```\n"
        "\n```sh\nmake nothing-here\n```\n\n```json\n{oops}\n```\n",
    )
    assert failures[0] == (
        "doc.md:10: assert x == 1: NameError: name 'undefined_name' is not defined (line 11)"
    )
    assert failures[1].startswith("doc.md:15: zibrato tail --nope: zibrato: ")
    assert "unrecognized arguments: --nope" in failures[1]
    assert failures[2] == "doc.md:20: make nothing-here: no Makefile target 'nothing-here'"
    assert failures[3].startswith("doc.md:24: {oops}: not JSON: ")
    assert len(failures) == 4


def test_harness_directives(tmp_path: Path) -> None:
    before = len(skipped_blocks)
    failures = harness_on(
        tmp_path,
        "<!-- docs-test: skip: needs a carbon server -->\n```python\nraise SystemExit(3)\n```\n"
        "```python\nz = 1\n```\n<!-- docs-test: new-namespace -->\n```python\n"
        "assert 'z' not in dir()\n```\n<!-- docs-test: stub: render send -->\n```python\n"
        "render()\nawait send()\n```\n<!-- docs-test: file: pkg/mod.py -->\n```python\n"
        "VALUE = 42\n```\n```python\nimport pkg.mod\nassert pkg.mod.VALUE == 42\n```\n",
    )
    assert failures == []
    assert skipped_blocks[before:] == ["doc.md:3: raise SystemExit(3) (needs a carbon server)"]
    del skipped_blocks[before:]


@pytest.mark.parametrize(
    ("markdown", "error"),
    [
        ("<!-- docs-test: skip -->\n```sh\nx\n```\n", "doc.md:1: docs-test: skip needs a value"),
        ("<!-- docs-test: skp: x -->\n```sh\nx\n```\n", "doc.md:1: unknown directive 'skp'"),
        ("<!-- docs-test: skip: x -->\n\n```sh\nx\n```\n", "must be on the line right before"),
        ("<!-- docs-test skip: x -->\n", "doc.md:1: malformed docs-test comment"),
        ("```python\nx = 1\n", "doc.md:1: the fence is never closed"),
    ],
)
def test_harness_refuses_bad_directives(tmp_path: Path, markdown: str, error: str) -> None:
    with pytest.raises(DocError, match=re.escape(error)):
        harness_on(tmp_path, markdown)


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("zibrato tail --level info", None),
        ("zibrato tail --level loud", "unknown level 'loud'"),
        ("zibrato backend statsd --address 127.0.0.1:8125 --prefix shop", None),
        ("zibrato backend statsd --listen x", "unrecognized arguments: --listen x"),
        ("zibrato run --backend console --backend jsonl --jsonl-path m.jsonl", None),
        ("zibrato run --backend nosuch", "unknown backend 'nosuch'"),
        ("python -m zibrato --version", None),
        ("python -m no_such_module_here", "no module 'no_such_module_here'"),
        ("zibrato tail [--connect tcp://127.0.0.1:5551] [--level debug] [--json]", None),
        ("zibrato tail [--level info]", "--level info: the default is 'debug'"),
        ("zibrato backend KIND [--flush 10] [--percentiles 90,95,99] [options]", None),
        ("zibrato broker [--frontnd ADDR]", "--frontnd is not an option of zibrato broker"),
        ("pip install '.[django,flask]'", None),
        ("pip install 'zibrato[djang]'", "no extra 'djang' in pyproject.toml"),
        ("ZIBRATO_PUBLISH=tcp://127.0.0.1:5550 make run &", None),
        (".venv/bin/python bench/no_such_script.py", "no script 'bench/no_such_script.py'"),
    ],
)
def test_harness_command_checks(command: str, problem: str | None) -> None:
    found = check_command(command)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield the lines of ``path`` outside fenced blocks, numbered from 1."""
    fence = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = _FENCE.match(line)
        if found:
            marker = found["fence"][0] * 3
            fence = None if fence == marker else fence or marker
        elif fence is None:
            yield number, line


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_install_instruction_works_as_written(path: Path) -> None:
    # Newcomer item 1 of issue 17: `pip install "zibrato[flask]"` got the 2013 release.
    failures = [
        f"{path.name}:{number}: {span}: {problem}"
        for number, line in prose_lines(path)
        for span in _INLINE_CODE.findall(line)
        if re.match(r"^(python[0-9.]* -m )?pip install ", span)
        and (problem := check_command(span)) is not None
    ]
    assert failures == []


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_and_reference_is_in_the_repository(path: Path) -> None:
    # Newcomer item 5 of issue 17: "DESIGN §4" named a document that is not in the repo.
    failures = []
    for number, line in prose_lines(path):
        if re.search(r"\bDESIGN\b", line):
            failures.append(f"{path.name}:{number}: cites DESIGN, which is not in the repository")
        for target in _LINK.findall(line):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            if not (path.parent / target.partition("#")[0]).exists():
                failures.append(f"{path.name}:{number}: {target} does not exist")
    assert failures == []


@pytest.mark.parametrize(
    "command",
    [
        'pip install "zibrato[flask]"',
        "pip install 'zibrato[django]'",
        "pip install zibrato",
        "python -m pip install zibrato>=2",
    ],
)
def test_harness_refuses_an_install_from_the_index(command: str) -> None:
    assert "2013" in str(check_command(command))


def test_docs_exist() -> None:
    # A renamed docs folder must not make this whole module vacuous.
    assert len(DOC_FILES) >= 5
    assert sum(len(parse_blocks(path)) for path in DOC_FILES) > 30


Check = Callable[[str], "str | None"]
