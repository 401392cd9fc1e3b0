"""Which sweep file and cell would fill a missing table cell.

Why: a dash in a table is only useful if it says how to get the number. The sweep files are
the orchestration engineer's; cells are matched by the same content tags the report selects
runs with, so a table cell and a sweep cell agree without naming tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["Filler", "SweepIndex"]


@dataclass(frozen=True)
class Filler:
    sweep_file: str       # path of the sweep YAML, as given
    cell_id: str
    tables: tuple[str, ...]


class SweepIndex:
    """All cells of the sweep files in a folder (or named files), loaded once."""

    def __init__(self, paths: list[Path]):
        self.paths = sorted(paths)
        self.problems: list[str] = []

    @classmethod
    def from_dir(cls, folder: Path, sweep: str | None = None) -> "SweepIndex":
        files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        if sweep:
            files = [f for f in files if f.stem == sweep]
        return cls(files)

    @cache
    def _cells(self) -> list[tuple[str, object]]:
        try:
            from orchestration.sweepfile import load_sweep
        except ImportError as exc:
            self.problems.append(f"sweep files not read: orchestration.sweepfile unavailable ({exc})")
            return []
        out = []
        for path in self.paths:
            try:
                out += [(str(path), cell) for cell in load_sweep(path).cells()]
            except Exception as exc:  # one bad sweep file must not hide the others' cells
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                self.problems.append(f"{path}: not readable ({first})")
        return out

    def fillers(self, selector: dict[str, str]) -> list[Filler]:
        """Sweep cells whose tags carry every tag of `selector` (a missing tag reads as "")."""
        hits = []
        for path, cell in self._cells():
            tags = {k: "" if v is None else str(v) for k, v in dict(cell.tags).items()}
            if all(tags.get(tag, "") == value for tag, value in selector.items()):
                hits.append(Filler(path, str(cell.cell_id), tuple(cell.tables)))
        return hits

    def __hash__(self) -> int:
        return id(self)
