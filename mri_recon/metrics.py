"""fastMRI metrics, per volume, through ``fastmri.evaluate`` (skimage's SSIM and PSNR).

NMSE = ||gt - pred||^2 / ||gt||^2 over the volume; PSNR and SSIM (7x7, averaged over slices) with
data_range = the volume's maximum. Summaries are the mean and standard deviation over volumes
(sample std, ddof=1, as fastmri.evaluate's runstats).
"""

import numpy as np
from fastmri import evaluate

METRICS = ("NMSE", "PSNR", "SSIM")


def volume_metrics(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """NMSE, PSNR and SSIM of one volume; both arrays (slices, H, W) float."""
    if target.shape != prediction.shape or target.ndim != 3:
        raise ValueError(
            f"expected two (slices, H, W) arrays, got {target.shape}, {prediction.shape}"
        )
    maxval = float(target.max())
    return {
        "NMSE": np.asarray(evaluate.nmse(target, prediction)).item(),
        "PSNR": np.asarray(evaluate.psnr(target, prediction, maxval=maxval)).item(),
        "SSIM": np.asarray(evaluate.ssim(target, prediction, maxval=maxval)).item(),
    }


def summarize(per_volume: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean": .., "std": ..}} over volumes."""
    summary = {}
    for name in METRICS:
        values = np.array([row[name] for row in per_volume], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary[name] = {"mean": float(values.mean()), "std": std}
    return summary
