"""Typed configuration: one loader and one command-line grammar for every command.

The dataclasses are the schema. :func:`config_parser` builds a jsonargparse parser from one: each
field is an option spelled as its dotted name (``--n_folds 3``, ``--train.patience 3``,
``--head_options.branch shared``), ``--config FILE`` reads a YAML of the same keys (options after
it override it), ``--print_config`` prints the resolved config and exits, and ``--help`` lists
every field with its docstring. ``eegfm pretrain`` gets the same grammar from LightningCLI.

YAML is read by jsonargparse's loader, a ``yaml.SafeLoader`` (no Python tags) that also reads
``1e-3`` as a number. Python callers use :func:`load_config` (a YAML plus dotted overrides) and
:func:`from_mapping`; both check every key and type the way the command line does, and every
problem is a :class:`ConfigError` of one line naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from jsonargparse import (
    ActionConfigFile,
    ArgumentError,
    ArgumentParser,
    Namespace,
    get_loader,
    set_parsing_settings,
)

T = TypeVar("T")
# Free-form keyword options (head_options, encoder_options, ...): scalars are read as YAML
# (`--head_options.n_experts 4` is a number), lists and mappings stay plain data. Under
# dict[str, Any] jsonargparse would import and build any `{class_path: ..., init_args: ...}`
# value found in a config or on the command line.
Options = dict[str, bool | int | float | str | list | dict | None]


class ConfigError(ValueError):
    """A configuration key is unknown or holds a value of the wrong type."""


class PretrainConfigError(ValueError):
    """A pretraining option the data or the model rejects, found once they meet inside `fit`.

    `eegfm pretrain` reports it in one line with exit status 2, as it does for options rejected
    when the command is built; any other exception inside `fit` is a bug (an internal error).
    """


@contextmanager
def _attribute_docstrings() -> Iterator[None]:
    """Read field docstrings as option help while a parser is built, and only then."""
    # a global jsonargparse setting: left on, it would also slow every `eegfm pretrain`
    # (LightningCLI) build by ~0.5 s reading the docstrings of Lightning's classes
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    try:
        yield
    finally:
        set_parsing_settings(docstring_parse_attribute_docstrings=False)


def config_parser(schema: type, *, prog: str | None = None,
                  description: str | None = None) -> ArgumentParser:
    """A parser whose options are the fields of dataclass ``schema``, plus ``--config`` and
    ``--print_config``; a command adds its other arguments (paths, positionals) to it."""
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False,
                            default_env=False)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="a YAML of the options below; options after it override it")
    with _attribute_docstrings():
        parser.add_class_arguments(schema)
    return parser


def parse_config(parser: ArgumentParser, schema: type[T],
                 argv: Sequence[str] | None) -> tuple[T, Namespace]:
    """Parse ``argv``: the ``schema`` instance (defaults < --config < options) and the parser's
    other arguments. ``--help`` and ``--print_config`` print and exit 0 (SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        namespace = parser.parse_args(argv)
    except ArgumentError as error:
        message = one_line(error)
        files = _config_files(argv)
        if message.startswith("Problems parsing config") and len(files) == 1:
            # jsonargparse parses the file's text and cannot say which file it was
            message = f"--config {files[0]}: {message}"
        raise ConfigError(message) from None
    return _build(parser, schema, namespace)


def _config_files(argv: Sequence[str]) -> list[str]:
    """The values given to ``--config`` in ``argv``."""
    pairs = zip(argv, [*argv[1:], None], strict=True)
    return [arg.split("=", 1)[1] if "=" in arg else value for arg, value in pairs
            if (arg == "--config" and value is not None) or arg.startswith("--config=")]


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; ``where`` (a file, a section) starts errors."""
    if isinstance(values, cls):
        return values
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    parser = _schema_parser(cls)
    try:
        namespace = parser.parse_object(to_plain(dict(values or {})))
    except (ArgumentError, TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {one_line(error)}") from None
    try:
        return _build(parser, cls, namespace)[0]
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_config(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """Dataclass ``cls`` from a YAML file (None: the defaults) and ``overrides``, whose keys may
    be dotted (``train.lr``); an override of None is ignored (an option left unset)."""
    values = read_yaml(path) if path is not None else {}
    return from_mapping(cls, with_overrides(values, overrides),
                        "config" if path is None else str(path))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping file, read as ``--config`` reads it (a safe loader)."""
    path = Path(path)
    try:
        values = get_loader("yaml")(path.read_text(encoding="utf-8"))
    except Exception as error:  # OSError, or any of the YAML parser's errors
        raise ConfigError(f"cannot read config {path}: {one_line(error)}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    return values


def with_overrides(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with dotted ``overrides`` set into their sections; None overrides are skipped."""
    merged = to_plain(dict(values))
    for key, value in overrides.items():
        if value is None:
            continue
        node = merged
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if node is None:  # a section left empty in the file (`task:`)
                node = {}
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[leaf] = to_plain(value)
    return merged


def to_plain(obj: Any) -> Any:
    """Dataclasses and Paths as plain YAML/JSON data (for results.json and checkpoints)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def one_line(error: BaseException) -> str:
    """jsonargparse's (often nested, many-line) message as one line naming the key."""
    keys, details = [], []
    for raw in str(error).splitlines():
        line = raw.strip().removeprefix("- ").strip()
        match = re.match(r'Parser key "([^"]+)":\s*(.*)', line)
        if match:
            keys.append(match[1])
            line = match[2]
        if line and not line.startswith(_BOILERPLATE) and "NoneType" not in line:
            details.append(line)
    key = ".".join(keys)
    expected = [d.removeprefix("Expected a ") for d in details if d.startswith("Expected a ")
                and "Got value" not in d]
    given = [d.removeprefix("Given value: ") for d in details if d.startswith("Given value: ")]
    if expected and given and len(expected) + len(given) == len(details):
        detail = f"expected {' or '.join(expected)}, got {given[0]}"
    else:
        detail = "; ".join(d for d in details if not d.startswith("Given value"))
    detail = _tidy(detail)
    unknown = re.fullmatch(r"unknown key '([^']+)'", detail)
    if key and unknown:
        return f"unknown key '{key}.{unknown[1]}'"
    return f"{key}: {detail}" if key else detail


_BOILERPLATE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:",
                "Problem with given class_path", "Given value type:")


def _tidy(detail: str) -> str:
    """jsonargparse's wording of a type mismatch or an unknown key, in the project's."""
    detail = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", detail)
    detail = re.sub(r"typing\.Literal\[(.*?)\]", r"one of [\1]", detail)
    detail = re.sub(r"^Expected a (.*?)\. Got value: (.*)$", r"expected \1, got \2", detail)
    detail = re.sub(r"^Option '([^']+)' is not accepted$", r"unknown key '\1'", detail)
    detail = re.sub(r"^Group '([^']+)' does not accept option '([^']+)'$",
                    r"unknown key '\1.\2'", detail)
    detail = detail.replace('in "<unicode string>", ', "")  # the YAML text of a --config file
    return " ".join(detail.split())


@functools.cache
def _schema_parser(cls: type) -> ArgumentParser:
    """The parser of ``cls`` used by :func:`from_mapping` (built once per class): the fields
    only, so a `config:` key in a mapping is an unknown key, not a file to read."""
    parser = ArgumentParser(exit_on_error=False, default_env=False)
    parser.add_class_arguments(cls)
    return parser


def _build(parser: ArgumentParser, schema: type[T], namespace: Namespace) -> tuple[T, Namespace]:
    """Instantiate the parsed ``schema`` (its ``__post_init__`` checks run here); the rest."""
    names = [f.name for f in dataclasses.fields(schema)]
    try:
        values = parser.instantiate(namespace)
        config = schema(**{name: values[name] for name in names})
    except ConfigError:
        raise
    except (ArgumentError, TypeError, ValueError) as error:
        # a check of a nested optional section (task:) comes back wrapped in jsonargparse's
        # union error: the check's own line is kept
        raise ConfigError(one_line(error)) from None
    rest = values.clone()
    for name in names:
        del rest[name]
    return config, rest
