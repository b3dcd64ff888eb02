"""Image decoding and preprocessing to the models' input convention.

Model inputs are float32, channels-last, scaled to [-1, 1]
(``x / 127.5 - 1``, SigLIP's mean 0.5 / std 0.5 normalisation). Photographs
of any size are resized so that their shorter side equals the model's
resolution (bicubic) and then center-cropped to a square.
"""

import io

import numpy as np
import PIL.Image
from beartype import beartype as typechecker
from jaxtyping import Float32, UInt8, jaxtyped


class BadImageError(ValueError):
    """Raised when image bytes or files cannot be decoded."""


def decode_image(data: bytes | None, path: str | None = None) -> PIL.Image.Image:
    """Decode encoded image bytes, or open the file at `path` when no bytes.

    **Arguments:**

    - `data`: encoded bytes (PNG, JPEG, ...), or None to read `path`.
    - `path`: file path used when `data` is None, and in error messages.

    **Returns:** the fully loaded PIL image. Raises `BadImageError`.
    """
    try:
        source = io.BytesIO(data) if data is not None else path
        if source is None:
            raise BadImageError("an example has neither image bytes nor an image path")
        with PIL.Image.open(source) as image:
            image.load()
            return image.copy()
    except BadImageError:
        raise
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise BadImageError(f"cannot decode image {path or '<bytes>'}: {err}") from err


def resize_center_crop(image: PIL.Image.Image, size: int, channels: int) -> np.ndarray:
    """Shorter side resized to `size` (bicubic), then the central square.

    **Arguments:**

    - `image`: any PIL image; `size`: output side; `channels`: 1 (grey) or 3 (RGB).

    **Returns:** uint8 array (size, size, channels).
    """
    image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), PIL.Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    out = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return out.reshape(size, size, channels)


@jaxtyped(typechecker=typechecker)
def to_model_images(
    images: UInt8[np.ndarray, "n H W"] | UInt8[np.ndarray, "n H W c"], channels: int
) -> Float32[np.ndarray, "n H W C"]:
    """uint8 images -> float32 channels-last in [-1, 1], grey repeated to `channels`.

    **Arguments:**

    - `images`: (n, H, W) grey or (n, H, W, c) with c equal to `channels` or 1.
    - `channels`: channels the model expects.

    **Returns:** float32 (n, H, W, channels).
    """
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] not in (1, channels):
        raise ValueError(f"images have {images.shape[-1]} channels; the model expects {channels}")
    # (n, H, W, c): uint8 -> f32 is exact, so these are the two roundings of x / 127.5 - 1
    scaled = np.divide(images, np.float32(127.5), dtype=np.float32)
    scaled -= np.float32(1.0)
    if scaled.shape[-1] != channels:
        scaled = np.repeat(scaled, channels, axis=-1)
    return scaled
