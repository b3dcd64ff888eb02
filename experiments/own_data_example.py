"""Write a stand-in for a user's own image-caption data, for `docs/own_data.md`.

    python experiments/own_data_example.py --out data/own

From Fashion-MNIST (the Debian package ``dataset-fashion-mnist``) it writes, as a
user would bring them:

- ``clean.parquet``: 4,000 training photographs with a right caption each
  (image, caption, label), to train a reference on;
- ``web.parquet``: 8,000 other training photographs, 40 % of them with the
  caption of another class (image, caption, label, ``mismatched``), to curate;
- ``eval.parquet``: 500 test photographs (image, caption, label) for the tasks;
- ``probe.parquet``: 1,000 more training photographs to fit a linear probe on;
- ``classes.txt``, ``templates.txt`` and ``tasks.toml`` (zero-shot, linear probe
  and retrieval on ``eval.parquet``).
"""

import argparse
import io
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from aced.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist

PHRASES = ("a photo of a {}", "a {} on a dark background", "a picture of a {}", "{}")
TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "{}")
TASKS = """[[task]]
name = "fashion"
kind = "zeroshot"
source = "parquet"
path = "eval.parquet"
class_names = "classes.txt"
templates = "templates.txt"

[[task]]
name = "fashion_probe"
kind = "linear_probe"
source = "parquet"
path = "eval.parquet"
train_path = "probe.parquet"

[[task]]
name = "captions"
kind = "retrieval"
source = "parquet"
path = "eval.parquet"
"""


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _write(path: pathlib.Path, images, labels, rng, mismatched=None) -> None:
    shown = (
        labels
        if mismatched is None
        else np.where(
            mismatched,
            (labels + rng.integers(1, len(CLASS_NAMES), len(labels))) % len(CLASS_NAMES),
            labels,
        )
    )
    captions = [rng.choice(PHRASES).format(CLASS_NAMES[k]) for k in shown]
    columns = {"image": [_png(im) for im in images], "caption": captions, "label": labels}
    if mismatched is not None:
        columns["mismatched"] = mismatched
    pq.write_table(pa.table(columns), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/own")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    images, labels = load_fashion_mnist("train")
    order = rng.permutation(len(labels))
    clean, web, probe = order[:4000], order[4000:12000], order[12000:13000]
    _write(out / "clean.parquet", images[clean], labels[clean].astype(np.int64), rng)
    noisy = rng.random(len(web)) < 0.4
    _write(out / "web.parquet", images[web], labels[web].astype(np.int64), rng, noisy)
    _write(out / "probe.parquet", images[probe], labels[probe].astype(np.int64), rng)
    test_images, test_labels = load_fashion_mnist("test")
    pick = rng.permutation(len(test_labels))[:500]
    _write(out / "eval.parquet", test_images[pick], test_labels[pick].astype(np.int64), rng)
    (out / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (out / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    (out / "tasks.toml").write_text(TASKS)
    print(f"wrote {sorted(p.name for p in out.iterdir())} to {out}")


if __name__ == "__main__":
    main()
