"""The media root: the one folder the server reads client-named video files from.

Jobs and file-backed live streams name their input relative to ``--media-root``; a name that
leaves the root (an absolute path, ``..``, or a symlink pointing outside) is refused before any
file is opened, as is a missing file. Paths are resolved with symlinks followed, so what is
checked is what FFmpeg will open.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from frameserve.errors import InvalidInput


class MediaRoot:
    """Resolves client-given relative paths inside one folder, or raises ``InvalidInput``.

    Messages name the path as the client gave it, never the server's folders (clients read them).
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, name: object, field: str = "input") -> Path:
        """The file ``name`` (relative to the root) as an absolute path inside the root."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput(
                f"{field}: expected a file path relative to the media root, got {name!r}"
            )
        if "\x00" in name:
            raise InvalidInput(f"{field}: the path contains a NUL byte: {name!r}")
        pure = PurePosixPath(name)
        if pure.is_absolute() or Path(name).is_absolute():
            raise InvalidInput(
                f"{field}: expected a path relative to the media root, "
                f"got the absolute path {name!r}"
            )
        if ".." in pure.parts:
            raise InvalidInput(
                f"{field}: '..' is not allowed: the path must stay inside the media root, "
                f"got {name!r}"
            )
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidInput(
                f"{field}: {name!r} leads outside the media root (through a symlink)"
            )
        if not path.exists():
            raise InvalidInput(f"{field}: no such file in the media root: {name!r}")
        if not path.is_file():
            raise InvalidInput(f"{field}: {name!r} in the media root is not a file")
        return path
