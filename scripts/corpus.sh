#!/usr/bin/env bash
# The training corpus from one command: install the four Debian packages it is made of (when missing, as
# root), prepare them into one dataset with each file's licence, and write OUT/corpus_report.json.
#
#   scripts/corpus.sh OUT [more `drumdiff data prepare` options, e.g. --workers 1]
#
# Sources (and nothing else: other free drum sources that Debian ships are kept aside for an independent
# evaluation of the shipped model):
#   hydrogen-data, hydrogen-drumkits   Hydrogen kits (only the kit folders these two packages own)
#   avldrums.lv2-soundfont             Black_Pearl_4_LV2.sf2 and Red_Zeppelin_4_LV2.sf2 (bank 0, program 0)
#   lmms-common                        /usr/share/lmms/samples/drums: held out whole as split "test"
# Kits are split train/val by kit name; lmms-common is the cross-source test set (mixed origins, one-shots
# named like a user's folder, and already the evaluation docs' second held-out test). See docs/data.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: scripts/corpus.sh OUT [drumdiff data prepare options]" >&2
  exit 2
fi
out=$1
shift

packages=(hydrogen-data hydrogen-drumkits avldrums.lv2-soundfont lmms-common)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "corpus: missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 2
  fi
  echo "corpus: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -x .venv/bin/python ]; then
  . .venv/bin/activate
fi
if ! python -c "import drumdiff" 2>/dev/null; then
  python3 -m venv .venv && . .venv/bin/activate
  python -m pip install -q "torch==2.13.0" && python -m pip install -q -e .
fi

# The kit folders and sample files that these packages own (never anything another package put beside them).
mapfile -t kits < <(dpkg -L hydrogen-data hydrogen-drumkits | grep '/drumkit\.xml$' | xargs -d '\n' -n1 dirname | sort -u)
fonts=(/usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2 /usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2)
lmms=/usr/share/lmms/samples/drums

# Licence per source, from /usr/share/doc/<package>/copyright (the kits' own statements stay in the manifest
# as `stated_license` where they differ).
declare -A kit_licence=(
  [GMRockKit]="GPL-2+ (hydrogen-data; The Hydrogen team)"
  [TR808EmulationKit]="GPL-2+ (hydrogen-data; The Hydrogen team)"
  [ElectricEmpireKit]="GPL-2+ (hydrogen-drumkits; Artemiy Pavlov)"
  [HardElectro1]="GPL-2+ (hydrogen-drumkits; Artemiy Pavlov)"
  [VariBreaks]="GPL-2+ (hydrogen-drumkits; Artemiy Pavlov)"
  [Millo-Drums_v.1]="GPL-2 (hydrogen-drumkits; Emiliano Grilli)"
  [Millo_MultiLayered2]="GPL-2 (hydrogen-drumkits; Emiliano Grilli)"
  [Millo_MultiLayered3]="GPL-2 (hydrogen-drumkits; Emiliano Grilli)"
  [ColomboAcousticDrumkit]="GPL-2+ with composition exception (hydrogen-drumkits; Marcos Guglielmetti)"
  ["circAfrique v4"]="CC-BY-SA-3.0 (hydrogen-drumkits; Jim Harney)"
  [BJA_Pacific]="CC-BY-SA-3.0-us (hydrogen-drumkits; Luc Tunguay)"
  ["Gimme A Hand 1.0"]="GPL-2 (hydrogen-drumkits; Glen MacArthur)"
  ["The Black Pearl 1.0"]="GPL-2 (hydrogen-drumkits; Glen MacArthur)"
  [rumpf_kit_z01_h2]="CC-BY-3.0 (hydrogen-drumkits; Emanuel Rumpf)"
  [Audiophob]="CC0 (hydrogen-drumkits; soundcloud.com/audiophobdubstep)"
  [ForzeeStereo]="GPL-2 (hydrogen-drumkits; Vladimir Sadovnikov, Alexander Belokurov)"
)
licences=()
for kit in "${kits[@]}"; do
  name=$(basename "$kit")
  if [ -n "${kit_licence[$name]+x}" ]; then
    licences+=(--license "$kit=${kit_licence[$name]}")
  else
    echo "corpus: no licence known for kit $name; its drumkit.xml statement is kept" >&2
  fi
done
for font in "${fonts[@]}"; do
  licences+=(--license "$font=CC-BY-SA-3.0 (avldrums.lv2-soundfont; Glen MacArthur)")
done
licences+=(--license "$lmms=GPL-2+ (lmms-common; the LMMS developers; see LMMS issue 2752 on its samples)")

started=$(date +%s)
drumdiff data prepare "${kits[@]}" "${fonts[@]}" --test-source "$lmms" --classes kits \
  --soundfont-presets "0:0,128:*" "${licences[@]}" --out "$out" "$@"
seconds=$(($(date +%s) - started))

python - "$out" "$seconds" <<'EOF'
"""Counts per class, source and split; duplicates across kits; size on disk -> OUT/corpus_report.json."""
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

from drumdiff import audio
from drumdiff.data.duplicates import near_duplicates
from drumdiff.files import write_json

out, seconds = Path(sys.argv[1]), int(sys.argv[2])
manifest = json.loads((out / "manifest.json").read_text())
rejected = json.loads((out / "rejected.json").read_text())["rejected"]
items = sorted(manifest["items"], key=lambda it: it["source"])


def source_of(path: str) -> str:
    if ".sf2#" in path:
        return "avldrums.lv2-soundfont"
    return "lmms-common" if path.startswith("drums/") else "hydrogen-data/-drumkits"


def kit_of(path: str) -> str:
    """The kit folder (or SoundFont) a `source` path names: `GMRockKit/Kick.wav` -> GMRockKit."""
    file = path.split("#")[0]
    return Path(file).stem if file.endswith(".sf2") else file.split("/")[0]


table = defaultdict(Counter)
for it in items:
    table[(source_of(it["source"]), it["split"])][it["class"]] += 1
exact = Counter(
    f"{kit_of(r['path'])} = {kit_of(r['duplicate_of'])}" for r in rejected if r["reason"] == "duplicate"
)
near = near_duplicates(
    [it["fingerprint"] for it in items],
    [it["group"] for it in items],
    lambda i: audio.read(out / items[i]["path"])[0],
    sample_rate=manifest["sample_rate"],
)
near_pairs = Counter(f"{kit_of(items[i]['source'])} ~ {kit_of(items[j]['source'])}" for i, (j, _) in near.items())
straddling = sum(1 for i, (j, _) in near.items() if items[i]["split"] != items[j]["split"])
size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and ".cache" not in f.parts)
report = {
    "seconds": seconds,
    "items": len(items),
    "bytes": size,
    "per_source_split_class": {f"{s}/{p}": dict(c) for (s, p), c in sorted(table.items())},
    "per_class_split": {c: dict(Counter(it["split"] for it in items if it["class"] == c))
                        for c in manifest["classes"]},
    "rejected": dict(Counter(r["reason"] for r in rejected)),
    "exact_duplicates_across_kits": dict(exact),
    "near_duplicates_across_kits": dict(near_pairs),
    "near_duplicates_straddling_splits": straddling,
}
write_json(out / "corpus_report.json", report)
print(f"\ncorpus {out}: {len(items)} clips, {size / 1e6:.1f} MB, prepared in {seconds} s")
classes = manifest["classes"]
print("| source | split | " + " | ".join(classes) + " | total |")
print("|---|---|" + "---:|" * (len(classes) + 1))
for (s, p), c in sorted(table.items()):
    print(f"| {s} | {p} | " + " | ".join(str(c.get(k, 0)) for k in classes) + f" | {sum(c.values())} |")
print("rejected:", dict(Counter(r["reason"] for r in rejected)))
print("exact duplicates across kits (removed before splitting):", dict(exact))
print("near-duplicates across kits (kept when on one side of the split):", dict(near_pairs))
print("near-duplicates straddling splits after prepare:", straddling)
EOF
