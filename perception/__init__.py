"""Perception in one place (numpy + scipy; no sim, no ROS, no torch).

`camera.py` (intrinsics, optical-frame pose, depth -> world points, segmentation masks),
`superquadric.py` (superquadric fit to an object's point cloud), `grasp_pose.py` (6-D grasp
and pre-grasp poses from a fit), `planning.py` (the checked pipeline from masked depth to a
grasp pose, used by the grasp task, the grasp planner node and the sim's oracle box).
"""
