"""Face data for graphspec: LFW and LFW-layout folders, protocol files, preprocessing, cache and loaders.

    >>> from graphspec.data import lfw_dataset, make_loader, synthetic_faces, locate_lfw
    >>> root = locate_lfw() or synthetic_faces(identities=10, images=20)      # doctest: +SKIP
    >>> ds = lfw_dataset(root, dl4j=True)              # doctest: +SKIP  the tutorial's LFWDataSetIterator
    >>> for x, y in make_loader(ds, 48): ...           # doctest: +SKIP  float32 [48, 3, 96, 96] BGR 0..255

See docs/data.md.
"""
from ._paths import cache_dir, lfw_candidates, locate_lfw
from .augment import Augmentation
from .cache import ImageCache, cache_key, open_or_build
from .dataset import LFWDataset, lfw_dataset, load_images
from .download import LFW_ARCHIVES, download, download_lfw, safe_extract, verify_checksum
from .errors import DataError, DataWarning
from .folder import FolderScan, Skipped, scan_folder, sniff
from .loader import make_loader
from .preprocessing import Preprocessing
from .protocol import Pair, Person, image_path, read_pairs, read_people
from .report import DatasetReport, dataset_report
from .select import balanced_select, split_indices
from .synthetic import synthetic_faces

__all__ = [
    "Preprocessing", "Augmentation", "LFWDataset", "lfw_dataset", "load_images", "make_loader",
    "read_pairs", "read_people", "Pair", "Person", "image_path",
    "scan_folder", "sniff", "FolderScan", "Skipped", "ImageCache", "open_or_build", "cache_key",
    "synthetic_faces", "download", "download_lfw", "safe_extract", "verify_checksum", "LFW_ARCHIVES",
    "DatasetReport", "dataset_report", "balanced_select", "split_indices",
    "cache_dir", "locate_lfw", "lfw_candidates", "DataError", "DataWarning",
]
