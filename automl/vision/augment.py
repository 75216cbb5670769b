"""Image augmentation on batches of tensors (kornia: torch-only, runs where the batch is).

One searched strength scales every transform (random resized crop, rotation, colour
jitter, Gaussian noise); flips are a separate choice, since a vertical flip turns many
classes (digits, shoes) into other things.
"""

from __future__ import annotations

from torch import nn

__all__ = ["FLIPS", "build_augment"]

FLIPS = ("none", "h", "v", "hv")
MAX_ROTATION_DEG = 30.0
MAX_CROP_LOSS = 0.5  # the random resized crop keeps at least (1 - 0.5 * strength) of the area
MAX_JITTER = 0.4
MAX_NOISE_STD = 0.08  # on [0, 1] pixels


def build_augment(strength: float, flip: str, image_size: int) -> nn.Module | None:
    """The training-time augmentation for [0, 1] images (B, 3, size, size), or None for
    none. Applied before normalisation; never at evaluation."""
    import kornia.augmentation as K

    if flip not in FLIPS:
        raise ValueError(f"flip {flip!r} is unknown: expected one of {', '.join(FLIPS)}")
    s = min(1.0, max(0.0, float(strength)))
    ops: list[nn.Module] = []
    if "h" in flip:
        ops.append(K.RandomHorizontalFlip())
    if "v" in flip:
        ops.append(K.RandomVerticalFlip())
    if s > 0:
        ops.append(
            K.RandomResizedCrop(
                (image_size, image_size),
                scale=(1.0 - MAX_CROP_LOSS * s, 1.0),
                ratio=(1.0 - 0.25 * s, 1.0 / (1.0 - 0.25 * s)),
            )
        )
        ops.append(K.RandomRotation(degrees=MAX_ROTATION_DEG * s, p=0.5))
        j = MAX_JITTER * s
        ops.append(K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 8, p=0.8))
        ops.append(K.RandomGaussianNoise(std=MAX_NOISE_STD * s, p=0.5))
    if not ops:
        return None
    return nn.Sequential(*ops)
