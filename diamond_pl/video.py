"""The one video writer: frames side by side under a text header, as an animated GIF (Pillow, always there), an MP4
(only if `imageio-ffmpeg` is installed), a PNG strip, or a GIF in TensorBoard (`log_gif`). Used by the dream and play
tools and by the evaluation's imagined-vs-real GIF.

Frames come in as uint8 (3, H, W) numpy arrays, the project's frame format, or float [-1, 1] tensors, and are upscaled
with nearest neighbour so that single Atari pixels stay sharp.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from diamond_pl.atomic import atomic_write_bytes
from diamond_pl.frames import float_to_uint8

SEPARATOR = 4  # px of dark gap between panels
LINE_HEIGHT = 12  # px per header text line (Pillow's default bitmap font is 11 px high)
BACKGROUND = (16, 16, 16)
TEXT = (235, 235, 235)


class VideoFormatError(ValueError):
    """An output path this module cannot write (the message says what would work)."""


def to_uint8(frame) -> np.ndarray:
    """A float [-1, 1] torch frame or a uint8 array -> uint8 numpy (3, H, W)."""
    if isinstance(frame, torch.Tensor):
        frame = float_to_uint8(frame.detach().cpu()) if frame.is_floating_point() else frame.cpu()
        frame = frame.numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3:
        raise TypeError(f"expected a uint8 (3, H, W) frame, got {frame.dtype} {frame.shape}")
    return frame


def upscale(frame, scale: int) -> Image.Image:
    """uint8 (3, H, W) -> RGB image scaled by an integer factor (nearest neighbour)."""
    im = Image.fromarray(np.ascontiguousarray(to_uint8(frame).transpose(1, 2, 0)))
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def header_height(num_lines: int) -> int:
    return num_lines * LINE_HEIGHT + 4 if num_lines else 0


def compose(panels: Sequence, captions: Sequence[Sequence[str]] = (), scale: int = 4) -> Image.Image:
    """Frames side by side, each under its caption lines (same number of lines for every panel).

    Width = k * W * scale + (k - 1) * SEPARATOR for k panels; height = header + H * scale."""
    images = [upscale(p, scale) for p in panels]
    lines = max((len(c) for c in captions), default=0)
    top = header_height(lines)
    w, h = images[0].size
    canvas = Image.new("RGB", (len(images) * w + (len(images) - 1) * SEPARATOR, top + h), BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i, im in enumerate(images):
        x = i * (w + SEPARATOR)
        canvas.paste(im, (x, top))
        for j, text in enumerate(captions[i] if i < len(captions) else ()):
            draw.text((x + 3, 2 + j * LINE_HEIGHT), text, fill=TEXT, font=font)
    return canvas


def gif_bytes(images: Sequence[Image.Image], fps: float) -> bytes:
    buf = io.BytesIO()
    duration = max(20, round(1000 / fps))  # browsers clamp shorter GIF delays anyway
    images[0].save(buf, format="GIF", save_all=True, append_images=list(images[1:]), duration=duration, loop=0)
    return buf.getvalue()


def save_animation(images: Sequence[Image.Image], path: str | os.PathLike, fps: float = 10.0) -> Path:
    """Write `images` as an animated .gif, or as .mp4 when imageio-ffmpeg is installed."""
    path = Path(path)
    if not images:
        raise ValueError("no frames to save")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        atomic_write_bytes(path, gif_bytes(images, fps))
    elif suffix == ".mp4":
        _save_mp4(images, path, fps)
    else:
        raise VideoFormatError(f"{path}: unknown video format {suffix!r}; use a .gif (always works) or .mp4 "
                        f"(needs `pip install imageio-ffmpeg`)")
    return path


def check_mp4_support(path: str | os.PathLike):
    """The imageio_ffmpeg module, or a VideoFormatError saying how to get it."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoFormatError(f"{path}: writing .mp4 needs imageio-ffmpeg (`pip install imageio-ffmpeg`); "
                        f"or save a .gif, which always works") from None
    return imageio_ffmpeg


def _save_mp4(images: Sequence[Image.Image], path: Path, fps: float) -> None:
    imageio_ffmpeg = check_mp4_support(path)
    # H.264 in yuv420p needs even sides: pad with the background colour
    w, h = images[0].size
    W, H = w + w % 2, h + h % 2
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    writer = imageio_ffmpeg.write_frames(str(tmp), (W, H), fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                         macro_block_size=1, output_params=["-pix_fmt", "yuv420p"])
    try:
        writer.send(None)
        for im in images:
            frame = Image.new("RGB", (W, H), BACKGROUND)
            frame.paste(im, (0, 0))
            writer.send(np.ascontiguousarray(np.asarray(frame)).tobytes())
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_strip(frames: Sequence, path: str | os.PathLike, labels: Sequence[str] = (), scale: int = 4) -> Path:
    """Frames in one row (e.g. a denoising trajectory) as a PNG, each under its label."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VideoFormatError(f"{path}: the strip is written as PNG; give a .png path")
    image = compose(frames, [[label] for label in labels], scale)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def log_gif(logger, tag: str, images: Sequence[Image.Image], step: int, fps: float = 10.0) -> bool:
    """Write `images` as an animated GIF to a Lightning TensorBoardLogger. Returns False (nothing written) for any
    other logger, or a closed one.

    Public API only, as far as TensorBoard and torch offer it: `SummaryWriter.add_video` would encode the GIF itself,
    but needs moviepy < 2 (torch imports `moviepy.editor`, which moviepy 2 removed), and `add_image` writes PNG
    stills only. So the GIF is encoded here (`gif_bytes`) and handed over as an image summary (TensorBoard's event
    protocol buffer, `tensorboard.compat.proto.summary_pb2`, the format the image dashboard reads) through the
    writer's public `file_writer` (a `torch.utils.tensorboard.writer.FileWriter`) and its documented `add_summary`,
    which is what every `SummaryWriter.add_*` method ends in."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    file_writer = getattr(getattr(logger, "experiment", None), "file_writer", None)
    if file_writer is None or not hasattr(file_writer, "add_summary"):
        return False  # not TensorBoard (e.g. a dummy experiment on ranks > 0), or closed
    width, height = images[0].size
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif_bytes(images, fps))
    file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
    file_writer.flush()
    return True
