"""Command line interface: ``fnattr demo`` and ``fnattr explain``.

``fnattr`` (or ``python -m fnattr``) with no arguments runs the demo. Every
problem with the request (missing or unsafe files, unknown layers or methods,
inputs the model rejects, bad targets) is reported as one line
``fnattr: error: <problem>`` on stderr with exit code 2, and nothing is
written: outputs go to temporary files next to their destination and replace
it only once everything has been computed. Set ``FNATTR_DEBUG=1`` to get the
Python traceback instead.

Modules: :mod:`.args` (parser), :mod:`.loading` (models, weights, tensors,
images), :mod:`.methods` (the catalog's methods and how to call them),
:mod:`.explain`, :mod:`.store` (``explain --out NAME.zarr``: a whole dataset
through ``fnattr.attribute_dataset``, resumable, under ``torchrun`` too),
:mod:`.demo`, :mod:`.output` (paths, writers, commit) and :mod:`.figure` (the
heatmap). Heavy modules (matplotlib, tqdm) are imported
inside the commands that use them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .args import build_parser as _build_parser
from .errors import EXIT_ERROR, CLIError, debug, one_line
from .methods import METHODS

__all__ = ["main", "METHODS", "CLIError", "build_parser"]

_BENCH_MOVED = ("`fnattr bench` was removed: the benchmarks are not part of the installed "
                "package; from a source checkout run `python -m benchmarks.run --quick`")


def build_parser() -> argparse.ArgumentParser:
    """The ``fnattr`` argument parser (subcommands ``demo`` and ``explain``)."""
    return _build_parser(METHODS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fnattr`` command; returns 0 or raises ``SystemExit``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except CLIError as error:
        if debug():
            raise
        print(f"fnattr: error: {one_line(error, 600)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        print("fnattr: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:
        raise CLIError(_BENCH_MOVED)
    args, extra = build_parser().parse_known_args(argv or ["demo"])
    if extra:
        command = f"fnattr {args.command}" if args.command else "fnattr"
        raise CLIError(f"unrecognized arguments: {' '.join(extra)} (see '{command} --help')")
    if args.command == "explain":
        from .output import is_store

        if is_store(args.out):  # a whole dataset, through fnattr.attribute_dataset
            from .store import explain_store

            return explain_store(args)
        from .explain import explain

        return explain(args)
    from .demo import demo

    return demo(args if args.command == "demo" else build_parser().parse_args(["demo"]))
