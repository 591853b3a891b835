"""Names that arrive from outside (a bundle's manifest, a bench label) and become file or
folder names on this machine or a board: checked here, so that none can point elsewhere."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from qmtgan.runtime.errors import QmtganError

# Letters, digits, '.', '_', '-' and '+', at most 128, not starting with '.' or '-': no
# separator, no '..', nothing a shell or an option parser reads as anything but a name.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")


def is_plain_name(value: object) -> bool:
    return isinstance(value, str) and _PLAIN.fullmatch(value) is not None


def plain_name(value: object, what: str) -> str:
    """`value` if it is a plain file or folder name; one clear error naming `what` otherwise."""
    if not is_plain_name(value):
        raise QmtganError(f"{what} {value!r} is not a plain name (letters, digits, '.', '_', '-', '+'; "
                          "no separator, no leading '.' or '-', at most 128 characters)")
    return value


def safe_label(value: str) -> str:
    """A label made into a plain name: every other character becomes '_' (for folder names
    built from labels this tool makes, such as a bench configuration's)."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", value)[:128].lstrip(".-")
    return name or "_"


def relative_path(value: str, what: str) -> str:
    """A relative posix path whose every part is a plain name (a place under a workdir)."""
    parts = PurePosixPath(value).parts
    if not parts or value.startswith("/"):
        raise QmtganError(f"{what} {value!r} is not a relative path")
    for part in parts:
        plain_name(part, f"{what} part")
    return value
