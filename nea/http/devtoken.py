"""A development admin token file: random, mode 0600, written once.

Run as ``python -m nea.http.devtoken [FILE]`` (``make run`` does, for
``certs/admin-token``); the daemon reads it with ``--admin-token-file FILE``.
An existing file is left as it is, so the token survives restarts.
"""

import os
import secrets
import sys
from pathlib import Path

DEFAULT = Path("certs") / "admin-token"


def ensure(path: Path) -> bool:
    """Write a fresh token to ``path`` unless it exists; True if it wrote one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    done = "wrote a development admin token to" if ensure(path) else "development admin token in"
    print(f'{done} {path}; use it: curl -H "Authorization: Bearer $(cat {path})" ...')
    return 0


if __name__ == "__main__":
    sys.exit(main())
