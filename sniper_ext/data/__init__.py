"""Every input of the library comes through here: COCO-format annotations, proposals and results
read and checked (:mod:`.coco`, one row checker for all of them), the dataset index that keeps
checked annotations as memory-mapped arrays (:mod:`.index`), proposals in a binary format
(:mod:`.proposals`), the datasets of training and inference opened in one place (:mod:`.catalog`:
a COCO file, the synthetic set, a folder of images), image files read with clear errors
(:mod:`.images`), the synthetic datasets
(:mod:`.synthetic` rendered with images, :mod:`.synthetic_coco` annotations only), and the batches
the models eat: chips of a :class:`~sniper_ext.chips.ChipDB` (:mod:`.chip_dataset`, with the
deterministic distributed chip stream of :mod:`.sampler`) and whole images at an inference
resolution (:mod:`.image_batches`).

    ds = open_dataset(cfg.data, "run/data")            # or open_coco("train.json", "images/")
    db = plan_dataset(ds.records, config=cfg.chips)
    dataset = ChipDataset(db, ds.image_root, ds.category_ids)
    stream = ChipStream(db, batch_per_rank=8, seed=0, rank=rank, world_size=world)
    for batch in make_chip_loader(dataset, stream, workers=2): ...
"""

from .catalog import IMAGE_EXTENSIONS, Dataset, DatasetInfo, open_coco, open_dataset, open_images
from .chip_dataset import ChipDataset, collate_chips, pad_colour
from .coco import RowChecker, categories_of, load_coco, load_proposals, read_annotations_json, read_json
from .image_batches import ResizedCrops, ResizedImages, collate_images, crop_loader, crop_size, image_loader
from .images import check_images, image_header, image_path, open_image, read_image
from .index import cache_root, open_index
from .proposals import ProposalSet, read_proposals, read_proposals_npz, write_proposals_npz
from .sampler import ChipLoader, ChipStream, group_by_shape, make_chip_loader, stream_keys
from .synthetic import CLASS_SHAPES, make_synthetic_dataset
from .synthetic_coco import synthetic_coco

__all__ = [
    "IMAGE_EXTENSIONS",
    "CLASS_SHAPES",
    "ChipDataset",
    "ChipLoader",
    "ChipStream",
    "ProposalSet",
    "Dataset",
    "DatasetInfo",
    "ResizedImages",
    "RowChecker",
    "cache_root",
    "categories_of",
    "check_images",
    "collate_chips",
    "collate_images",
    "group_by_shape",
    "image_header",
    "image_loader",
    "crop_loader",
    "crop_size",
    "ResizedCrops",
    "image_path",
    "load_coco",
    "load_proposals",
    "make_chip_loader",
    "make_synthetic_dataset",
    "open_coco",
    "open_dataset",
    "open_image",
    "open_images",
    "open_index",
    "pad_colour",
    "read_annotations_json",
    "read_image",
    "read_json",
    "read_proposals",
    "read_proposals_npz",
    "stream_keys",
    "synthetic_coco",
    "write_proposals_npz",
]
