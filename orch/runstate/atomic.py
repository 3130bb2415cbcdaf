"""Atomic file writes: a reader sees the old content or the new, never half of one."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from orch.failpoints import crash_point
from orch.core.redact import redact_obj


def write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        crash_point('write', path.name)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode('utf-8'))


def write_json(path: Path, obj: Any) -> None:
    """Every JSON record codex-orch keeps (state, result, attempt, run) goes through here: no secrets."""
    write_text(path, json.dumps(redact_obj(obj), indent=2, sort_keys=True, ensure_ascii=False) + '\n')


def write_if_changed(path: Path, text: str) -> bool:
    """Write only when the content differs, so mtimes and md5 checks stay quiet. Returns True if written."""
    path = Path(path)
    data = text.encode('utf-8')
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_bytes(path, data)
    return True


# mkstemp names made by write_bytes: '.<name>.<8 random chars>.tmp'
_TEMP_NAME = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


def sweep_temp(directory: Path, *, recursive: bool = True) -> int:
    """Delete temp files that a killed write_bytes left behind; call it only while no write is underway
    (e.g. holding the run's lock). Returns how many were removed."""
    removed = 0
    for root, _dirs, files in os.walk(directory) if recursive else [(directory, [], _names(directory))]:
        for name in files:
            if _TEMP_NAME.match(name):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
