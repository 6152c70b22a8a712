#!/usr/bin/env bash
# Noto Emoji as a folder of pictures gantry trains on (docs/real-images.md, "Noto Emoji").
#
#   bench/fetch_emoji.sh [DEST]          DEST defaults to ./data/emoji (gitignored)
#
# Gets the npm package emoji-datasource-google (Google's Noto Color Emoji as 64x64 PNGs, with each
# emoji's name and category in emoji.json; Apache-2.0) with `npm pack` (npm and its registry must be
# reachable; nothing of it is committed), and lays it out as
#
#   DEST/<category>/<short name>[-<skin tone>].png     e.g. smileys-and-emotion/grinning.png
#   DEST/captions.csv                                  file,caption   (the emoji's name, lower case)
#   DEST/LICENSE                                       the package's licence
#
# so `--set labels=folder` conditions a dcgan on the category and text2img reads the names as captions.
# Skin-tone variants are pictures of their own ("waving hand sign, medium skin tone"). Prints the count.
set -euo pipefail

dest="${1:-./data/emoji}"
version="${EMOJI_DATASOURCE_VERSION:-16.0.0}"  # the version the counts in docs/real-images.md are from
command -v npm >/dev/null || { echo "fetch_emoji.sh: needs npm (Node.js)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "fetch_emoji.sh: needs python3" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "emoji-datasource-google@${version}" >/dev/null)
tar -xzf "$work"/emoji-datasource-google-*.tgz -C "$work"   # unpacks to $work/package

python3 - "$work/package" "$dest" <<'PY'
import csv, json, re, shutil, sys
from pathlib import Path

package, dest = Path(sys.argv[1]), Path(sys.argv[2])
images = package / "img" / "google" / "64"
if not images.is_dir():
    sys.exit(f"fetch_emoji.sh: {images} is missing: the package's layout changed")
TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}

def slug(text):
    text = text.lower().replace("&", "and").replace("+", "plus-")
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"^-", "minus-", text)).strip("-")

if dest.exists():
    shutil.rmtree(dest)  # a fresh layout each time: no pictures left from another version
dest.mkdir(parents=True)
rows, missing = [], 0
for emoji in json.loads((package / "emoji.json").read_text()):
    category, name = slug(emoji["category"]), (emoji.get("name") or emoji["short_name"]).lower()
    pictures = [(emoji["short_name"], emoji["image"], name, emoji.get("has_img_google"))]
    for tone, variant in (emoji.get("skin_variations") or {}).items():
        words = [TONES[t] for t in tone.split("-")]
        pictures.append((
            f"{emoji['short_name']}-{'-and-'.join(words)}",
            variant["image"],
            f"{name}, {' and '.join(words)} skin tone",
            variant.get("has_img_google"),
        ))
    for stem, image, caption, has in pictures:
        if not has or not (images / image).is_file():
            missing += has is True
            continue
        target = dest / category / f"{slug(stem)}.png"
        if target.exists():  # "+1" and "-1" make the same slug: the code points tell them apart
            target = target.with_name(f"{slug(stem)}-{Path(image).stem}.png")
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(images / image, target)
        rows.append((f"{category}/{target.name}", caption))
with (dest / "captions.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "caption"])
    writer.writerows(sorted(rows))
shutil.copyfile(package / "LICENSE", dest / "LICENSE")
counts = {}
for file, _ in rows:
    counts[file.split("/")[0]] = counts.get(file.split("/")[0], 0) + 1
print(f"{len(rows)} pictures in {len(counts)} categories under {dest}"
      + (f" ({missing} listed in emoji.json but absent from the package)" if missing else ""))
for category, n in sorted(counts.items(), key=lambda kv: -kv[1]):
    print(f"  {category:<22} {n}")
PY
