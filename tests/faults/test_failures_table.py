"""docs/failures.md read row by row: each test it names exists, each exit code is well formed,
and the exit-code table lists what each command's code can return, no more and no less."""

from __future__ import annotations

import ast
import re
import signal
from pathlib import Path

from eegfm.cli import SUBCOMMANDS

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "failures.md"
# a number; `listed †` (in failures.jsonl, see the page's footnote); `(killed)`; `N (`command`)`
EXIT_CELL = re.compile(r"^(?P<code>\d+)( \(`(?P<command>[a-z]+)`\))?$|^listed †$|^\(killed\)$")
TEST_ID = re.compile(r"^(?P<file>[\w/]+\.py)?(?P<names>(::\w+(\[[^\]]*\])?)+)?$")
EVERY, DISPATCHER = "every command", "`eegfm`"


def _cells(line: str) -> list[str]:
    """The cells of one markdown table line (`\\|` is a pipe inside a cell)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _table(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and (line, cells) rows of the first markdown table in `text`."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"no table in:\n{text[:300]}"
    return _cells(lines[0]), [(line, _cells(line)) for line in lines[2:]]


def _sections() -> dict[str, str]:
    """The page's text by `## ` heading ('' for the part above the first one)."""
    parts = re.split(r"^## (.*)$", PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2], strict=True))}


def _test_names(path: Path) -> set[str]:
    """`name` and `Class::name` of every test function a test file defines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    names = set()
    for node in tree.body:
        if isinstance(node, functions) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {f"{node.name}::{method.name}" for method in node.body
                      if isinstance(method, functions) and method.name.startswith("test")}
    return names


def _test_id_problems(cell: str) -> list[str]:
    """What is wrong with the test ids of one `test` cell (`::name` continues the last file)."""
    ids = re.findall(r"`([^`]+)`", cell)
    if not ids:
        return ["names no test"]
    problems, current = [], None
    for test_id in ids:
        match = TEST_ID.match(test_id)
        if match is None or not (match["file"] or match["names"]):
            problems.append(f"{test_id!r} is not a test id (file.py, file.py::name or ::name)")
            continue
        if match["file"]:
            current = REPO / "tests" / match["file"]
            if not current.is_file():
                problems.append(f"{test_id!r}: no file tests/{match['file']}")
                current = None
                continue
        if current is None:
            problems.append(f"{test_id!r}: `::name` without a file before it")
            continue
        defined = _test_names(current)
        if not match["names"]:
            if not defined:
                problems.append(f"{test_id!r} defines no test")
            continue
        name = re.sub(r"\[[^\]]*\]$", "", match["names"].removeprefix("::"))
        if name not in defined:
            problems.append(f"{test_id!r}: {current.relative_to(REPO)} defines no test {name}")
    return problems


def _module_files(name: str) -> list[Path]:
    """The source file of an eegfm module (`a.b` -> a/b.py or a/b/__init__.py), if any."""
    base = REPO.joinpath(*name.split("."))
    return [p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()]


def _exit_values(node: ast.expr | None, constants: dict[str, int]) -> set[int]:
    """The integer exit statuses an expression can stand for (empty if not a literal one)."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return {node.value}
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    if isinstance(node, ast.IfExp):
        return _exit_values(node.body, constants) | _exit_values(node.orelse, constants)
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)  # 128 + signal.SIGTERM
            and isinstance(node.right, ast.Attribute)
            and ast.unparse(node.right.value) == "signal"):
        number = int(getattr(signal, node.right.attr))
        return {value + number for value in _exit_values(node.left, constants)}
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "getattr" and len(node.args) == 3:
        return _exit_values(node.args[2], constants)  # getattr(error, "exit_code", 2)
    return set()


def _exit_codes(path: Path) -> set[int]:
    """Exit statuses a module's code spells out: returned by `-> int` functions, given to
    SystemExit / sys.exit, assigned to `exit_code` or `EXIT_*`; 2 where argparse parses."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and type(node.value.value) is int
                 for target in node.targets if isinstance(target, ast.Name)}
    codes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.returns is not None \
                and ast.unparse(node.returns) == "int":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return):
                    codes |= _exit_values(inner.value, constants)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("SystemExit", "sys.exit"):
            codes |= _exit_values(node.args[0] if node.args else None, constants)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and (t.id == "exit_code" or t.id.startswith("EXIT_"))
                for t in node.targets):
            codes |= _exit_values(node.value, constants)
        elif isinstance(node, ast.Attribute) and node.attr == "parse_args":
            codes.add(2)  # argparse (and jsonargparse) exit 2 on a usage error
    return codes


def _command_files(command: str) -> list[Path]:
    """A command's module and the eegfm modules it imports (one step: where its codes live)."""
    (main,) = _module_files(SUBCOMMANDS[command][0])
    files = [main]
    for node in ast.walk(ast.parse(main.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eegfm"):
            for name in (node.module, *(f"{node.module}.{alias.name}" for alias in node.names)):
                files += [p for p in _module_files(name) if p not in files]
    return files


def _documented_exit_codes() -> dict[str, set[int]]:
    """The "Exit codes" table as {command cell: codes}."""
    header, rows = _table(_sections()["Exit codes"])
    assert header == ["command", "exit", "meaning"], header
    codes: dict[str, set[int]] = {}
    bad = []
    for line, (command, code, meaning) in rows:
        known = command in (EVERY, DISPATCHER) or command.strip("`") in SUBCOMMANDS
        if not (known and code.isdigit() and meaning):
            bad.append(line)
            continue
        codes.setdefault(command, set()).add(int(code))
    assert not bad, "Exit codes rows with an unknown command or a code that is not a number:\n" \
        + "\n".join(bad)
    return codes


def test_every_failure_row_names_existing_tests_and_a_well_formed_exit():
    header, rows = _table(_sections()[""])
    assert header == ["fault", "what eegfm does", "exit", "test"], header
    assert len(rows) >= 20, "the failure table lost its rows"
    documented = _documented_exit_codes()
    every, all_codes = documented[EVERY], set().union(*documented.values())
    bad = []
    for line, cells in rows:
        if len(cells) != 4:
            bad.append(f"{line}\n    has {len(cells)} cells, expected 4")
            continue
        problems = _test_id_problems(cells[3])
        exit_match = EXIT_CELL.match(cells[2])
        if exit_match is None:
            problems.append(f"exit {cells[2]!r} is none of N, `listed †`, `(killed)`, N (`cmd`)")
        elif exit_match["command"]:
            command = exit_match["command"]
            if int(exit_match["code"]) not in documented.get(f"`{command}`", set()) | every:
                problems.append(f"exit {cells[2]!r} is not in the Exit codes table of {command}")
        elif exit_match["code"] and int(exit_match["code"]) not in all_codes:
            problems.append(f"exit {cells[2]!r} is in no row of the Exit codes table")
        bad += [f"{line}\n    {problem}" for problem in problems]
    assert not bad, "docs/failures.md rows that do not check out:\n" + "\n".join(bad)


def test_exit_code_table_matches_the_code_of_each_command():
    documented = _documented_exit_codes()
    assert {c.strip("`") for c in documented} == {*SUBCOMMANDS, "eegfm", EVERY}, (
        "every command `eegfm --help` lists has rows in the Exit codes table")
    dispatcher = set().union(*(_exit_codes(path) for path in _module_files("eegfm.cli")))
    shared = documented[EVERY] | documented[DISPATCHER]
    assert shared == dispatcher, f"eegfm/cli/__init__.py returns {sorted(dispatcher)}, the " \
        f"table says {sorted(shared)} for every command and `eegfm`"
    bad = []
    for command in SUBCOMMANDS:
        files = _command_files(command)
        found = set().union(*(_exit_codes(path) for path in files))
        listed = documented[f"`{command}`"]
        where = ", ".join(str(path.relative_to(REPO)) for path in files)
        if listed - found:
            bad.append(f"{command}: {sorted(listed - found)} listed, but not returned by {where}")
        if found - listed - documented[EVERY]:
            bad.append(f"{command}: {where} return {sorted(found - listed - documented[EVERY])}, "
                       "not in the table")
    assert not bad, "\n".join(bad)
