"""`eegfm` command-line entry point: one subcommand per stage, each implemented in its module."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings

from eegfm import __version__, console

# Each target module exposes `main(argv: list[str]) -> int`; importing lazily keeps `eegfm --help`
# fast and lets `eegfm prep` run without loading torch.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prep": ("eegfm.cli.prep", "convert raw recordings into coordinate-tagged HDF5 shards"),
    "inspect": ("eegfm.cli.inspect", "summarise a shard directory"),
    "validate": ("eegfm.cli.validate", "check shard schema and checksums"),
    "pretrain": ("eegfm.cli.pretrain", "masked pretraining over shard directories"),
    "finetune": ("eegfm.cli.finetune", "fine-tune and evaluate on a labelled task"),
    "predict": ("eegfm.cli.predict", "per-window predictions for new recordings"),
    "demo": ("eegfm.cli.demo", "prep → pretrain → finetune on real data, minutes on a CPU"),
    "export": ("eegfm.cli.export", "a model folder as a torch.export (.pt2) or ONNX graph"),
}

EXIT_INTERNAL_ERROR = 1  # an exception no command expects: a bug, or damage nobody foresaw
EXIT_USAGE = 2  # an unknown command (each command's own usage errors exit 2 as well)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT
EXIT_BROKEN_PIPE = 141  # the output's reader closed the pipe, as for a process ended by SIGPIPE
VERBOSE_FLAGS = ("-v", "--verbose")
QUIET_FLAGS = ("-q", "--quiet")

def _usage() -> str:
    lines = ["usage: eegfm [-v | -q] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "options (also accepted after COMMAND):",
              "  -v, --verbose  debug messages, and the traceback of an internal error",
              "  -q, --quiet    warnings and errors only, no progress bars (results still print)"]
    lines += ["", "Run `eegfm COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def split_verbosity(argv: list[str]) -> tuple[int, list[str]]:
    """Remove `-v`/`-q` (and long forms) from the arguments, not after `--`.

    Returns the console verbosity (``VERBOSE``, ``QUIET`` or ``NORMAL``; `-v` wins over `-q`)
    and the rest. No command has an option of these names, and argparse never takes them as an
    option's value, so removing them anywhere before `--` changes no other argument.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    head = argv[:end]
    rest = [arg for arg in head if arg not in VERBOSE_FLAGS + QUIET_FLAGS] + argv[end:]
    if any(arg in VERBOSE_FLAGS for arg in head):
        return console.VERBOSE, rest
    return (console.QUIET if any(arg in QUIET_FLAGS for arg in head) else console.NORMAL), rest


def internal_error_line(command: str, error: BaseException) -> str:
    """The one line an unexpected exception gets without `-v`."""
    message = " ".join(str(error).split())  # a multi-line message still makes one line
    described = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return (f"eegfm {command}: internal error: {described} "
            "(rerun with -v for the traceback)")


def main(argv: list[str] | None = None) -> int:
    """Dispatch `eegfm [-v | -q] COMMAND ...` to the module implementing COMMAND."""
    verbosity, argv = split_verbosity(list(sys.argv[1:] if argv is None else argv))
    verbose = verbosity == console.VERBOSE
    console.configure(verbosity)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"eegfm {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"eegfm: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    # braindecode builds an MNE montage by a deprecated name when its models are imported: a
    # warning about braindecode's code, not the user's, printed before every error line
    warnings.filterwarnings("ignore", message="Montage name 'standard_1020' is deprecated",
                            category=FutureWarning)
    try:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        code = int(module.main(rest) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except KeyboardInterrupt:
        print(f"eegfm {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of the output went away (`eegfm inspect | head`): stop without a traceback,
        # and keep the interpreter's final flush from failing again on the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:  # expected errors are one line inside each command already
        if verbose:
            traceback.print_exc()
        else:
            print(internal_error_line(command, error), file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
