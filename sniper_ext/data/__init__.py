"""The data side of SNIPER training: a rendered demo dataset, image reading with clear errors, the
chip dataset over a :class:`~sniper_ext.chips.ChipDB`, and a deterministic distributed chip stream.

    json_path = make_synthetic_dataset("data/synthetic", num_images=64)
    records = check_images(load_coco(json_path), "data/synthetic/images")
    db = plan_dataset(records, config=preset("tiny").chips)
    dataset = ChipDataset(db, "data/synthetic/images", category_ids=[1, 2, 3])
    stream = ChipStream(db, batch_per_rank=8, seed=0, rank=rank, world_size=world)
    for batch in make_chip_loader(dataset, stream, workers=2): ...

Modules: :mod:`.synthetic` (the dataset), :mod:`.images` (reading and checking image files),
:mod:`.chip_dataset` (ChipDataset, collate_chips), :mod:`.sampler` (ChipStream, the loader).
"""

from .chip_dataset import ChipDataset, collate_chips, pad_colour
from .images import check_images, image_header, open_image, read_image
from .sampler import ChipLoader, ChipStream, make_chip_loader, stream_keys
from .synthetic import CLASS_SHAPES, make_synthetic_dataset

__all__ = [
    "make_synthetic_dataset",
    "CLASS_SHAPES",
    "check_images",
    "image_header",
    "open_image",
    "read_image",
    "ChipDataset",
    "collate_chips",
    "pad_colour",
    "ChipStream",
    "ChipLoader",
    "make_chip_loader",
    "stream_keys",
]
