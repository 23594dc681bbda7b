"""Supervised decode worker processes.

Decoding runs in separate processes so that (1) it overlaps with encoding on the GPU, and (2) a
crash inside the decoder library (a segfault or abort in FFmpeg / decord on a malformed file)
kills only a worker: the pool sees the process die (its sentinel), attributes the crash to the
video that worker was decoding, reports it as a failure and starts a fresh worker.

Each worker owns a duplex pipe and decodes one video at a time, so every message (and every
death) belongs to exactly one job. Frames travel as raw uint8 buffers (``send_bytes`` /
``recv_bytes_into`` a preallocated array: no pickling of pixel data). A pipe holds little, so a
worker blocks until the main process takes its frames: memory stays bounded however fast
decoding is.

Workers are started with the ``forkserver`` method (``spawn`` where it does not exist), never
by forking the main process after torch started its threads; the fork server preloads only
``preprocessing.decode`` (numpy, PIL, the readers) and the modules the encoder's transform
runs in the workers (torch for LanguageBind, cv2 for InternVideo2), so a restart takes
milliseconds. Frames travel in the dtype the transform prepares them in (uint8, or float32
for a transform that normalises before it resizes).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

import numpy as np

from preprocessing.decode import SamplingSpec, sample_video
from preprocessing.readers import DecodeError, get_reader


@dataclass
class Job:
    job_id: int
    video_id: str
    path: str


def _worker_main(conn, reader_spec: str, spec: SamplingSpec, chunk_segments: int, decoder_threads: int) -> None:
    # Ctrl-C goes to the whole process group; the main process decides what to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        reader = get_reader(reader_spec, decoder_threads)
        spec.transform.setup_worker()
    except Exception as e:
        conn.send(("fatal", None, f"cannot create reader {reader_spec!r} or set up the "
                                  f"{spec.transform.name} transform: {type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        job_id, path = job
        try:
            for kind, *payload in sample_video(reader, path, spec, chunk_segments):
                if kind == "frames":
                    start, frames = payload
                    frames = np.ascontiguousarray(frames)
                    conn.send(("frames", job_id, start, frames.shape, frames.dtype.str))
                    conn.send_bytes(memoryview(frames).cast("B"))
                else:
                    conn.send((kind, job_id, *payload))
            conn.send(("done", job_id))
        except DecodeError as e:
            conn.send(("error", job_id, str(e)))
        except Exception as e:  # a reader bug must not take the worker down with it
            conn.send(("error", job_id, f"{type(e).__name__} in the reader: {e}"))


def default_decoder_threads(num_workers: int, cpus: int | None = None) -> int:
    """Decoder threads per worker: the cores left to each worker (frame threading pays only on a
    spare core; more threads than cores cost CPU and memory). Each worker also runs one
    transform thread (``preprocessing.decode``)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, num_workers))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Worker:
    def __init__(self, ctx, args):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, *args), daemon=True,
                                   name="lvmae-decode")
        self.process.start()
        child.close()
        self.job: Job | None = None
        self.ready = False  # set by the worker's first message; a death before it is fatal
        self.last_seen = time.monotonic()


class DecodePool:
    """``num_workers`` supervised decoders. Events returned by ``events()``::

        ("meta", job, windows [N, 2], duration_s)
        ("frames", job, first_segment, [n, T, *spec.transform.shape] in spec.transform.dtype)
        ("done", job)
        ("failed", job, reason)     # DecodeError, reader exception, crash or timeout
    """

    def __init__(self, num_workers: int, reader_spec: str, spec: SamplingSpec, chunk_segments: int = 16,
                 timeout: float = 600.0, decoder_threads: int | None = None):
        methods = mp.get_all_start_methods()
        self._ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        if self._ctx.get_start_method() == "forkserver":
            self._ctx.set_forkserver_preload(["preprocessing.decode", "preprocessing.pool",
                                              *spec.transform.worker_modules])
        self._args = (reader_spec, spec, chunk_segments,
                      default_decoder_threads(num_workers) if decoder_threads is None else decoder_threads)
        self.timeout = timeout
        self.num_restarts = 0
        self.workers = [_Worker(self._ctx, self._args) for _ in range(max(1, num_workers))]

    # -- jobs ------------------------------------------------------------------------------------
    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.job is None]

    @property
    def num_busy(self) -> int:
        return sum(w.job is not None for w in self.workers)

    def submit(self, worker: _Worker, job: Job) -> None:
        worker.job, worker.last_seen = job, time.monotonic()
        worker.conn.send((job.job_id, job.path))

    # -- events ----------------------------------------------------------------------------------
    def events(self, timeout: float = 1.0) -> list[tuple]:
        """Wait up to ``timeout`` s for messages or deaths of busy workers."""
        busy = [w for w in self.workers if w.job is not None]
        if not busy:
            return []
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
        out: list[tuple] = []
        now = time.monotonic()
        for w in busy:
            if w.conn in ready:
                try:
                    out.extend(self._receive(w))
                    continue
                except (EOFError, OSError):
                    pass  # the worker is gone; its sentinel says why
            if w.process.sentinel in ready or not w.process.is_alive():
                out.extend(self._replace(w, None))
            elif now - w.last_seen > self.timeout:
                w.process.kill()
                out.extend(self._replace(w, f"no progress for {self.timeout:g} s (hung decoder?); "
                                            "its worker was killed"))
        return out

    def _receive(self, w: _Worker) -> list[tuple]:
        msg = w.conn.recv()
        kind, job_id = msg[0], msg[1]
        w.last_seen = time.monotonic()
        if kind == "fatal":
            raise RuntimeError(f"decode worker could not start: {msg[2]}")
        if kind == "ready":
            w.ready = True
            return []
        job = w.job
        if job is None or job_id != job.job_id:
            raise RuntimeError(f"decode worker sent {kind!r} for job {job_id}, expected {job}")
        if kind == "frames":
            frames = np.empty(msg[3], np.dtype(msg[4]))
            w.conn.recv_bytes_into(frames.reshape(-1))  # a flat view: its len() is the byte count
            return [("frames", job, msg[2], frames)]
        if kind in ("done", "error"):
            w.job = None
            return [("done", job)] if kind == "done" else [("failed", job, msg[2])]
        return [(kind, job, *msg[2:])]

    def _replace(self, w: _Worker, reason: str | None) -> list[tuple]:
        """Collect what a dead worker managed to send, fail its job, start a new worker."""
        out: list[tuple] = []
        try:
            while w.job is not None and w.conn.poll(0):
                out.extend(self._receive(w))
        except (EOFError, OSError):
            pass
        w.process.join(timeout=5)
        if not w.ready:
            # Not a bad video: the worker cannot even start (e.g. the main module cannot be
            # re-imported by the spawn / forkserver start method), so every video would "fail".
            raise RuntimeError(f"a decode worker died while starting ({describe_exit(w.process.exitcode)}); "
                               "run from a script or `python -m`, not an interactive session")
        if w.job is not None:
            out.append(("failed", w.job, reason or f"decoder process died ({describe_exit(w.process.exitcode)}) "
                                                   "while decoding this video"))
        w.conn.close()
        self.workers[self.workers.index(w)] = _Worker(self._ctx, self._args)
        self.num_restarts += 1
        return out

    def close(self) -> None:
        for w in self.workers:
            try:
                if w.job is None:
                    w.conn.send(None)
                else:
                    w.process.terminate()
            except (OSError, BrokenPipeError):
                pass
        for w in self.workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
