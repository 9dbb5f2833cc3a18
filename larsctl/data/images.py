"""Image checks and re-encoding with Pillow, as TensorFlow's build_imagenet_data.py does.

ImageNet's train set has 22 CMYK JPEGs and one PNG named .JPEG (TensorFlow's script
lists them by name); some images are grayscale. DALI's decoder and most pipelines want
RGB JPEG, so anything that is not an RGB JPEG (CMYK, grayscale, palette, PNG, ...) is
decoded and re-encoded as an RGB JPEG; RGB JPEGs are stored byte for byte. We detect
the awkward files by content, not by a list of names. Every image is fully decoded
once: a file that does not decode (truncated, not an image) is reported and left out.
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

JPEG_QUALITY = 95  # Pillow's advice: above 95 buys size, not quality

# What Pillow raises for a bad file: truncated (OSError), not an image
# (UnidentifiedImageError, an OSError), broken headers (SyntaxError, ValueError,
# struct errors are ValueErrors) or too many pixels to be an image (DecompressionBombError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class Undecodable(Exception):
    """The bytes are not a decodable image; the message says why."""


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EXIF and large-image warnings: the image still decodes
        img = Image.open(io.BytesIO(data))
        img.load()
    return img


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):  # its message names our in-memory buffer
        return "not an image format Pillow reads"
    return str(exc) or type(exc).__name__


def decode_problem(data: bytes) -> str | None:
    """None when Pillow decodes the whole image, else the reason it does not."""
    try:
        _open(data).close()
    except _DECODE_ERRORS as exc:
        return _reason(exc)
    return None


def as_rgb_jpeg(data: bytes) -> tuple[bytes, int, int, bool]:
    """(jpeg, height, width, reencoded): `data` itself if it is an RGB JPEG, else the image
    decoded, converted to RGB and encoded as JPEG. Raises Undecodable."""
    try:
        img = _open(data)
        with img:
            if img.format == "JPEG" and img.mode == "RGB":
                return data, img.height, img.width, False
            rgb = img.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise Undecodable(_reason(exc)) from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), rgb.height, rgb.width, True
