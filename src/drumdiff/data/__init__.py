"""Datasets: import folders of one-shots (and Hydrogen, SoundFont, SFZ kits) into a prepared folder, inspect
it, train on it.

`prepare` turns any pile of audio files into `DIR/<class>/<name>.flac` (24-bit FLAC, model rate, length and
channels), `DIR/manifest.json` (what was done to every accepted file) and `DIR/rejected.json` (why every other
file was left out). It never stops because of one bad file, and a second run re-encodes only what changed.
`PreparedDataset` reads a prepared folder for training; `inspect` describes one.

The modules, lowest first: `manifest` (file names, format, split rule), `regions` (clips inside kit files,
the GM drum map), `hydrogen`, `soundfont`, `sfz` (kit readers), `sources` (finding inputs and their classes),
`duplicates` (near-duplicate fingerprints), `conditioning` (one file: decode -> ... -> normalize -> FLAC),
`preparing` (the prepare run), `dataset` (the training Dataset and its cache), `inspection` (statistics and a
picture).
"""

from drumdiff.data.conditioning import PrepareSettings, audio_fingerprint, condition, process_file
from drumdiff.data.dataset import Augment, PreparedDataset, build_cache
from drumdiff.data.hydrogen import KitSample, read_hydrogen_kit
from drumdiff.data.inspection import class_split_stats, inspect
from drumdiff.data.manifest import MANIFEST, REJECT_REASONS, REJECTED, SPLITS, load_manifest, split_for_group
from drumdiff.data.preparing import STAGING, PrepareReport, output_name, prepare
from drumdiff.data.regions import GM_PERCUSSION, KitFileError, KitRegion, Region, read_region
from drumdiff.data.sfz import read_sfz
from drumdiff.data.soundfont import parse_presets, read_soundfont
from drumdiff.data.sources import (
    DEFAULT_HYDROGEN_MAPPING,
    Source,
    class_for_instrument,
    find_sources,
    load_mapping,
)

__all__ = [
    "DEFAULT_HYDROGEN_MAPPING", "GM_PERCUSSION", "MANIFEST", "REJECTED", "REJECT_REASONS", "SPLITS", "STAGING",
    "Augment", "KitFileError", "KitRegion", "KitSample", "PrepareReport", "PrepareSettings", "PreparedDataset",
    "Region", "Source", "audio_fingerprint", "build_cache", "class_for_instrument", "class_split_stats",
    "condition", "find_sources", "inspect", "load_manifest", "load_mapping", "output_name", "parse_presets",
    "prepare", "process_file", "read_hydrogen_kit", "read_region", "read_sfz", "read_soundfont",
    "split_for_group",
]  # fmt: skip
