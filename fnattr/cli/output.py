"""Where results go: output paths checked before anything runs, writers chosen
by suffix, and a transaction that moves every output into place together.

Each destination is, at every moment, either its old file or its complete new
one: new content goes to a hidden temporary file next to it and replaces it
with one ``os.replace``. The outputs of one command are committed together:
old files are first kept as hidden backups (hard links, or copies), then
every temporary file is moved into place; if a move fails, or the command is
interrupted (Ctrl-C) between two moves, the moved ones are rolled back to
their backups. Only a hard kill (SIGKILL, power loss) in the microseconds
between two moves can leave a new ``.pt`` beside an old ``.png``, and then
hidden ``.NAME.*.bak``/``.tmp`` files stay next to them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import CLIError, one_line


def _write_pt(path: Path, attributions: Any) -> None:
    import torch

    with open(path, "xb") as file:
        torch.save(attributions, file)


def _write_npy(path: Path, attributions: Any) -> None:
    import numpy as np

    with open(path, "xb") as file:
        np.save(file, attributions.numpy(), allow_pickle=False)


# --out suffix -> writer(temporary path, attributions on the CPU)
WRITERS: dict[str, Callable[[Path, Any], None]] = {".pt": _write_pt, ".npy": _write_npy}


STORE_SUFFIX = ".zarr"  # --out written by fnattr.attribute_dataset, not by a writer


def is_store(path_text: str) -> bool:
    """Whether ``--out`` names a Zarr store (a resumable dataset run)."""
    return Path(path_text).suffix.lower() == STORE_SUFFIX


def check_store(path_text: str, option: str) -> Path:
    """A Zarr store path that can be written: existing parent, not a file."""
    path = Path(path_text)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"{option}: directory {parent} does not exist")
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {path_text} is a file, not a Zarr store (a directory)")
    return path


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def refuse_store_overlap(option: str, store: Path, sources: Iterable[tuple[str, str]]) -> None:
    """Refuses a store that is, holds, or lies inside a source (a store is a directory
    tree that ``--overwrite`` replaces)."""
    for what, source_text in sources:
        source = Path(source_text)
        if _inside(source, store) or (source.is_dir() and _inside(store, source)):
            raise CLIError(f"{option} {store} would overwrite or write inside the {what} "
                           f"{source}; choose another output path")


def writer_for(path: Path) -> Callable[[Path, Any], None]:
    return WRITERS[path.suffix.lower()]


def check_output(path_text: str, option: str, suffixes: Sequence[str] | None) -> Path:
    """An output path that can be written: right suffix, existing directory."""
    path = Path(path_text)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise CLIError(f"{option} {path_text} must end in {' or '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"{option}: directory {parent} does not exist")
    if path.is_dir():
        raise CLIError(f"{option} {path_text} is a directory")
    return path


def check_image_format(path: Path, option: str) -> str:
    """The matplotlib format of an image path (its suffix), refused if unsupported."""
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = path.suffix[1:].lower() or "png"
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise CLIError(f"{option} {path}: unsupported image format {fmt!r}")
    return fmt


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: equal after resolving symlinks, or (both
    existing) the same inode, which also catches hard links."""
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def refuse_overwrites(outputs: dict[str, Path], sources: Iterable[tuple[str, str]]) -> None:
    """Refuses outputs that would overwrite a source (``(what, path)``: inputs, the
    model, the weights, baselines) or each other."""
    sources = [(what, Path(path)) for what, path in sources]
    named = list(outputs.items())
    for i, (option, out) in enumerate(named):
        for what, source in sources:
            if _same_file(out, source):
                raise CLIError(f"{option} {out} would overwrite the {what} {source}; "
                               "choose another output path")
        for other, path in named[i + 1:]:
            if _same_file(out, path):
                raise CLIError(f"{option} and {other} name the same file {out}")


class Outputs:
    """A set of files committed together; see the module docstring."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def temporary(self, destination: Path) -> Path:
        tmp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
        self._pending.append((tmp, destination))
        return tmp

    def commit(self) -> None:
        """Moves every temporary file into place, or none (rolled back)."""
        backups = [self._backup(dest) for _, dest in self._pending]
        moved = 0
        try:
            for tmp, dest in self._pending:
                os.replace(tmp, dest)
                moved += 1
        except BaseException:
            for (_, dest), backup in reversed(list(zip(self._pending, backups))[:moved]):
                if not self._restore(backup, dest):
                    backups.remove(backup)  # keep it: the old file lives only there now
            raise
        finally:
            for backup in backups:
                if backup is not None:
                    with contextlib.suppress(OSError):
                        backup.unlink()
        self._pending = []

    @staticmethod
    def _backup(destination: Path) -> Path | None:
        if not destination.exists():
            return None
        backup = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.bak")
        try:
            os.link(destination, backup)
        except OSError:
            shutil.copy2(destination, backup)
        return backup

    @staticmethod
    def _restore(backup: Path | None, destination: Path) -> bool:
        try:
            if backup is None:
                destination.unlink()
            else:
                os.replace(backup, destination)
        except OSError:
            return False
        return True

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = []


def write_outputs(files: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Writes ``(destination, write(temporary path))`` pairs and commits them together."""
    outputs = Outputs()
    try:
        for destination, write in files:
            write(outputs.temporary(destination))
        outputs.commit()
    except OSError as error:
        raise CLIError(f"cannot write outputs: {one_line(error)}") from None
    finally:
        outputs.discard()
