"""Which errors are deterministic: the same inputs raise them again, so retrying cannot help.

A sweep retries a crashed trial (killed worker, lost node, out of memory) from its checkpoint,
but a bad config, a missing or malformed annotation file or an unreadable image fails the same
way every time; such a trial fails once, with its one-line reason. `DeterministicError` is the
base for new error types of that kind; `is_deterministic` also maps the existing ones (they keep
their ValueError/RuntimeError bases, so callers catching those still work).
"""

from __future__ import annotations

__all__ = ["DeterministicError", "is_deterministic", "one_line"]


class DeterministicError(Exception):
    """An error that the same config and data will raise again."""


def _known() -> tuple[type[BaseException], ...]:
    from atf.checkpoint import CheckpointError
    from atf.config import ConfigError
    from atf.datasets import DatasetError
    from atf.readers import AnnotationError
    from atf.schemes import SchemeError
    out: list[type[BaseException]] = [DeterministicError, ConfigError, DatasetError, AnnotationError,
                                      SchemeError, CheckpointError]
    try:  # torch-backed; absent only in a torch-free tool
        from atf.data import UnreadableImageError
        out.append(UnreadableImageError)
    except ImportError:
        pass
    return tuple(out)


def is_deterministic(exc: BaseException) -> bool:
    """True for data and config errors (see the module docstring); False for anything else."""
    return isinstance(exc, _known())


def one_line(exc: BaseException, limit: int = 400) -> str:
    """`DatasetError: dataset wflw train/full: neither ... exists`, cut to `limit` characters."""
    text = " ".join(str(exc).split()) or "(no message)"
    line = f"{type(exc).__name__}: {text}"
    return line if len(line) <= limit else line[: limit - 3] + "..."
