"""Generated test videos of known length, frame rate and content (h264, yuv420p, via PyAV).

Frame ``k`` carries its own index in its top quarter (left half gray ``5 * (k % 50)``, right
half ``5 * (k // 50)``; lossless by default), so a test can tell exactly which frame a reader
returned, even after resizing and cropping (``frame_index``). The rest of the frame is a
texture of coloured blocks moving 3 pixels per frame, so the encoder has motion to code.

    python -m preprocessing.synthetic_videos --out videos --seconds 12 31 64 --size 320x240
    python -m preprocessing.synthetic_videos --out videos --bad   # plus one file of each bad kind
    # 720p with B-frames, x264's default preset and GOP (what cameras and encoders often produce)
    python -m preprocessing.synthetic_videos --out videos --seconds 60 --size 1280x720 --crf 23 --bframes 3 --preset medium --gop 250
"""
from __future__ import annotations

import argparse
import fractions
import os
import sys
from pathlib import Path

import numpy as np

from util.cli import ArgumentParser, nonneg_int, output_dir, positive_float, positive_int, run_cli

LEVEL = 5          # gray step per index unit (survives yuv420p rounding and resizing)
BASE = 50          # indices per step of the right half: up to 2500 distinct frames
BAD_KINDS = ("empty", "not_a_video", "garbage", "audio_only", "truncated", "truncated_faststart",
             "fails_mid_decode", "too_short")


def _frame(k: int, w: int, h: int, texture: np.ndarray) -> np.ndarray:
    img = np.roll(texture, 3 * k, axis=1).copy()
    band = max(2, h // 4)
    img[:band, : w // 2] = LEVEL * (k % BASE)
    img[:band, w // 2:] = LEVEL * (k // BASE % BASE)
    return img


def frame_index(frame: np.ndarray) -> int:
    """The index written into a frame by ``write_video`` (also after resize / centre crop)."""
    h, w = frame.shape[:2]
    band = frame[: max(1, h // 8)].astype(np.float64)
    left, right = band[:, : w // 4].mean(), band[:, -(w // 4):].mean()
    return int(round(left / LEVEL)) + BASE * int(round(right / LEVEL))


def write_video(path, seconds: float | None = None, fps: float = 25, size=(64, 48), timestamps=None,
                crf: int = 0, faststart: bool = False, gop: int = 12, seed: int = 0, bframes: int = 0,
                preset: str = "ultrafast", open_gop: bool = False) -> np.ndarray:
    """Write an h264 video; returns the frame timestamps (seconds).

    Constant frame rate: ``seconds`` x ``fps`` frames. Variable frame rate: ``timestamps``
    (increasing seconds, first 0), stored with a 1 ms time base. ``gop``: frames between key
    frames (closed GOPs, x264's default; ``open_gop``: key frames followed by B-frames shown
    before them, which reference the GOP before, as x264 ``--open-gop`` and broadcast encoders
    write); ``bframes``: at most this many B-frames in a row (x264
    ``bframes``; 0 = I/P frames only, whatever the preset says); ``preset``: x264's speed preset
    (``ultrafast`` codes without CABAC or deblocking; ``medium`` is x264's default)."""
    import av
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {w}x{h}")
    if timestamps is None:
        timestamps = np.arange(int(round(seconds * fps))) / fps
    timestamps = np.asarray(timestamps, dtype=np.float64)
    # 8x8-pixel blocks of random colour: compresses and decodes like real footage, unlike pixel noise
    blocks = np.random.default_rng(seed).integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    texture = np.ascontiguousarray(blocks.repeat(8, 0).repeat(8, 1)[:h, :w])
    ms = fractions.Fraction(1, 1000)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = stream.codec_context.time_base = ms
        stream.options = {"crf": str(crf), "preset": preset, "g": str(gop), "bf": str(bframes),
                          **({"x264-params": "open-gop=1"} if open_gop else {})}
        for k, t in enumerate(timestamps):
            frame = av.VideoFrame.from_ndarray(_frame(k, w, h, texture), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), ms
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return timestamps


def write_audio_only(path, seconds: float = 2.0, rate: int = 16000) -> None:
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        for i in range(int(seconds * rate / 1024)):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_bad_files(out, size=(64, 48)) -> dict[str, Path]:
    """One file of each kind of bad input; returns ``{kind: path}``.

    ``garbage``: random bytes; ``truncated``: an mp4 cut in half with its index (moov) at the
    end, so it cannot be opened; ``truncated_faststart``: the same cut of a fast-start mp4, whose
    index (first) promises frames the file no longer has; ``fails_mid_decode``: a fast-start mp4
    whose second half (compressed frames) is overwritten with random bytes, so it opens, demuxes
    and decodes up to the damage, then the decoder fails; ``too_short``: a valid 1-s video (zero
    windows under the default partial-window rule)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{kind}.mp4" for kind in BAD_KINDS}
    paths["empty"].write_bytes(b"")
    paths["not_a_video"].write_text("this is a text file with a video extension\n" * 50)
    rng = np.random.default_rng(0)
    paths["garbage"].write_bytes(rng.bytes(20000))
    write_audio_only(paths["audio_only"])
    for kind, faststart in (("truncated", False), ("truncated_faststart", True), ("fails_mid_decode", True)):
        write_video(paths[kind], seconds=12, fps=25, size=size, faststart=faststart)
        data = paths[kind].read_bytes()
        half = len(data) // 2
        # Small damage is concealed by the h264 decoder; a garbage second half never is.
        paths[kind].write_bytes(data[:half] + (rng.bytes(len(data) - half) if kind == "fails_mid_decode" else b""))
    write_video(paths["too_short"], seconds=1, fps=25, size=size)
    return paths


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``."""
    w, _, h = text.partition("x")
    try:
        size = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WxH, e.g. 320x240, got {text!r}") from None
    if min(size) < 2 or size[0] % 2 or size[1] % 2:
        raise argparse.ArgumentTypeError(f"must be even numbers >= 2 (yuv420p), got {text}")
    return size


def get_args_parser():
    p = argparse.ArgumentParser("Generate test videos", add_help=False)
    p.add_argument("--out", required=True, type=output_dir, help="directory to write the videos into")
    p.add_argument("--seconds", type=positive_float, nargs="+", default=[12.0, 31.0, 64.0],
                   help="length of each video (one video per value)")
    p.add_argument("--fps", type=positive_float, default=25.0, help="frame rate")
    p.add_argument("--size", type=parse_size, default=(320, 240), help="frame size WxH (even numbers)")
    p.add_argument("--crf", type=nonneg_int, default=0, help="x264 quality (0 = lossless)")
    p.add_argument("--gop", type=positive_int, default=12, help="frames between key frames")
    p.add_argument("--bframes", type=nonneg_int, default=0, help="at most this many consecutive B-frames (0 = none)")
    p.add_argument("--preset", default="ultrafast", help="x264 speed preset (ultrafast ... veryslow)")
    p.add_argument("--bad", action="store_true", help=f"also write one bad file of each kind: {', '.join(BAD_KINDS)}")
    return p


def main(argv=None):
    parser = ArgumentParser(parents=[get_args_parser()], description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(argv)
    for seconds in args.seconds:
        if round(seconds * args.fps) < 1:
            parser.error(f"--seconds {seconds} at --fps {args.fps} is not one frame long")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, seconds in enumerate(args.seconds):
        write_video(out / f"video{i:03d}.mp4", seconds=seconds, fps=args.fps, size=args.size, crf=args.crf, seed=i,
                    gop=args.gop, bframes=args.bframes, preset=args.preset)
    if args.bad:
        write_bad_files(out / "bad", size=args.size)
    print(f"wrote {len(args.seconds)} videos{' and the bad files' if args.bad else ''} to {os.fspath(out)}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
