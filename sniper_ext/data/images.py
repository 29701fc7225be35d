"""Reading images: every image as users have it (8- or 16-bit, grayscale, palette, RGBA, CMYK,
EXIF-rotated) read into the same 8-bit RGB through one reader, :func:`open_image`, used by
planning pictures, training, inference and ``sniper detect``; and a fast pre-pass over a dataset's
image files.

16-bit images are scaled to 8 bits (value / 257, rounded), not clipped; an alpha channel is
dropped; an EXIF orientation is applied, so sizes are those of the image as shown (the header
check reports them alike).

Every failure is a :class:`~sniper_ext.errors.DataError` naming the file and the image id
(``images/000017.jpg: image 17: cannot decode the image (broken data stream ...)``), never a raw
PIL traceback. :func:`check_images` reads only each file's header (and its last bytes, which
catches truncated PNG and JPEG files), so it runs over COCO's 118k images in seconds; a file
that breaks later, at decode time, still raises a DataError naming it.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..chips.records import ImageTable
from ..errors import DataError, DataIssues

__all__ = ["image_path", "open_image", "read_image", "image_header", "check_images", "to_rgb8"]

# Kinds (see DataIssues): what skipping the problem means.
MISSING = "missing image file: image skipped"
UNREADABLE = "unreadable or corrupt image file: image skipped"
WRONG_SIZE = "image size differs from the annotations: image skipped"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
#: the end marker must lie within this many bytes of the end (tolerates a short trailer)
_TAIL = 4096

# Errors PIL raises for files it cannot read (SyntaxError for some malformed headers).
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, IndexError, TypeError)


def image_path(image_root, file_name: str) -> str:
    """``image_root/file_name`` (``file_name`` alone when there is no root)."""
    return os.path.join(os.fspath(image_root), file_name) if image_root is not None else file_name


def _where(image_id) -> str | None:
    return None if image_id is None else f"image {image_id}"


def _reason(e: BaseException) -> str:
    if isinstance(e, Image.UnidentifiedImageError):  # its text names a BytesIO, not the file
        return "not an image file, or one in a format PIL cannot read"
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


_ORIENTATION = 0x0112  # EXIF tag; values 5..8 swap width and height


def to_rgb8(im: Image.Image) -> Image.Image:
    """An image of any PIL mode as 8-bit RGB, upright (EXIF orientation applied). 16-bit and
    32-bit integer modes are scaled from 0..65535 to 0..255; float images from 0..1 (or clipped
    to 0..255 when their values exceed 1)."""
    try:
        im = ImageOps.exif_transpose(im) or im
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        pass  # an unreadable EXIF block: the pixels as stored
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.float64)
        return Image.fromarray(np.clip(np.floor(a / 257.0 + 0.5), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def open_image(path, image_id=None, size: tuple | None = None) -> Image.Image:
    """The decoded image at ``path`` as a loaded RGB PIL image. A missing file, a file PIL cannot
    decode (corrupt, truncated, not an image) or, when ``size`` (W, H) is given, an image of
    another size raises DataError naming ``path`` and ``image_id``."""
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is not an error for a detector's large images.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Our own file object: PIL leaves it alone, and the loaded pixels outlive it.
            with open(path, "rb") as f:
                im = Image.open(io.BytesIO(f.read()))
                im.load()
            rgb = to_rgb8(im)
    except FileNotFoundError:
        raise DataError(path, _where(image_id), "image file is missing", MISSING) from None
    except IsADirectoryError:
        raise DataError(path, _where(image_id), "is a directory, not an image file", UNREADABLE) from None
    except PermissionError as e:
        raise DataError(path, _where(image_id), f"cannot open the image file ({_reason(e)})", UNREADABLE) from None
    except _PIL_ERRORS as e:
        raise DataError(path, _where(image_id), f"cannot decode the image ({_reason(e)})", UNREADABLE) from None
    if size is not None and tuple(rgb.size) != (int(size[0]), int(size[1])):
        raise DataError(
            path,
            _where(image_id),
            f"image is {rgb.size[0]}x{rgb.size[1]} but the annotations say {int(size[0])}x{int(size[1])}",
            WRONG_SIZE,
        )
    return rgb


def read_image(path, image_id=None, size: tuple | None = None) -> np.ndarray:
    """The image at ``path`` as RGB uint8 [H, W, 3]; errors as :func:`open_image`."""
    return np.asarray(open_image(path, image_id, size))


def image_header(path, image_id=None) -> tuple:
    """(width, height) from the file's header, without decoding the pixels. Raises DataError for
    a missing file, a file that is not an image, or a PNG/JPEG file without its end marker
    (truncated)."""
    path = os.fspath(path)
    where = _where(image_id)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(0, os.SEEK_END)
            n = f.tell()
            f.seek(max(0, n - _TAIL))
            tail = f.read()
            f.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as im:
                    size = im.size
                    try:
                        if im.getexif().get(_ORIENTATION) in (5, 6, 7, 8):  # shown rotated by 90 degrees
                            size = (size[1], size[0])
                    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
                        pass
    except FileNotFoundError:
        raise DataError(path, where, "image file is missing", MISSING) from None
    except IsADirectoryError:
        raise DataError(path, where, "is a directory, not an image file", UNREADABLE) from None
    except PermissionError as e:
        raise DataError(path, where, f"cannot open the image file ({_reason(e)})", UNREADABLE) from None
    except _PIL_ERRORS as e:
        what = "file is empty" if n == 0 else f"not a readable image ({_reason(e)})"
        raise DataError(path, where, what, UNREADABLE) from None
    if head.startswith(_PNG_MAGIC) and _PNG_END not in tail:
        raise DataError(path, where, f"PNG file is truncated (no IEND chunk at its end; {n} bytes)", UNREADABLE)
    if head.startswith(_JPEG_MAGIC) and _JPEG_END not in tail:
        raise DataError(path, where, f"JPEG file is truncated (no end-of-image marker; {n} bytes)", UNREADABLE)
    return size


def check_images(records, image_root, issues: DataIssues | None = None, *, decode: bool = False):
    """Checks the image file of every record (an ImageTable from :func:`load_coco`, or
    ImageRecords): it exists, is a readable image (header and end marker; every pixel too with
    ``decode=True``, slow), and its size is the annotation's width x height. Raises DataError
    naming the file and the image id at the first problem; with ``issues=DataIssues(skip=True)``
    such images are dropped and counted in ``issues``. Returns the records that passed, in order
    (``records`` itself when all did)."""
    issues = issues if issues is not None else DataIssues()
    kept = []
    for r in records:
        path = image_path(image_root, r.file_name)
        try:
            if not r.file_name:
                raise DataError("<annotations>", _where(r.image_id), "image has no file_name", MISSING)
            if decode:
                open_image(path, r.image_id, (r.width, r.height))
            else:
                w, h = image_header(path, r.image_id)
                if (w, h) != (int(r.width), int(r.height)):
                    raise DataError(
                        path,
                        _where(r.image_id),
                        f"image is {w}x{h} but the annotations say {int(r.width)}x{int(r.height)}",
                        WRONG_SIZE,
                    )
        except DataError as e:
            issues.report(e)
            continue
        kept.append(r)
    if len(kept) == len(records):
        return records
    if isinstance(records, ImageTable):
        ids = {r.image_id for r in kept}
        return records.take([i for i, iid in enumerate(records.image_ids.tolist()) if iid in ids])
    return kept
