"""Video readers behind one interface: decord (default) and PyAV (fallback, pure FFmpeg bindings).

    reader = get_reader("auto")              # decord (PyAV fallback) if importable, else PyAV
    with reader.open(path) as video:         # DecodeError if the file is not a readable video
        video.timestamps                     # float64 [F]: seconds from the first frame, ascending
        video.duration                       # seconds (end of the last frame)
        for frame in video.frames(indices):  # sorted unique frame indices -> uint8 [H, W, 3] RGB
            ...

A video is opened once and decoded forward once, without seeking: ``frames`` visits the
requested indices in order and converts only those frames to RGB (decord: ``skip_frames``
between them; PyAV: the packets of a GOP up to its last requested frame, none of a GOP without
one, ``PyAVVideo.packets_to_decode``). Streams with leading pictures (open GOPs) are decoded
frame by frame up to the last requested frame.
Timestamps come from the container (decord's frame index, PyAV's packet pts), so variable
frame rates are handled. Whatever goes wrong inside a file is raised as ``DecodeError`` with a
one-line reason; a crash *inside* the decoder library is the worker pool's business
(``preprocessing.pool``).

``auto`` (the default) is decord with PyAV as a per-video fallback. ``--reader`` also accepts
``module:Class`` or ``path/to/file.py:Class`` (a class with ``open(path)``), e.g. for a
storage system or, in the tests, a reader that aborts its process.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Iterator

import numpy as np

READERS = ("auto", "decord", "pyav")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
                    ".ts", ".3gp")


class DecodeError(Exception):
    """A video that cannot be read; ``str(e)`` is the reason recorded in the failures file."""


def _reason(e: BaseException) -> str:
    """One readable line out of FFmpeg / decord's multi-line C++ messages."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    useful = [line for line in lines if "error" in line.lower()] or lines or [type(e).__name__]
    # decord prefixes "[hh:mm:ss] /src/file.cc:123: " (sometimes twice): keep the message only.
    text = re.sub(r"^(\[[\d:]+\]\s+\S+:\d+:\s*)+", "", useful[-1])
    return f"{type(e).__name__}: {text[:300]}"


class OpenedVideo:
    """Base of an opened video; subclasses set ``timestamps`` / ``duration`` and ``frames``."""

    timestamps: np.ndarray
    duration: float

    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _relative_times(starts: np.ndarray, last_end: float | None) -> tuple[np.ndarray, float]:
    """Timestamps from the first frame, and the duration (end of the last frame)."""
    starts = np.asarray(starts, dtype=np.float64)
    if len(starts) == 0:
        raise DecodeError("no video frames")
    if not np.all(np.isfinite(starts)) or np.any(np.diff(starts) < 0):
        raise DecodeError("frame timestamps are missing or not in display order")
    t = starts - starts[0]
    if last_end is None or not np.isfinite(last_end) or last_end - starts[0] <= t[-1]:
        # Last frame's display time unknown: the median frame interval (1/fps) is the best guess.
        step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        return t, float(t[-1] + step)
    return t, float(last_end - starts[0])


# --- decord --------------------------------------------------------------------------------------
class DecordVideo(OpenedVideo):
    def __init__(self, path: str, num_threads: int):
        import decord
        try:
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
            n = len(self._vr)
            ts = self._vr.get_frame_timestamp(np.arange(n)) if n else np.zeros((0, 2))
        except Exception as e:  # decord raises RuntimeError / DECORDError for every kind of bad file
            raise DecodeError(f"cannot open: {_reason(e)}") from None
        self.timestamps, self.duration = _relative_times(ts[:, 0], ts[-1, 1] if n else None)
        self._pos = 0  # the frame next() returns
        declared, self._open_gop = _container_facts(path)
        if declared and n < declared:
            # decord indexes what it can demux, so a cut file would silently become a shorter video.
            raise DecodeError(f"truncated: the container declares {declared} frames, {n} can be read")

    def frames(self, indices):
        # One forward pass: ``skip_frames`` decodes the frames in between without converting or
        # copying them, ``next`` converts the wanted one. ``get_batch`` seeks to the key frame
        # before every index in another GOP (slower: the decoder restarts), and both it and
        # ``skip_frames`` miscount frames after a key frame with leading pictures (open GOPs):
        # there every frame is read with ``next``.
        vr = self._vr
        for i in np.asarray(indices).tolist():
            try:
                if i < self._pos:  # a second pass over the video: back to its first frame
                    vr.seek(0)
                    self._pos = 0
                if self._open_gop:
                    while self._pos < i:
                        vr.next()
                        self._pos += 1
                elif i > self._pos:
                    vr.skip_frames(i - self._pos)
                frame = vr.next()
            except Exception as e:
                raise DecodeError(f"decoding frame {i} of {len(self.timestamps)} failed: {_reason(e)}") from None
            self._pos = i + 1
            if frame.shape[-1] != 3:
                # decord 0.6 reports padded rows as extra channels for some frame widths (e.g. 48 px).
                raise DecodeError(f"decoding frames {i}..: decord returned a frame of shape {tuple(frame.shape)}")
            yield frame.asnumpy()

    def close(self):
        self._vr = None


def _container_facts(path: str) -> tuple[int, bool]:
    """The frame count the container header promises (0 when it has none, e.g. mkv / ts), and
    whether the stream has leading pictures (``_has_leading_pictures``), from one demux pass."""
    import av
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                return 0, False
            stream = container.streams.video[0]
            pts, _, keys = _demux_index(container, stream)
            return stream.frames, _has_leading_pictures(pts, keys)
    except av.error.FFmpegError:
        return 0, False


def _demux_index(container, stream) -> tuple[list, list, list]:
    """pts (dts where missing), duration and key-frame flag of every packet, in decode order
    (demuxing only: no decoding)."""
    pts, durations, keys = [], [], []
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        pts.append(packet.pts if packet.pts is not None else packet.dts)
        durations.append(packet.duration or 0)
        keys.append(packet.is_keyframe)
    return pts, durations, keys


def _has_leading_pictures(pts: list, keys: list) -> bool:
    """A frame decoded after a key frame but shown before it (an open GOP: it may reference the
    GOP before the key frame). Unknown pts count as leading pictures."""
    if not pts or any(p is None for p in pts):
        return True
    pts = np.asarray(pts, dtype=np.int64)
    latest_key = np.maximum.accumulate(np.where(keys, pts, np.iinfo(np.int64).min))
    return bool((pts < latest_key).any())


class DecordReader:
    name = "decord"

    def __init__(self, num_threads: int = 0):
        import decord  # fail at construction, not per video, when decord is missing
        decord.logging.set_level(decord.logging.QUIET)  # reasons reach the failures file instead
        self.num_threads = num_threads  # decoder threads (0: decord's automatic count)

    def open(self, path) -> DecordVideo:
        return DecordVideo(str(path), self.num_threads)


# --- PyAV ----------------------------------------------------------------------------------------
class PyAVVideo(OpenedVideo):
    def __init__(self, path: str, threads: int = 0):
        import av
        self._av, self._path, self._threads = av, path, threads
        try:
            with av.open(path, metadata_errors="ignore") as container:
                if not container.streams.video:
                    kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                    raise DecodeError(f"no video stream (has: {', '.join(kinds)})")
                stream = container.streams.video[0]
                declared = stream.frames
                # Demux only (no decoding): the packets' pts are the display times of all frames.
                pts, durations, keys = _demux_index(container, stream)
                tb = float(stream.time_base) if stream.time_base else None
                rate = float(stream.average_rate or stream.guessed_rate or 0)
        except av.error.FFmpegError as e:
            raise DecodeError(f"cannot open: {_reason(e)}") from None
        if declared and len(pts) < declared:
            raise DecodeError(f"truncated: the container declares {declared} frames, {len(pts)} can be read")
        self._gop = np.maximum(np.cumsum(keys) - 1, 0)  # GOP of each packet, decode order
        if pts and all(p is not None for p in pts) and tb:
            decode_pts = np.asarray(pts, dtype=np.int64)
            order = np.argsort(decode_pts, kind="stable")  # display index -> decode position
            self._pts, self._decode_pos = decode_pts[order], order
            # Leading pictures may reference the GOP before: then no GOP's tail is left undecoded.
            self._open_gop = _has_leading_pictures(pts, keys)
            last = (self._pts[-1] + durations[order[-1]]) * tb if durations[order[-1]] else None
            self.timestamps, self.duration = _relative_times(self._pts * tb, last)
        elif pts and rate > 0:
            # No usable pts (raw streams, some AVIs): frames in decode order at the nominal rate.
            self._pts, self._decode_pos, self._open_gop = None, np.arange(len(pts)), True
            self.timestamps, self.duration = _relative_times(np.arange(len(pts)) / rate, len(pts) / rate)
        else:
            raise DecodeError("no video frames" if not pts else "frames have neither timestamps nor a frame rate")

    def packets_to_decode(self, indices) -> np.ndarray:
        """bool ``[packets]`` (decode order): what must be decoded to get frames ``indices``.

        Every packet of a GOP up to the last wanted one in decode order (the frames a wanted
        frame references come before it); nothing after the last wanted frame of a GOP, and no
        GOP without a wanted frame. With leading pictures (open GOPs) or without pts, every
        packet up to the last wanted one."""
        pos = self._decode_pos[np.asarray(indices, dtype=np.int64)]
        every = np.arange(len(self._gop))
        if len(pos) == 0:
            return np.zeros(len(every), bool)
        if self._open_gop:
            return every <= pos.max()
        last_in_gop = np.full(int(self._gop[-1]) + 1, -1)
        np.maximum.at(last_in_gop, self._gop[pos], pos)
        return every <= last_in_gop[self._gop]

    def _decoded_frames(self, container, stream, feed):
        """Frames of the packets ``feed`` selects, in display order (one forward pass, no seek)."""
        last = int(np.flatnonzero(feed)[-1]) if feed.any() else -1
        pos = 0
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream packet: flushed below
                continue
            if pos > last:
                break
            if feed[pos]:
                yield from stream.decode(packet)
            pos += 1
        yield from stream.decode(None)  # the frames still in the decoder (reordering, threads)

    def frames(self, indices):
        av = self._av
        indices = np.asarray(indices, dtype=np.int64)
        wanted = self._pts[indices] if self._pts is not None else indices
        feed = self.packets_to_decode(indices)
        k = 0  # next wanted frame
        try:
            with av.open(self._path, metadata_errors="ignore") as container:
                stream = container.streams.video[0]
                codec = stream.codec_context
                if self._threads == 1:
                    codec.thread_type, codec.thread_count = "SLICE", 1
                else:  # frame + slice threads; 0: FFmpeg's count for this machine
                    codec.thread_type, codec.thread_count = "AUTO", self._threads
                for n, frame in enumerate(self._decoded_frames(container, stream, feed)):
                    key = n if self._pts is None else frame.pts
                    if key is None:
                        continue
                    rgb = None
                    # ``<`` covers a wanted frame the decoder dropped: the next frame stands in.
                    while k < len(wanted) and wanted[k] <= key:
                        if rgb is None:
                            rgb = frame.to_ndarray(format="rgb24")
                        yield rgb
                        k += 1
                    if k == len(wanted):
                        return
        except av.error.FFmpegError as e:
            raise DecodeError(f"decoding failed after {k} of {len(wanted)} sampled frames: {_reason(e)}") from None
        raise DecodeError(f"truncated or corrupt: the decoder stopped after {k} of {len(wanted)} sampled frames")


class PyAVReader:
    name = "pyav"

    def __init__(self, threads: int = 0):
        self.threads = threads  # decoder threads: 0 = FFmpeg's automatic count (frame + slice), 1 = none

    def open(self, path) -> PyAVVideo:
        return PyAVVideo(str(path), self.threads)


# --- decord with a PyAV fallback ------------------------------------------------------------------
class _FallbackVideo(OpenedVideo):
    """decord's frames; if decord fails part-way, PyAV decodes the frames still missing."""

    def __init__(self, path: str, primary: OpenedVideo, threads: int = 0):
        self._path, self._primary, self._threads = path, primary, threads
        self.timestamps, self.duration = primary.timestamps, primary.duration

    def frames(self, indices):
        done = 0
        try:
            for frame in self._primary.frames(indices):
                yield frame
                done += 1
            return
        except DecodeError as e:
            first = e
        try:
            with PyAVVideo(self._path, self._threads) as video:
                if len(video.timestamps) != len(self.timestamps):
                    raise DecodeError(f"PyAV sees {len(video.timestamps)} frames, decord {len(self.timestamps)}")
                yield from video.frames(indices[done:])
        except DecodeError as e:
            raise DecodeError(f"{e} (decord: {first})") from None

    def close(self):
        self._primary.close()


class AutoReader:
    """decord, and PyAV for the videos (or the rest of a video) decord fails on: decord has
    quirks (e.g. it cannot batch-decode some frame widths) that PyAV does not share. Broken
    files fail in both and are reported with both reasons; files decord reads are decoded once."""

    name = "decord+pyav"

    def __init__(self, threads: int = 0):
        self._decord, self.threads = DecordReader(threads), threads

    def open(self, path) -> OpenedVideo:
        try:
            return _FallbackVideo(str(path), self._decord.open(path), self.threads)
        except DecodeError as e:
            try:
                return PyAVVideo(str(path), self.threads)
            except DecodeError as e2:
                raise DecodeError(f"{e2} (decord: {e})") from None


# --- selection -----------------------------------------------------------------------------------
def _load_class(spec: str):
    target, _, cls_name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"--reader {spec}: {path} does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"_lvmae_reader_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise ValueError(f"--reader {spec}: {target} has no class {cls_name!r}") from None


def get_reader(spec: str = "auto", threads: int = 0):
    """A reader from ``auto`` / ``decord`` / ``pyav`` / ``module:Class`` / ``file.py:Class``.

    ``auto``: decord with a PyAV fallback when decord is installed (x86-64 wheels only), else PyAV.
    ``threads``: decoder threads of the built-in readers (0: the library's automatic count)."""
    if spec == "auto":
        return AutoReader(threads) if importlib.util.find_spec("decord") is not None else PyAVReader(threads)
    if spec == "decord":
        try:
            return DecordReader(threads)
        except ImportError:
            raise ValueError("--reader decord: decord is not installed (it has x86-64 wheels only); "
                             "use --reader pyav") from None
    if spec == "pyav":
        return PyAVReader(threads)
    if ":" in spec:
        return _load_class(spec)()
    raise ValueError(f"unknown --reader {spec!r}: choose from {READERS} or give module:Class")
