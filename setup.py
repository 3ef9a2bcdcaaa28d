"""ament_python package `dexstack`; subpackages live at the repo root (BRIEF §1)."""

import os
from glob import glob

from setuptools import setup

PACKAGE = "dexstack"
SUBPACKAGES = {
    "ros_nodes": ["ros_nodes"],
    "policies": ["policies", "policies/common", "policies/bc", "policies/diffusion", "policies/gpayn"],
    "sim": ["sim", "sim/tasks", "sim/experts"],
    "hardware": ["hardware"],
    "perception": ["perception"],
}
FAMILIES = ["bc", "diffusion", "gpayn"]  # policy families shipped here (dexstack/families.py)
NODES = ["sim_node", "safety_filter", "policy_node", "mock_hardware", "recorder", "expert_node", "grasp_planner_node"]

packages = [PACKAGE, f"{PACKAGE}.cli"]
package_dir = {PACKAGE: PACKAGE}
for top, folders in SUBPACKAGES.items():
    package_dir[f"{PACKAGE}.{top}"] = top
    packages += [f"{PACKAGE}." + f.replace("/", ".") for f in folders]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=packages,
    package_dir=package_dir,
    package_data={PACKAGE: ["tasks.json"], f"{PACKAGE}.sim": ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        # Policies shipped with the repo: the read-only bundled store.
        *[(f"share/{PACKAGE}/{d}", [os.path.join(d, f) for f in fs]) for d, _, fs in os.walk("policy_store") if fs],
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="dexstack developers",
    maintainer_email="dev@dexstack.invalid",
    description="ROS 2 control stack for learned manipulation policies served from ONNX",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.ros_nodes.{n}:main" for n in NODES] + [f"{PACKAGE} = {PACKAGE}.cli:main"],
        "dexstack.families": [f"{f} = {PACKAGE}.policies.{f}.family:FAMILY" for f in FAMILIES],
    },
)
