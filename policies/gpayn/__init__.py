"""G-PAYN: multi-fingered grasping from a grasp pose, vision and touch (issue 4).

`superquadric.py` (superquadric fit to an object's point cloud; points from a depth image),
`grasp_pose.py` (6-D grasp and pre-grasp poses from the fitted superquadric). Both are numpy +
scipy only, so the grasp planner node can use them without torch. See docs/GPAYN.md.
"""
