"""G-PAYN's entry in the policy-family registry (dexstack/families.py); strings only."""

from dexstack.families import Family

FAMILY = Family(
    name="gpayn",
    runtime="dexstack.policies.gpayn.serving:make_runtime",
    train="dexstack.policies.gpayn.train:main",
    export="dexstack.policies.gpayn.export:export_run",
    # In-process the grasp task's episodes are GraspEnv's (the training env), driven by the actor runtime.
    in_process="dexstack.policies.gpayn.evaluate:in_process",
    description="G-PAYN: SAC on the hand from a grasp pose, replay buffer pre-filled with scripted grasps "
    "(vision + touch).",
)
