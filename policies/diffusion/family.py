"""The diffusion (and PTP) policy's entry in the policy-family registry (dexstack/families.py); strings only."""

from dexstack.families import Family

FAMILY = Family(
    name="diffusion",
    runtime="dexstack.policies.diffusion.runtime:Runtime",
    train="dexstack.policies.diffusion.cli:main",
    export="dexstack.policies.diffusion.export:export_run",
    description="Diffusion policy: CNN keypoint encoders + 1-D UNet or causal transformer denoiser (DDPM or EDM).",
)
