"""Face data: LFW and LFW-layout folders, the official protocol files, the synthetic faces and LFW's download.

    >>> from graphspec.faces.data import lfw_dataset, synthetic_faces, locate_lfw
    >>> root = locate_lfw() or synthetic_faces(identities=10, images=20)      # doctest: +SKIP
    >>> ds = lfw_dataset(root, dl4j=True)              # doctest: +SKIP  the tutorial's LFWDataSetIterator

See docs/data.md.
"""
from .dataset import LFWDataset, lfw_dataset, load_images
from .download import LFW_ARCHIVES, download, download_lfw, safe_extract, verify_checksum
from .folder import FolderScan, scan_folder, sniff
from .locate import lfw_candidates, locate_lfw
from .protocol import Pair, Person, image_path, read_pairs, read_people
from .report import DatasetReport, dataset_report
from .select import balanced_select, split_indices
from .synthetic import synthetic_faces

__all__ = ["LFWDataset", "lfw_dataset", "load_images", "read_pairs", "read_people", "Pair", "Person", "image_path",
           "scan_folder", "sniff", "FolderScan", "synthetic_faces", "download", "download_lfw", "safe_extract",
           "verify_checksum", "LFW_ARCHIVES", "DatasetReport", "dataset_report", "balanced_select", "split_indices",
           "locate_lfw", "lfw_candidates"]
