"""G-PAYN: multi-fingered grasping from a grasp pose, vision and touch (issue 4).

The RL env (`env.py`) of the grasp task (`sim/tasks/grasp.py`), SAC and its training, export and
serving. The grasp pipeline (superquadric fit, grasp pose) is `dexstack.perception`. See
docs/GPAYN.md.
"""
