"""How one chunk (the rows of one partition) becomes bytes and back.

Three encodings, chosen per chunk by :func:`choose_encoding`:

``video``
    uint8 frames (``H×W×3`` RGB, ``H×W×1`` or ``H×W`` gray) as one H.264 (or HEVC) mp4 whose
    first frame is a keyframe, so each chunk decodes on its own and ``load(rows)`` decodes only
    the chunks it needs. Odd sizes are padded (edge pixels) for the encoder and cropped on
    decode. The default CRF :data:`DEFAULT_CRF` with x264's fast settings
    (:data:`_ENCODER_OPTIONS`) keeps a decoded clip at PSNR >= 40 dB and below the source
    file's size (``bench/bench_storage.py``).
``zarr``
    numeric arrays of one shape and dtype, bit-exact: chunk ``k`` of an array
    ``(length, *shape)`` whose chunks are the partitions (Zarr format 3, Blosc LZ4 with byte
    shuffle for items of several bytes, or Blosc's uncompressed frame where LZ4 saves under a
    quarter; metadata made by zarr-python), so the version folder is a Zarr group that zarr,
    dask and xarray open.
``elements``
    anything else, one row after another: ``SNBELEM2``, the row count, one kind byte and one
    int64 length per row, then the payloads. Kinds: null; *plain* data (None, bool, int, float,
    complex, str, bytes, lists/tuples/dicts of these, numpy arrays and scalars of fixed-size
    dtypes) in this module's own JSON + raw-buffer framing, which never runs code on load;
    a registered type's ``serialize``; and *pickle* (cloudpickle, so classes defined in a
    notebook travel by value), only for other objects of type ``Any``,
    loaded only where the caller allows it (see :mod:`scanner_nb.storage.db`).

Every chunk's checksum goes into the manifest (:func:`checksum`) and is checked before
decoding: XXH3-128 (xxhash, about 30 GB/s, so checking costs nothing next to decoding), which
finds flipped bytes, truncation and swapped chunks; SHA-256 for chunks holding pickled rows,
whose checksum must also resist a crafted file (XXH3 is not collision resistant): the signed
manifest then vouches for exactly the bytes that are unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
from collections.abc import Callable
from typing import Any

import cloudpickle
import numpy as np
import xxhash

from ..errors import StorageError

__all__ = [
    "DEFAULT_CRF",
    "checksum",
    "choose_encoding",
    "chunk_key",
    "decode_elements",
    "decode_plain",
    "decode_video",
    "encode_elements",
    "encode_plain",
    "encode_video",
    "encode_zarr",
    "read_zarr",
    "verify",
    "video_options",
    "zarr_metadata",
]

#: x264 CRF of stored frames when ``compress_video`` is not called (PSNR >= 40 dB on decoded
#: video at about the source's size; measured by ``bench/bench_storage.py``).
DEFAULT_CRF = 22
#: Encoder settings. x264: preset ``ultrafast`` with CABAC and macroblock-tree rate control
#: (10 frames of lookahead) put back: 3.5x less CPU than ``veryfast`` at a smaller size and
#: the same PSNR per byte on the benchmark's clip (and on the same clip with film-grain noise).
_ENCODER_OPTIONS = {"libx264": {"preset": "ultrafast",
                                "x264-params": "cabac=1:mbtree=1:rc-lookahead=10"},
                    "libx265": {"preset": "veryfast", "x265-params": "log-level=error"}}
_CODECS = {"h264": "libx264", "libx264": "libx264", "hevc": "libx265", "h265": "libx265",
           "libx265": "libx265"}
_ELEMENTS_MAGIC = b"SNBELEM2"
_NULL, _PLAIN, _SERIALIZED, _PICKLE = 0, 1, 2, 3
_BLOSC_MAX_BYTES = 2**31 - 2**16
# A Blosc frame's header: version, versionlz, flags, typesize, nbytes, blocksize, cbytes.
_BLOSC_HEAD = struct.Struct("<BBBBIII")
_BLOSC_MEMCPYED = 0x2  # the flag of a frame holding its bytes uncompressed
#: A Zarr chunk whose LZ4 bytes are more than this share of its own is stored uncompressed.
_RAW_ABOVE = 0.75
ARRAY_NAME = {"FrameType": "frames"}  # the Zarr array's name in the group; others "elements"


def checksum(data, secure: bool = False) -> str:
    """A chunk file's checksum as ``"<algorithm>:<hex>"``: ``xxh3_128``, or ``sha256`` when
    ``secure`` (chunks holding pickled rows).

    >>> checksum(b"abc"), checksum(b"abc", secure=True)[:15]
    ('xxh3_128:06b05ab6733a618578af5f94892f3950', 'sha256:ba7816bf')
    """
    view = memoryview(data).cast("B")
    if secure:
        return "sha256:" + hashlib.sha256(view).hexdigest()
    return "xxh3_128:" + xxhash.xxh3_128_hexdigest(view)


def verify(data, expected: str) -> bool:
    """Whether ``data`` has the checksum ``expected`` (as :func:`checksum` writes it)."""
    return checksum(data, secure=expected.startswith("sha256:")) == expected


def chunk_key(encoding: str, k: int, array: str = "", ndim: int = 0) -> str:
    """The file of chunk ``k`` inside its version folder (never taken from disk).

    >>> chunk_key("zarr", 3, "frames", 4), chunk_key("video", 3), chunk_key("elements", 3)
    ('frames/c/3/0/0/0', '3.mp4', '3.elements')
    """
    if encoding == "zarr":
        return "/".join([array, "c", str(k)] + ["0"] * (ndim - 1))
    return f"{k}.mp4" if encoding == "video" else f"{k}.elements"


def video_options(quality: int | None = None, codec: str = "h264", bitrate: int | None = None,
                  keyframe_distance: int | None = None) -> dict:
    """The storage choice of ``stream.compress_video(...)``, checked.

    ``quality`` is the encoder's CRF (0 best ... 51 worst; ``None`` or -1: :data:`DEFAULT_CRF`),
    ``bitrate`` (bits/s) replaces it when given, ``keyframe_distance`` adds keyframes inside a
    chunk (each chunk starts with one anyway).

    >>> video_options(quality=35)["crf"]
    35
    """
    from ..errors import ScannerValueError

    if codec not in _CODECS:
        raise ScannerValueError(f"compress_video: codec must be one of {sorted(_CODECS)}, "
                                f"got {codec!r}")
    crf = DEFAULT_CRF if quality is None or quality == -1 else quality
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ScannerValueError(f"compress_video: quality is a CRF from 0 (best) to 51, "
                                f"got {quality!r}")
    for name, value in (("bitrate", bitrate), ("keyframe_distance", keyframe_distance)):
        if value is not None and value != -1 and (not isinstance(value, int) or value < 1):
            raise ScannerValueError(f"compress_video: {name} must be an int >= 1, got {value!r}")
    return {"encoding": "video", "codec": _CODECS[codec], "crf": crf,
            "bitrate": None if bitrate in (None, -1) else bitrate,
            "keyframe_distance": None if keyframe_distance in (None, -1) else keyframe_distance}


def choose_encoding(stack: np.ndarray | None, storage: dict) -> str:
    """``video``, ``zarr`` or ``elements`` for a chunk; ``stack`` is its rows as one array
    (``None`` when they are not arrays of one shape and dtype, or some are null)."""
    if stack is None or stack.dtype.kind not in "biufc" or stack.size == 0:
        return "elements"
    if stack.nbytes >= _BLOSC_MAX_BYTES:
        return "elements"  # Blosc compresses buffers below 2 GiB only
    if (storage.get("encoding") == "video" and stack.dtype == np.uint8
            and (stack.ndim == 3 or (stack.ndim == 4 and stack.shape[3] in (1, 3)))):
        return "video"
    return "zarr"


# ---------------------------------------------------------------------------- video chunks


def encode_video(stack: np.ndarray, options: dict, fps: float = 30.0) -> bytes:
    """An mp4 holding the frames of ``stack`` (``(n, H, W[, C])`` uint8), keyframe first."""
    import av

    n, height, width = stack.shape[:3]
    gray = stack.ndim == 3 or stack.shape[3] == 1
    frames = stack.reshape(n, height, width, -1)
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(options["codec"], rate=round(fps) or 30)
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "gray" if gray and options["codec"] == "libx264" else "yuv420p"
        stream.codec_context.gop_size = options.get("keyframe_distance") or n
        opts = dict(_ENCODER_OPTIONS[options["codec"]])
        if options.get("bitrate"):
            stream.codec_context.bit_rate = options["bitrate"]
        else:
            opts["crf"] = str(options["crf"])
        stream.options = opts
        for frame in frames:
            container.mux(stream.encode(_picture(frame, gray, stream.pix_fmt)))
        container.mux(stream.encode())
    return buffer.getvalue()


def _picture(frame: np.ndarray, gray: bool, pix_fmt: str):
    """An encoder input frame: RGB as yuv420p (BT.601, limited range, as :func:`decode_video`
    converts back); gray values go into the luma plane as they are (no range conversion), so
    they decode back to themselves."""
    import av
    import cv2

    if not gray:  # OpenCV's BT.601 conversion: 6x faster than swscale's rgb24 -> yuv420p
        return av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420),
                                          format="yuv420p")
    luma = frame[..., 0]
    if pix_fmt == "gray":
        return av.VideoFrame.from_ndarray(luma, format="gray")
    chroma = np.full((luma.shape[0] // 2, luma.shape[1]), 128, np.uint8)
    return av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")


def decode_video(data: bytes, shape: tuple, rows: int) -> np.ndarray:
    """The ``(rows, *shape)`` uint8 frames of an mp4 chunk; ``ValueError`` if it holds others."""
    import av
    import cv2

    height, width = shape[:2]
    gray = len(shape) == 2 or shape[2] == 1
    out = np.empty((rows, height, width, 1 if gray else 3), dtype=np.uint8)
    i = 0
    try:
        with av.open(io.BytesIO(data), format="mp4") as container:
            container.streams.video[0].thread_type = "AUTO"  # measured 2x on 640x360
            for frame in container.decode(video=0):
                if i == rows:
                    raise ValueError(f"it holds more than {rows} frames")
                planes = frame.to_ndarray()  # gray, or yuv420p's three planes stacked
                if gray:
                    picture = planes[:frame.height]  # the luma plane
                elif frame.format.name == "yuv420p":  # OpenCV: 3x faster than swscale
                    picture = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
                else:
                    raise ValueError(f"its frames are {frame.format.name}, not yuv420p")
                if picture.shape[0] < height or picture.shape[1] < width:
                    raise ValueError(f"its frames are {picture.shape[1]}x{picture.shape[0]}, "
                                     f"not {width}x{height}")
                out[i] = picture[:height, :width].reshape(height, width, -1)
                i += 1
    except av.FFmpegError as exc:
        raise ValueError(f"it does not decode: {exc}") from None
    if i != rows:
        raise ValueError(f"it holds {i} frames, {rows} expected")
    return out.reshape(rows, *shape)


# ---------------------------------------------------------------------------- zarr chunks


def _dimension_names(type_name: str, ndim: int) -> tuple:
    if type_name == "FrameType" and ndim in (3, 4):
        return ("frame", "y", "x", "channel")[:ndim]
    return ("row",) + tuple(f"dim_{i}" for i in range(1, ndim))


def _store(length: int, chunk_rows: int, shape: tuple, dtype: str, type_name: str,
           attributes: dict | None = None):
    """A memory Zarr group holding the stream's array (metadata only) and the dict behind it."""
    import zarr
    from zarr.codecs import BloscCodec
    from zarr.storage import MemoryStore

    files: dict = {}
    group = zarr.create_group(MemoryStore(files), attributes=attributes or {})
    array = group.create_array(
        ARRAY_NAME.get(type_name, "elements"), shape=(length, *shape),
        chunks=(chunk_rows, *shape), dtype=np.dtype(dtype),
        compressors=BloscCodec(cname="lz4", clevel=1,
                               shuffle=("noshuffle", "shuffle")[_shuffle(dtype)]),
        fill_value=0,
        dimension_names=_dimension_names(type_name, 1 + len(shape)),
        attributes=attributes or {}, config={"write_empty_chunks": True})
    return group, array, files


def zarr_metadata(length: int, chunk_rows: int, shape: tuple, dtype: str, type_name: str,
                  attributes: dict) -> dict[str, bytes]:
    """The metadata files of the stream's Zarr group, the array's consolidated into the
    group's (as ``zarr.consolidate_metadata`` writes it, so xarray opens the group at once)."""
    _, array, files = _store(length, chunk_rows, tuple(shape), dtype, type_name, attributes)
    out = {key: value.to_bytes() for key, value in files.items()}
    meta = json.loads(out["zarr.json"])
    meta["consolidated_metadata"] = {
        "kind": "inline", "must_understand": False,
        "metadata": {array.basename: json.loads(out[f"{array.basename}/zarr.json"])}}
    out["zarr.json"] = json.dumps(meta, indent=2).encode()
    return out


def _shuffle(dtype) -> int:
    """Blosc's byte shuffle for items of several bytes (it groups their high bytes, which LZ4
    then finds: 5x smaller int64 counters), none for bytes (a no-op there)."""
    import numcodecs

    return numcodecs.Blosc.SHUFFLE if np.dtype(dtype).itemsize > 1 else numcodecs.Blosc.NOSHUFFLE


def encode_zarr(stack: np.ndarray, k: int, length: int, chunk_rows: int,
                type_name: str) -> tuple[str, bytes]:
    """Chunk ``k`` of the stream's Zarr array: ``(key, bytes)``.

    The bytes are what zarr-python writes for the array of :func:`zarr_metadata` (the chunk's
    C-order little-endian bytes, padded to whole chunk with the fill value 0, then Blosc),
    encoded straight with numcodecs: zarr's asyncio round trip costs 5x the time. A chunk
    that LZ4 shrinks by less than :data:`_RAW_ABOVE` (noisy footage; a whole chunk of 1 MiB or
    more tries its first eighth first, as LZ4 is at its slowest on noise) is kept as Blosc's
    uncompressed frame (its header then the bytes, as ``clevel=0`` writes it, which every Blosc
    reader decodes): :func:`read_zarr` reads it straight into the array, at ``numpy.load``'s
    speed, where decompressing LZ4 (about 4.5 GB/s a core) would cost more than it saves.
    """
    from numcodecs import blosc

    def lz4(part: np.ndarray) -> bytes:
        return blosc.compress(part, b"lz4", 1, _shuffle(stack.dtype))

    head = np.ascontiguousarray(stack[:-(-len(stack) // 8)])  # tells noise early
    pays = (len(stack) < chunk_rows or stack.nbytes < 2**20  # a padded chunk: its zeros pay
            or len(lz4(head)) <= _RAW_ABOVE * head.nbytes)
    if len(stack) < chunk_rows:
        padded = np.zeros((chunk_rows, *stack.shape[1:]), dtype=stack.dtype)
        padded[:len(stack)] = stack
        stack = padded
    stack = np.ascontiguousarray(stack)
    data = lz4(stack) if pays else b""
    if not pays or len(data) > _RAW_ABOVE * stack.nbytes:
        data = blosc.compress(stack, b"lz4", 0, blosc.NOSHUFFLE)
    return chunk_key("zarr", k, ARRAY_NAME.get(type_name, "elements"), stack.ndim), data


def read_zarr(f, info: dict, chunk_rows: int) -> np.ndarray:
    """The ``(chunk_rows, *info["shape"])`` array of a Zarr chunk read from the binary file
    ``f``, checked against ``info["nbytes"]`` and ``info["checksum"]`` before it is returned
    (``ValueError`` if it does not match or decode).

    An uncompressed chunk (see :func:`encode_zarr`) is read straight into the array and
    checksummed there, so loading it costs what ``numpy.load`` does plus the checksum; a
    compressed one is read whole into a (huge-page backed) numpy buffer, checked, then
    decompressed into the array. Older chunks (LZ4 without shuffle) decode the same way: Blosc
    frames describe themselves.
    """
    from numcodecs import blosc

    out = np.empty((chunk_rows, *info["shape"]), dtype=np.dtype(info["dtype"]))
    view = memoryview(out).cast("B")
    size = int(info["nbytes"])
    head = f.read(_BLOSC_HEAD.size)
    if len(head) < _BLOSC_HEAD.size:
        raise ValueError(f"it holds {len(head)} bytes, {size} expected")
    flags, nbytes, cbytes = (_BLOSC_HEAD.unpack(head)[i] for i in (2, 4, 6))
    if nbytes != view.nbytes or cbytes != size or size > _BLOSC_HEAD.size + nbytes:
        raise ValueError(f"its Blosc header gives {nbytes} bytes compressed to {cbytes}, "
                         f"{view.nbytes} to {size} expected")
    algorithm, _, expected = info["checksum"].partition(":")
    hasher = hashlib.sha256() if algorithm == "sha256" else xxhash.xxh3_128()
    raw = flags & _BLOSC_MEMCPYED and size == _BLOSC_HEAD.size + view.nbytes
    body = view if raw else np.empty(size, np.uint8)
    if not raw:
        body[:_BLOSC_HEAD.size] = np.frombuffer(head, np.uint8)
    target = memoryview(body)[0 if raw else _BLOSC_HEAD.size:]
    got = 0
    while got < target.nbytes:
        n = f.readinto(target[got:])
        if not n:
            break
        got += n
    if got < target.nbytes or f.read(1):
        raise ValueError(f"its size is not the {size} bytes of its manifest")
    if raw:
        hasher.update(head)
    hasher.update(body)
    if hasher.hexdigest() != expected:
        raise ValueError("it does not match the checksum in its manifest")
    if not raw:
        try:
            blosc.decompress(body, out)
        except Exception as exc:  # noqa: BLE001 - blosc raises several kinds
            raise ValueError(f"it does not decode as a Zarr chunk: {exc}") from None
    return out


# ---------------------------------------------------------------------------- plain data

_ARRAY_KINDS = "biufcSUmM"


class _NotPlain(Exception):
    pass


def _tree(obj, blobs: list) -> Any:
    """``obj`` as a JSON-able tagged tree; bytes and array data go to ``blobs``."""
    if obj is None or obj is True or obj is False:
        return obj
    kind = type(obj)
    if kind is int:
        return ["i", str(obj)]
    if kind is float:
        return ["f", obj.hex()]
    if kind is complex:
        return ["c", obj.real.hex(), obj.imag.hex()]
    if kind is str:
        return ["s", obj]
    if kind in (bytes, bytearray):
        blobs.append(bytes(obj))
        return ["y" if kind is bytes else "Y", len(blobs) - 1]
    if kind in (list, tuple):
        return ["l" if kind is list else "t", [_tree(x, blobs) for x in obj]]
    if kind is dict:
        return ["d", [[_tree(key, blobs), _tree(value, blobs)] for key, value in obj.items()]]
    if kind is np.ndarray or isinstance(obj, np.generic):
        array = np.asarray(obj)
        if array.dtype.kind not in _ARRAY_KINDS or array.dtype.fields is not None:
            raise _NotPlain
        blobs.append(np.ascontiguousarray(array).tobytes())
        tag = "a" if kind is np.ndarray else "g"
        return [tag, len(blobs) - 1, array.dtype.str, list(array.shape)]
    raise _NotPlain


def encode_plain(obj) -> bytes | None:
    """``obj``'s bytes in the plain-data framing, or ``None`` if it is not plain data.

    >>> decode_plain(encode_plain({"a": (1, 2.5, None), 3: [b"x", "y"]}))
    {'a': (1, 2.5, None), 3: [b'x', 'y']}
    """
    blobs: list[bytes] = []
    try:
        tree = _tree(obj, blobs)
    except (_NotPlain, RecursionError):
        return None
    head = json.dumps([tree, [len(b) for b in blobs]], separators=(",", ":")).encode()
    return b"".join([struct.pack("<q", len(head)), head, *blobs])


def _untree(node, blobs: list) -> Any:
    if node is None or node is True or node is False:
        return node
    tag = node[0]
    if tag == "i":
        return int(node[1])
    if tag == "f":
        return float.fromhex(node[1])
    if tag == "c":
        return complex(float.fromhex(node[1]), float.fromhex(node[2]))
    if tag == "s":
        return str(node[1])
    if tag in ("y", "Y"):
        return (bytes if tag == "y" else bytearray)(blobs[node[1]])
    if tag in ("l", "t"):
        items = [_untree(x, blobs) for x in node[1]]
        return items if tag == "l" else tuple(items)
    if tag == "d":
        return {_untree(key, blobs): _untree(value, blobs) for key, value in node[1]}
    if tag in ("a", "g"):
        dtype = np.dtype(node[2])
        if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.hasobject:
            raise ValueError(f"dtype {node[2]!r} is not plain data")
        shape = tuple(int(n) for n in node[3])
        array = np.frombuffer(blobs[node[1]], dtype=dtype).reshape(shape).copy()
        return array if tag == "a" else array[()]
    raise ValueError(f"unknown tag {tag!r}")


def decode_plain(data: bytes) -> Any:
    """The object of :func:`encode_plain`'s bytes; ``ValueError`` if they are malformed."""
    try:
        (size,) = struct.unpack_from("<q", data, 0)
        tree, lengths = json.loads(bytes(data[8:8 + size]))
        blobs, offset = [], 8 + size
        for length in lengths:
            blobs.append(bytes(data[offset:offset + int(length)]))
            offset += int(length)
        if offset != len(data) or any(len(b) != n for b, n in zip(blobs, lengths)):
            raise ValueError("its size does not match its header")
        return _untree(tree, blobs)
    except (struct.error, TypeError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        raise ValueError(f"malformed plain data: {exc}") from None


# ---------------------------------------------------------------------------- element chunks


def encode_elements(elements: list, type_name: str,
                    serialize: Callable[[Any], bytes] | None) -> tuple[bytes, bool]:
    """The chunk file of ``elements`` (``None`` is null) and whether any row was pickled.

    ``serialize`` is a registered type's (``None`` for the built-in types); ``Any`` elements
    that are not plain data are pickled.
    """
    kinds = np.zeros(len(elements), dtype=np.uint8)
    lengths = np.zeros(len(elements), dtype="<i8")
    parts: list = []
    for i, element in enumerate(elements):
        if element is None:
            continue
        if serialize is not None:
            data, kinds[i] = serialize(element), _SERIALIZED
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise StorageError(f"serialize of type {type_name!r} returned "
                                   f"{type(data).__name__}, not bytes")
        else:
            data, kinds[i] = encode_plain(element), _PLAIN
            if data is None and type_name == "Any":
                data, kinds[i] = cloudpickle.dumps(element, protocol=5), _PICKLE
            elif data is None:
                raise StorageError(f"a {type_name} element of type {type(element).__name__} "
                                   f"cannot be stored")
        lengths[i] = memoryview(data).nbytes
        parts.append(data)
    head = _ELEMENTS_MAGIC + struct.pack("<q", len(elements))
    pickled = bool((kinds == _PICKLE).any())
    return b"".join([head, kinds.tobytes(), lengths.tobytes(), *parts]), pickled


def decode_elements(data: bytes, rows: int, deserialize: Callable[[bytes], Any] | None,
                    allow_pickle: Callable[[], None]) -> list:
    """The ``rows`` elements of a chunk file; ``ValueError`` if it is malformed.

    ``allow_pickle()`` is called before the first pickled row is loaded and raises if that
    is not allowed; nothing pickled is touched before it returns.
    """
    if bytes(data[:8]) != _ELEMENTS_MAGIC:
        raise ValueError("it is not a scanner_nb element chunk")
    (n,) = struct.unpack_from("<q", data, 8)
    if n != rows:
        raise ValueError(f"it holds {n} rows, {rows} expected")
    kinds = np.frombuffer(data, dtype=np.uint8, count=n, offset=16)
    lengths = np.frombuffer(data, dtype="<i8", count=n, offset=16 + n)
    if (lengths < 0).any() or 16 + 9 * n + int(lengths.sum()) != len(data):
        raise ValueError("its row lengths do not add up to its size")
    if (kinds == _PICKLE).any():
        allow_pickle()
    out, offset = [], 16 + 9 * n
    view = memoryview(data)
    for kind, length in zip(kinds.tolist(), lengths.tolist()):
        payload = view[offset:offset + length]
        offset += length
        if kind == _NULL:
            out.append(None)
        elif kind == _PLAIN:
            out.append(decode_plain(payload))
        elif kind == _SERIALIZED and deserialize is not None:
            out.append(deserialize(bytes(payload)))
        elif kind == _PICKLE:
            out.append(pickle.loads(payload))
        else:
            raise ValueError(f"row kind {kind} is not valid for this stream's type")
    return out
