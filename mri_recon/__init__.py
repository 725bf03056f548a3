"""mri-recon: accelerated-MRI reconstruction with a GroupNorm U-Net and a TV baseline."""

__version__ = "0.1.0"
