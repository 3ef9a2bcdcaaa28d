"""A stand-in for a camera driver process (realsense-ros, usb_cam), for tests and benches: publishes
fixed frames on each camera's colour topic at a rate, reliable like realsense-ros (its image QoS
SYSTEM_DEFAULT, realsense2_camera/include/constants.h IMAGE_QOS) and usb_cam (rclcpp::QoS(100)),
each stamped with the wall clock when it is sent.

    python tests/camera_driver.py --rate 15 --encoding bgr8 wrist=wrist.npy scene=scene.npy

Each .npy holds an (H, W, 3) uint8 RGB frame; `--encoding bgr8` sends it as a BGR driver would.
Fast DDS transport settings come from the environment (FASTDDS_DEFAULT_PROFILES_FILE), as for a
real driver. Runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=15.0, help="frames per second per camera")
    parser.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8")
    parser.add_argument("cameras", nargs="+", help="NAME=FRAME.npy")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from dexstack import contract

    rclpy.init()
    node = rclpy.create_node("camera_driver")
    frames = {}
    for item in args.cameras:
        name, _, path = item.partition("=")
        rgb = np.load(Path(path))
        pixels = rgb[..., ::-1] if args.encoding == "bgr8" else rgb
        h, w = rgb.shape[:2]
        msg = Image(height=h, width=w, encoding=args.encoding, step=w * 3, data=np.ascontiguousarray(pixels).tobytes())
        msg.header.frame_id = f"{name}_color_optical_frame"
        pub = node.create_publisher(
            Image, contract.camera_color_topic(name), QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        frames[name] = (pub, msg)

    def send() -> None:
        stamp = node.get_clock().now().to_msg()
        for pub, msg in frames.values():
            msg.header.stamp = stamp
            pub.publish(msg)

    node.create_timer(1.0 / args.rate, send)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
