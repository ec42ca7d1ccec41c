"""Opening an image file with its cost known before it is decoded.

Pillow's ``Image.open`` reads only the header: the size and the pixel mode. That is enough to know what decoding
will take (width x height x the bytes Pillow stores per pixel of that mode), so an image whose decoded pixels would
exceed :data:`MAX_IMAGE_BYTES` or :data:`MAX_IMAGE_PIXELS` is refused before ``load()``: a 0.3 MB PNG can declare
20,000 x 20,000 16-bit pixels (0.8 GB decoded, several GB through the conversions). Refused images are
:class:`DataError`\\ s naming the file, so datasets and ``embed`` skip them with the reason, like any unreadable
image. The file itself is opened by :func:`graphspec.files.open_fd` (a FIFO or device is refused, never read).

    >>> from graphspec.data.images import open_image
    >>> with open_image("face.jpg") as image:          # doctest: +SKIP
    ...     image.load()
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from PIL import Image

from ..files import open_fd
from ..errors import Location
from .errors import DataError, located

# 64 megapixels (2**26): above what cameras write at 8 bits (45 MP full frame; an 8K video frame is 33 MP). It bounds
# the 8-bit RGB copy every image becomes (to_rgb: 4 bytes a pixel as Pillow stores it, 256 MiB at most). Pillow is
# told the same: it warns above it and refuses above twice it, at open, before our own check can name the size.
MAX_IMAGE_PIXELS = 1 << 26
# 192 MiB of decoded pixels: a 48 MP photo of 4-byte pixels (RGB(A), 32-bit integer or float gray), a 64 MP 16-bit
# or 8-bit gray one. With the RGB copy above, the largest image accepted peaks under half a gigabyte.
MAX_IMAGE_BYTES = 192 << 20
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # deliberately ours, not Pillow's default of 89 MP


class ImageRefused(DataError):
    """An image file that is not opened or decoded: not a regular file, or too large to decode."""


# Bytes Pillow stores per pixel in each mode (multi-band 8-bit modes take 4); any other mode counts as 8.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4,
                    "LA": 4, "La": 4, "PA": 4, "RGB": 4, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "YCbCr": 4,
                    "LAB": 4, "HSV": 4}
_WIDEST = 8


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """Bytes Pillow needs to hold an image of ``size`` (width, height) in ``mode``, decoded."""
    width, height = size
    return width * height * _BYTES_PER_PIXEL.get(mode, _WIDEST)


def decoding_refusal(size: tuple[int, int], mode: str) -> str | None:
    """Why an image of this header must not be decoded, or None."""
    width, height = size
    pixels, needed = width * height, decoded_bytes(size, mode)
    if pixels > MAX_IMAGE_PIXELS:
        return (f"image too large to decode: {width}x{height} is {pixels:,} pixels; the limit is "
                f"{MAX_IMAGE_PIXELS:,} (MAX_IMAGE_PIXELS)")
    if needed > MAX_IMAGE_BYTES:
        return (f"image too large to decode: {width}x{height} {mode} pixels need {needed:,} bytes; the limit is "
                f"{MAX_IMAGE_BYTES:,} (MAX_IMAGE_BYTES)")
    return None


@contextmanager
def open_image(path: "str | os.PathLike") -> Iterator[Image.Image]:
    """The image at ``path``, opened (not decoded) and checked: a regular file (else ``image file not found`` or
    ``cannot read image: ...``) whose header asks for no more than the limits (else ``image too large to decode: ...``), both
    :class:`ImageRefused`. Pillow's other errors propagate (callers word them)."""
    try:
        fd = open_fd(path)
    except FileNotFoundError as e:
        raise located("image file not found", path) from e
    except OSError as e:
        raise _refused(f"cannot read image: {e.strerror or e}", path) from e
    with os.fdopen(fd, "rb") as f:
        try:
            image = Image.open(f)
        except Image.UnidentifiedImageError:  # (its own text would show the file object, not the path)
            raise located("unreadable image: not an image Pillow can identify", path) from None
        except Image.DecompressionBombError:  # Pillow's check, above twice MAX_IMAGE_PIXELS: no size to show
            raise _refused(f"image too large to decode: more than {2 * MAX_IMAGE_PIXELS:,} pixels; the limit is "
                           f"{MAX_IMAGE_PIXELS:,} (MAX_IMAGE_PIXELS)", path) from None
        with image:
            refusal = decoding_refusal(image.size, image.mode)
            if refusal:
                raise _refused(refusal, path)
            yield image


def _refused(message: str, path) -> ImageRefused:
    return ImageRefused(message, location=Location(str(path)))
