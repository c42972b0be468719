"""The manifest of a stored stream: what it says, how it is checked, signed and resolved.

``<db>/<name>/manifest.json`` names the stream's version folder, its type, length, chunking,
and per chunk the encoding, shape, dtype and checksum (XXH3-128, or SHA-256 for pickled rows). It also names the run that wrote it:
a run is committed once its record ``<db>/.runs/<run>.json`` exists (written after every
output's manifest), and until then the manifest's ``previous`` (the stream as it was before
the run, or nothing) is what readers see. So a run killed, or failing on a full disk, between
two outputs' manifests leaves every output as it was (:func:`read_manifest`).

Everything read from disk is checked by :func:`validate` before any of it becomes a path or a
size: names, versions and run ids must match fixed patterns, numbers must agree with each
other, shapes and dtypes must be plain and bounded. A bad manifest is a :class:`StorageError`.

A manifest is signed (HMAC-SHA256) with a key private to the user who committed it (a file
made ``0600`` in their home, :func:`user_key`): :func:`is_signed` tells a reader whether this
user wrote it, which decides whether pickled elements in it may be loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re

import numpy as np

from ..errors import StorageError, StreamNotFoundError
from ..names import validate_name
from . import fs as fs_

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "RUNS",
    "RUN_RE",
    "VERSION_RE",
    "is_signed",
    "read_manifest",
    "read_manifests",
    "run_committed",
    "sign",
    "user_key",
    "validate",
]

MANIFEST = "manifest.json"
RUNS = ".runs"  # names starting with "." are never stream names
FORMAT_VERSION = 3
VERSION_RE = re.compile(r"v-\d{8}T\d{6}-[0-9a-f]{12}(\.zarr)?")
RUN_RE = re.compile(r"r-\d{8}T\d{6}-[0-9a-f]{12}")
_TYPE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,199}")
_CHECKSUM_RE = re.compile(r"xxh3_128:[0-9a-f]{32}|sha256:[0-9a-f]{64}")
_ENCODINGS = ("video", "zarr", "elements")
_LAYOUTS = ("video", "zarr", "elements", "mixed")
_MAX_CHUNK_BYTES = 2**34  # 16 GiB of decoded rows in one chunk
_MAX_MANIFEST_BYTES = 2**26
_KEYS: dict[str, bytes] = {}


def user_key(path: str | None = None) -> bytes:
    """This user's signing key: ``$SCANNER_NB_KEY_FILE`` or ``~/.config/scanner_nb/storage.key``,
    made on first use (32 random bytes, readable by this user only)."""
    path = path or os.environ.get("SCANNER_NB_KEY_FILE") or os.path.join(
        os.path.expanduser("~"), ".config", "scanner_nb", "storage.key")
    if path not in _KEYS:
        try:
            with open(path, "rb") as f:
                key = f.read()
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(os.urandom(32))
            except FileExistsError:  # another process made it meanwhile
                pass
            with open(path, "rb") as f:
                key = f.read()
        if len(key) < 16:
            raise StorageError(f"the signing key {path} is too short; remove it to make a new one")
        _KEYS[path] = key
    return _KEYS[path]


def _payload(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items()
            if k not in ("signature", "previous", "signed", "pending")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(manifest: dict, key: bytes) -> str:
    """The HMAC-SHA256 of a manifest's content (without ``previous``, which is signed alone)."""
    return hmac.new(key, _payload(manifest), hashlib.sha256).hexdigest()


def is_signed(manifest: dict, key: bytes) -> bool:
    """Whether ``manifest`` was committed by the holder of ``key``."""
    signature = manifest.get("signature")
    return isinstance(signature, str) and hmac.compare_digest(signature, sign(manifest, key))


def _int(value, low: int, high: int, what: str, bad) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"{what} must be an int from {low} to {high}, not {value!r}")
    return value


def _frame(shape, dtype, rows: int, what: str, bad) -> tuple[list, str]:
    if not isinstance(shape, list) or not 1 <= len(shape) <= 6:
        raise bad(f"{what} shape {shape!r} is not a list of 1 to 6 sizes")
    shape = [_int(n, 1, 2**24, f"{what} shape", bad) for n in shape]
    try:
        parsed = np.dtype(dtype) if isinstance(dtype, str) else None
    except TypeError:
        parsed = None
    if parsed is None or parsed.kind not in "biufcSUmM" or parsed.fields is not None:
        raise bad(f"{what} dtype {dtype!r} is not a plain numeric dtype")
    if rows * math.prod(shape) * parsed.itemsize > _MAX_CHUNK_BYTES:
        raise bad(f"{what} of {rows} rows of {shape} {dtype} is larger than "
                  f"{_MAX_CHUNK_BYTES >> 30} GiB")
    return shape, parsed.str


def validate(raw, name: str, where: str, nested: bool = False) -> dict:
    """A checked copy of the manifest ``raw`` of stream ``name`` (unknown keys dropped)."""
    def bad(why: str) -> StorageError:
        return StorageError(f"the manifest of stream {name!r} ({where}) is malformed: {why}")

    if not isinstance(raw, dict):
        raise bad("it is not a JSON object")
    if raw.get("format") != "scanner_nb.stream" or raw.get("format_version") != FORMAT_VERSION:
        raise StorageError(
            f"stream {name!r} ({where}) was not written by this version of scanner_nb "
            f"(format {raw.get('format')!r} {raw.get('format_version')!r}, expected "
            f"'scanner_nb.stream' {FORMAT_VERSION}); store it again")
    if raw.get("name") != name:
        raise bad(f"it names stream {raw.get('name')!r}")
    out = {"format": "scanner_nb.stream", "format_version": FORMAT_VERSION, "name": name}
    type_name = raw.get("type")
    if not isinstance(type_name, str) or not _TYPE_RE.fullmatch(type_name):
        raise bad(f"type {type_name!r} is not a type name")
    length = _int(raw.get("length"), 0, 2**48, "length", bad)
    chunk_rows = _int(raw.get("chunk_rows"), 1, 2**48, "chunk_rows", bad)
    num_chunks = -(-length // chunk_rows)
    if raw.get("num_chunks") != num_chunks:
        raise bad(f"num_chunks is {raw.get('num_chunks')!r}, {num_chunks} for {length} rows "
                  f"in chunks of {chunk_rows}")
    version = raw.get("version")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise bad(f"version {version!r} is not a version folder name")
    run = raw.get("run")
    if not isinstance(run, str) or not RUN_RE.fullmatch(run):
        raise bad(f"run {run!r} is not a run id")
    if raw.get("layout") not in _LAYOUTS:
        raise bad(f"layout {raw.get('layout')!r} is not one of {_LAYOUTS}")
    chunks = raw.get("chunks")
    if not isinstance(chunks, list) or len(chunks) != num_chunks:
        raise bad(f"it lists {len(chunks) if isinstance(chunks, list) else 'no'} chunks, "
                  f"{num_chunks} expected")
    checked = []
    for k, chunk in enumerate(chunks):
        rows = min(length, (k + 1) * chunk_rows) - k * chunk_rows
        what = f"chunk {k}"
        if not isinstance(chunk, dict) or chunk.get("encoding") not in _ENCODINGS:
            raise bad(f"{what} has no valid encoding")
        if chunk.get("rows") != rows:
            raise bad(f"{what} holds {chunk.get('rows')!r} rows, {rows} expected")
        digest = chunk.get("checksum")
        if not isinstance(digest, str) or not _CHECKSUM_RE.fullmatch(digest):
            raise bad(f"{what} has no valid checksum")
        if chunk.get("pickled") is True and not digest.startswith("sha256:"):
            raise bad(f"{what} holds pickled rows but no SHA-256")
        entry = {"encoding": chunk["encoding"], "rows": rows, "checksum": digest,
                 "nulls": _int(chunk.get("nulls", 0), 0, rows, f"{what} nulls", bad),
                 "nbytes": _int(chunk.get("nbytes", 0), 0, 2**50, f"{what} nbytes", bad),
                 "pickled": chunk.get("pickled") is True, "shape": None, "dtype": None}
        if chunk["encoding"] != "elements" or chunk.get("shape") is not None:
            entry["shape"], entry["dtype"] = _frame(chunk.get("shape"), chunk.get("dtype"),
                                                    rows, what, bad)
        if chunk["encoding"] == "video" and (entry["dtype"] != "|u1" or len(entry["shape"]) > 3
                                             or entry["shape"][2:] not in ([], [1], [3])):
            raise bad(f"{what} is video but its frames are {entry['shape']} {entry['dtype']}")
        checked.append(entry)
    frame = raw.get("frame")
    if frame is not None:
        if not isinstance(frame, dict):
            raise bad("frame is not an object")
        shape, dtype = _frame(frame.get("shape"), frame.get("dtype"), 1, "frame", bad)
        frame = {"shape": shape, "dtype": dtype}
    fps = raw.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                            or not 0 < fps < 1e6):
        raise bad(f"fps {fps!r} is not a positive number")
    storage = raw.get("storage")
    storage = {k: v for k, v in storage.items() if isinstance(k, str)
               and isinstance(v, (str, int, float, type(None)))} if isinstance(storage, dict) else {}
    signature = raw.get("signature")
    out.update(type=type_name, length=length, chunk_rows=chunk_rows, num_chunks=num_chunks,
               version=version, run=run, layout=raw["layout"], chunks=checked, frame=frame,
               nulls=sum(c["nulls"] for c in checked), nbytes=sum(c["nbytes"] for c in checked),
               fps=fps, storage=storage, created=str(raw.get("created", "")),
               signature=signature if isinstance(signature, str) else None)
    if not nested and raw.get("previous") is not None:
        out["previous"] = validate(raw["previous"], name, where, nested=True)
    return out


def run_committed(fs, root: str, run: str) -> bool:
    """Whether run ``run`` (a checked id) has its record, i.e. committed."""
    try:
        return bool(fs.isfile(fs_.join(root, RUNS, f"{run}.json")))
    except (FileNotFoundError, NotADirectoryError):
        return False


def read_raw(fs, root: str, name: str) -> bytes | None:
    """The bytes of ``name``'s manifest file, or ``None`` if there is none."""
    path = fs_.join(root, validate_name(name), MANIFEST)
    try:
        return fs_.read_file(fs, path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_manifest(fs, root: str, name: str, key: bytes, raw: bytes | None = None) -> dict:
    """The manifest readers of ``name`` see: the committed one (a run's record exists), else
    its ``previous``; :class:`StreamNotFoundError` if there is none. Its ``signed`` key tells
    whether this user (``key``) committed it. ``raw``: its bytes, when already read."""
    result = read_manifests(fs, root, [name], key, None if raw is None else {name: raw})[name]
    if isinstance(result, Exception):
        raise result
    return result


def read_manifests(fs, root: str, names, key: bytes,
                   raws: dict[str, bytes | None] | None = None) -> dict[str, dict | Exception]:
    """:func:`read_manifest` of each of ``names`` (each a manifest, or the
    :class:`StreamNotFoundError` / :class:`StorageError` it would raise), with the files and
    run records read concurrently on a remote store. ``raws``: the manifests' bytes already
    read (``None`` for none)."""
    names = list(names)
    if raws is None:
        raws = dict(zip(names, fs_.each(fs, lambda n: read_raw(fs, root, n), names)))
    out: dict[str, dict | Exception] = {}
    for name in names:
        try:
            out[name] = _parse(root, name, raws[name])
        except (StreamNotFoundError, StorageError) as exc:
            out[name] = exc
    runs = sorted({m["run"] for m in out.values() if isinstance(m, dict)})
    committed = dict(zip(runs, fs_.each(fs, lambda run: run_committed(fs, root, run), runs)))
    for name, manifest in out.items():
        if isinstance(manifest, dict):
            try:
                out[name] = _resolve(root, name, manifest, committed[manifest["run"]], key)
            except StreamNotFoundError as exc:
                out[name] = exc
    return out


def _parse(root: str, name: str, raw: bytes | None) -> dict:
    where = fs_.join(root, name, MANIFEST)
    if raw is None:
        raise StreamNotFoundError(f"no stored stream named {name!r} in {root!r}")
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise StorageError(f"the manifest of stream {name!r} ({where}) is too large")
    try:
        return validate(json.loads(raw), name, where)
    except (ValueError, RecursionError) as exc:
        raise StorageError(f"the manifest of stream {name!r} ({where}) is corrupt: {exc}") from None


def _resolve(root: str, name: str, manifest: dict, committed: bool, key: bytes) -> dict:
    if not committed:
        previous = manifest.get("previous")
        if previous is None:
            raise StreamNotFoundError(f"no stored stream named {name!r} in {root!r} (a run "
                                      f"storing it did not commit)")
        manifest = previous
    manifest.pop("previous", None)
    manifest["pending"] = not committed  # a run replacing it wrote its manifest, not its record
    manifest["signed"] = is_signed(manifest, key)
    return manifest
