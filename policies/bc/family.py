"""Behaviour cloning's entry in the policy-family registry (dexstack/families.py); strings only."""

from dexstack.families import Family

FAMILY = Family(
    name="bc",
    runtime="dexstack.policies.bc.runtime:Runtime",
    train="dexstack.policies.bc.cli:main",
    export="dexstack.policies.bc.export:export",
    description="Behaviour cloning: CNN keypoint encoders + MLP predicting a chunk of joint targets.",
)
