"""`mri-recon-convert`: ISMRMRD raw data from a scanner -> fastMRI-layout files.

    mri-recon-convert input=scan.h5 out=data/mine/multicoil_val
    mri-recon-convert input=raw/ out=data/mine/multicoil_train repetitions=separate
    mri-recon-convert input=scan.h5 out=... partial_fourier=zero_fill

Writes ``<out>/<input stem>.h5`` per input file (``<stem>_rep<N>.h5`` per repetition with
repetitions=separate): a fully sampled scan with its targets, an undersampled one as a test-style
file with its mask. A file that cannot be converted gets one line naming it and what was found;
the others are still converted, and the exit status is 2. The conversion itself is
mri_recon/data/ismrmrd_convert.py.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mri_recon.config import CONFIG_DIR, check_overrides
from mri_recon.data.ismrmrd_convert import ConvertError, convert_file, input_files
from mri_recon.errors import UserError, report_user_errors

CHOICES = {"repetitions": ("combine", "separate"), "partial_fourier": ("error", "zero_fill")}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="convert")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-convert`."""
    if cfg.input is None or cfg.out is None:
        raise UserError("expected input=<ISMRMRD file or folder> and out=<folder>")
    for key, choices in CHOICES.items():
        if cfg[key] not in choices:
            raise UserError(f"{key}: expected one of {list(choices)}, got {cfg[key]!r}")
    files, failed = input_files(cfg.input), 0
    for path in files:
        try:
            written = convert_file(
                path, Path(cfg.out), cfg.dataset, cfg.repetitions, cfg.partial_fourier
            )
        except ConvertError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        for output in written:
            print(f"wrote {output}")
    if failed:
        raise UserError(f"{failed} of {len(files)} files not converted (see above)")


def cli() -> None:
    """The `mri-recon-convert` console script: checks the overrides, then runs the Hydra app."""
    check_overrides("convert", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
