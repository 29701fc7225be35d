"""The planner's input: one record per image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageRecord"]


@dataclass
class ImageRecord:
    """One image: size, GT boxes (xyxy, original pixels), labels, crowd flags, optional proposals."""

    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # [G, 4] float64
    labels: np.ndarray  # [G] int64
    crowd: np.ndarray | None = None  # [G] bool
    proposals: np.ndarray | None = None  # [P, 4] float64 or None
    file_name: str = ""

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.crowd = np.zeros(len(self.boxes), bool) if self.crowd is None else np.asarray(self.crowd, bool)
        if self.proposals is not None:
            self.proposals = np.asarray(self.proposals, dtype=np.float64).reshape(-1, 4)
        if len(self.labels) != len(self.boxes) or len(self.crowd) != len(self.boxes):
            raise ValueError(f"image {self.image_id}: boxes, labels and crowd flags differ in length")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image {self.image_id}: width and height must be positive")
