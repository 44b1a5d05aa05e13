"""Datasets: import folders of one-shots (and Hydrogen kits) into a prepared folder, inspect it, train on it.

`prepare` turns any pile of audio files into `DIR/<class>/<name>.flac` (24-bit FLAC, model rate, length and
channels), `DIR/manifest.json` (what was done to every accepted file) and `DIR/rejected.json` (why every other
file was left out). It never stops because of one bad file, and a second run re-encodes only what changed.
`PreparedDataset` reads a prepared folder for training; `inspect` describes one.

The modules, lowest first: `manifest` (file names, format, split rule), `hydrogen` (kit files), `sources`
(finding inputs and their classes), `conditioning` (one file: decode -> ... -> normalize -> FLAC), `preparing`
(the prepare run), `dataset` (the training Dataset and its cache), `inspection` (statistics and a picture).
"""

from drumdiff.data.conditioning import PrepareSettings, audio_fingerprint, condition, process_file
from drumdiff.data.dataset import Augment, PreparedDataset, build_cache
from drumdiff.data.hydrogen import KitSample, read_hydrogen_kit
from drumdiff.data.inspection import class_split_stats, inspect
from drumdiff.data.manifest import MANIFEST, REJECT_REASONS, REJECTED, load_manifest, split_for_group
from drumdiff.data.preparing import STAGING, PrepareReport, output_name, prepare
from drumdiff.data.sources import (
    DEFAULT_HYDROGEN_MAPPING,
    Source,
    class_for_instrument,
    find_sources,
    load_mapping,
)

__all__ = [
    "DEFAULT_HYDROGEN_MAPPING", "MANIFEST", "REJECTED", "REJECT_REASONS", "STAGING", "Augment", "KitSample",
    "PrepareReport", "PrepareSettings", "PreparedDataset", "Source", "audio_fingerprint", "build_cache",
    "class_for_instrument", "class_split_stats", "condition", "find_sources", "inspect", "load_manifest",
    "load_mapping", "output_name", "prepare", "process_file", "read_hydrogen_kit", "split_for_group",
]  # fmt: skip
