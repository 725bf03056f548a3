"""Plot a few demo slices: target and zero-filled input at 4x and 8x (docs/demo_slices.png).

.venv/bin/python scripts/plot_demo.py [--root data/demo] [--out docs/demo_slices.png]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from fastmri.data.subsample import RandomMaskFunc  # noqa: E402

from mri_recon.data.dataset import SliceDataset, split_folder  # noqa: E402
from mri_recon.data.transforms import ZeroFilledTransform  # noqa: E402

ACCELERATIONS = {4: 0.08, 8: 0.04}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/demo")
    parser.add_argument("--out", default="docs/demo_slices.png")
    args = parser.parse_args()

    picks = [("singlecoil", 0, 4), ("singlecoil", 2, 3), ("multicoil", 4, 4), ("multicoil", 5, 2)]
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3 * len(picks)))
    for row, (challenge, volume, slice_num) in enumerate(picks):
        folder = split_folder(args.root, challenge, "val")
        columns = [("target", None)] + [(f"zero-filled {r}x", r) for r in ACCELERATIONS]
        for col, (title, acceleration) in enumerate(columns):
            mask = None
            if acceleration is not None:
                mask = RandomMaskFunc([ACCELERATIONS[acceleration]], [acceleration])
            dataset = SliceDataset(folder, challenge, ZeroFilledTransform(challenge, mask, True))
            sample = dataset[volume * 8 + slice_num]
            picture = sample.target if acceleration is None else sample.image
            image = (picture[0] * sample.std + sample.mean).numpy()
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=sample.max_value)
            axes[row, col].set_title(f"{challenge} {sample.fname}\n{title}", fontsize=8)
            axes[row, col].axis("off")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
