"""Plot one demo val slice per contrast: the target and its zero-filled input at 4x and 8x.

.venv/bin/python scripts/plot_demo.py [--root data/demo] [--out docs/demo_slices.png]
"""

import argparse
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from fastmri.data.subsample import RandomMaskFunc  # noqa: E402

from mri_recon.data.dataset import SliceDataset, split_folder  # noqa: E402
from mri_recon.data.demo import CONTRASTS  # noqa: E402
from mri_recon.data.transforms import ZeroFilledTransform  # noqa: E402

ACCELERATIONS = {4: 0.08, 8: 0.04}


def first_volume_per_contrast(folder: Path) -> dict[str, Path]:
    """{contrast: the first val file of that contrast}, in CONTRASTS' order."""
    found = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path) as file:
            found.setdefault(str(file.attrs["acquisition"]), path)
    return {contrast: found[contrast] for contrast in CONTRASTS if contrast in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/demo")
    parser.add_argument("--challenge", default="singlecoil")
    parser.add_argument("--out", default="docs/demo_slices.png")
    args = parser.parse_args()

    folder = split_folder(args.root, args.challenge, "val")
    picks = first_volume_per_contrast(folder)
    columns = [("target", None)] + [(f"zero-filled {r}x", r) for r in ACCELERATIONS]
    fig, axes = plt.subplots(len(picks), 3, figsize=(12, 4.2 * len(picks)), squeeze=False)
    for col, (title, acceleration) in enumerate(columns):
        mask = None
        if acceleration is not None:
            mask = RandomMaskFunc([ACCELERATIONS[acceleration]], [acceleration])
        transform = ZeroFilledTransform(args.challenge, mask, True)
        dataset = SliceDataset(folder, args.challenge, transform)
        for row, (contrast, path) in enumerate(picks.items()):
            slices = [i for i, (file, _) in enumerate(dataset.slices) if file == path]
            sample = dataset[slices[len(slices) // 2]]
            picture = sample.target if acceleration is None else sample.image
            image = (picture[0] * sample.std + sample.mean).numpy()
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=sample.max_value)
            axes[row, col].set_title(f"{contrast} {path.name} slice {sample.slice_num}\n{title}")
            axes[row, col].axis("off")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
