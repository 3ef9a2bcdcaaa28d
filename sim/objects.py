"""YCB-like objects built from primitive shapes, sized and weighted like the YCB set.

No YCB meshes can be installed here, so each object is a few MuJoCo primitives whose overall
size (metres) and total mass (kg) follow the dimensions and masses published for the YCB
object set (Calli et al., 2015).

Object frame convention (what `/sim/object_pose` reports): the origin is the object's grasp
point, `grasp_height` above the centre of its footprint; z is up at rest and the object's
narrow side runs along its local y axis, so a top-down grasp closes the fingers along y.
A scripted expert therefore needs only the pose, not the object's identity.

`GRASPABLE` lists the objects the Panda gripper (8 cm maximum opening, top-down grasp) can
pick reliably; tasks sample from it. The others stay in the catalogue as distractors and for
later tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dm_control import mjcf


@dataclass(frozen=True)
class Shape:
    """One primitive in the object frame.

    kind: "box" (size = half extents x, y, z), "cylinder" (radius, half height),
    "sphere" (radius), "capsule" (radius, half length of the segment along x),
    "ellipsoid" (semi-axes x, y, z). `pos` is the primitive's centre in metres.
    """

    kind: str
    size: tuple[float, ...]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    euler: tuple[float, float, float] = (0.0, 0.0, 0.0)  # radians, MuJoCo xyz convention

    def volume(self) -> float:
        """Volume in m^3, used to split the object's mass over its shapes."""
        s = self.size
        if self.kind == "box":
            return 8.0 * s[0] * s[1] * s[2]
        if self.kind == "cylinder":
            return math.pi * s[0] ** 2 * 2.0 * s[1]
        if self.kind == "sphere":
            return 4.0 / 3.0 * math.pi * s[0] ** 3
        if self.kind == "capsule":
            return math.pi * s[0] ** 2 * 2.0 * s[1] + 4.0 / 3.0 * math.pi * s[0] ** 3
        if self.kind == "ellipsoid":
            return 4.0 / 3.0 * math.pi * s[0] * s[1] * s[2]
        raise ValueError(f"unknown shape kind {self.kind!r}")


@dataclass(frozen=True)
class ObjectSpec:
    """A YCB-like object: primitives, total mass (kg), colour (rgba 0..1)."""

    name: str
    ycb_id: str
    shapes: tuple[Shape, ...]
    mass: float
    rgba: tuple[float, float, float, float]
    grasp_height_override: float | None = None  # metres; None = the rule in `grasp_height`

    @property
    def display_name(self) -> str:
        return self.name.replace("_", " ")

    @property
    def grasp_width(self) -> float:
        """Width (m) across the local y axis, where the fingers close."""
        return 2.0 * max(
            abs(s.pos[1]) + (s.size[1] if s.kind in ("box", "ellipsoid") else s.size[0]) for s in self.shapes
        )

    @property
    def grasp_height(self) -> float:
        """Height (m) of the grasp point above the object's base.

        Tall objects are grasped 4 cm below their top so the palm clears them; short ones as
        low as the fingertips can go without touching the table (pads centred 3.3 cm up).
        """
        if self.grasp_height_override is not None:
            return self.grasp_height_override
        return max(MIN_GRASP_HEIGHT, self.height() - 0.04)

    def height(self) -> float:
        """Height of the object's top above its base, metres."""
        top = 0.0
        for s in self.shapes:
            half = s.size[2] if s.kind in ("box", "ellipsoid") else s.size[1] if s.kind == "cylinder" else s.size[0]
            top = max(top, s.pos[2] + half)
        return top


MIN_GRASP_HEIGHT = 0.033  # m: lower, and the fingertips would scrape the table


def _box(name: str, ycb_id: str, long: float, narrow: float, height: float, mass: float, rgba) -> ObjectSpec:
    """A box standing on its base: long side along x, narrow side along y (metres)."""
    return ObjectSpec(
        name, ycb_id, (Shape("box", (long / 2, narrow / 2, height / 2), (0.0, 0.0, height / 2)),), mass, rgba
    )


def _can(name: str, ycb_id: str, diameter: float, height: float, mass: float, rgba) -> ObjectSpec:
    return ObjectSpec(
        name, ycb_id, (Shape("cylinder", (diameter / 2, height / 2), (0.0, 0.0, height / 2)),), mass, rgba
    )


# Sizes (metres) and masses (kg) after the YCB object set's published table.
CATALOG: dict[str, ObjectSpec] = {
    o.name: o
    for o in (
        _box("cracker_box", "003", 0.158, 0.060, 0.210, 0.411, (0.85, 0.15, 0.10, 1.0)),
        _box("sugar_box", "004", 0.089, 0.038, 0.175, 0.514, (0.95, 0.90, 0.55, 1.0)),
        _can("tomato_soup_can", "005", 0.066, 0.101, 0.349, (0.80, 0.10, 0.10, 1.0)),
        ObjectSpec(
            "mustard_bottle",
            "006",
            (
                Shape("box", (0.0425, 0.025, 0.075), (0.0, 0.0, 0.075)),
                Shape("cylinder", (0.012, 0.0125), (0.0, 0.0, 0.1625)),
            ),
            0.603,
            (0.95, 0.80, 0.05, 1.0),
            grasp_height_override=0.125,
        ),
        _can("tuna_fish_can", "007", 0.085, 0.033, 0.171, (0.60, 0.65, 0.75, 1.0)),
        _box("pudding_box", "008", 0.110, 0.089, 0.035, 0.187, (0.55, 0.35, 0.20, 1.0)),
        _box("gelatin_box", "009", 0.085, 0.073, 0.028, 0.097, (0.90, 0.30, 0.45, 1.0)),
        _box("potted_meat_can", "010", 0.097, 0.050, 0.082, 0.370, (0.20, 0.35, 0.70, 1.0)),
        ObjectSpec(
            "banana",
            "011",
            (
                Shape("capsule", (0.018, 0.077), (0.0, 0.0, 0.018)),
                Shape("box", (0.06, 0.008, 0.004), (0.0, 0.0, 0.004)),  # flat underside: a banana does not roll
            ),
            0.066,
            (0.98, 0.85, 0.20, 1.0),
        ),
        ObjectSpec("apple", "013", (Shape("sphere", (0.0375,), (0.0, 0.0, 0.0375)),), 0.068, (0.75, 0.10, 0.10, 1.0)),
        ObjectSpec(
            "bleach_cleanser",
            "021",
            (
                Shape("box", (0.049, 0.0325, 0.11), (0.0, 0.0, 0.11)),
                Shape("cylinder", (0.015, 0.015), (0.0, 0.0, 0.235)),
            ),
            1.131,
            (0.95, 0.95, 0.95, 1.0),
        ),
        ObjectSpec(
            "mug",
            "025",
            (
                Shape("cylinder", (0.040, 0.041), (0.0, 0.0, 0.041)),
                Shape("box", (0.012, 0.005, 0.025), (0.052, 0.0, 0.045)),
            ),
            0.118,
            (0.75, 0.20, 0.15, 1.0),
        ),
        _box("foam_brick", "061", 0.075, 0.050, 0.050, 0.028, (0.85, 0.15, 0.15, 1.0)),
        ObjectSpec(
            "tennis_ball", "056", (Shape("sphere", (0.0324,), (0.0, 0.0, 0.0324)),), 0.058, (0.80, 0.95, 0.20, 1.0)
        ),
        # Slightly flattened so it rests without rolling.
        ObjectSpec(
            "lemon",
            "014",
            (Shape("ellipsoid", (0.034, 0.027, 0.024), (0.0, 0.0, 0.024)),),
            0.029,
            (0.98, 0.95, 0.25, 1.0),
        ),
        _box("wood_block", "036", 0.085, 0.085, 0.200, 0.729, (0.75, 0.60, 0.40, 1.0)),
        # Power drill (YCB 035: 184 x 57 x 187 mm, 0.895 kg) standing on its battery pack: battery
        # box, handle box, and the motor body + chuck as one capsule along x on top of the handle.
        ObjectSpec(
            "power_drill",
            "035",
            (
                Shape("box", (0.045, 0.0285, 0.025), (0.0, 0.0, 0.025)),
                Shape("box", (0.02, 0.0175, 0.05), (0.0, 0.0, 0.10)),
                Shape("capsule", (0.0285, 0.0635), (0.032, 0.0, 0.1585)),
            ),
            0.895,
            (0.15, 0.45, 0.30, 1.0),
        ),
        # Held-out shapes for G-PAYN (never trained on): a tall cylinder, a small cube and a pear.
        _can("chips_can", "001", 0.075, 0.250, 0.205, (0.85, 0.55, 0.15, 1.0)),
        _box("rubiks_cube", "077", 0.057, 0.057, 0.057, 0.095, (0.30, 0.70, 0.35, 1.0)),
        # Pear (YCB 016: ~66 mm wide, 100 mm tall, 0.049 kg): a round bottom and a narrower neck.
        ObjectSpec(
            "pear",
            "016",
            (
                Shape("ellipsoid", (0.033, 0.033, 0.030), (0.0, 0.0, 0.030)),
                Shape("ellipsoid", (0.020, 0.020, 0.032), (0.0, 0.0, 0.068)),
                Shape("box", (0.015, 0.015, 0.002), (0.0, 0.0, 0.002)),  # flat bottom: a pear does not roll
            ),
            0.049,
            (0.75, 0.80, 0.25, 1.0),
        ),
    )
}

# Objects a top-down Panda grasp picks reliably: narrow side well under the 8 cm opening,
# stable on the table, light enough for the fingers' friction.
GRASPABLE: tuple[str, ...] = (
    "tomato_soup_can",
    "potted_meat_can",
    "foam_brick",
    "sugar_box",
    "mustard_bottle",
    "banana",
    "lemon",
)

# Contact parameters shared by all objects: high friction and torsional friction so a
# two-finger grasp does not let the object spin out (condim 4).
OBJECT_FRICTION = (1.0, 0.01, 0.001)


def object_model(spec: ObjectSpec) -> mjcf.RootElement:
    """An mjcf model of the object (no joint: the scene attaches it with a free joint)."""
    root = mjcf.RootElement(model=spec.name)
    lift = -spec.grasp_height  # shapes are given from the base; the frame is the grasp point
    total_volume = sum(s.volume() for s in spec.shapes)
    for i, shape in enumerate(spec.shapes):
        geom_size = shape.size
        kwargs = {}
        if shape.kind == "capsule":
            # MuJoCo capsules are along their local z; lay ours along x.
            r, half = shape.size
            z = shape.pos[2] + lift
            kwargs["fromto"] = [shape.pos[0] - half, shape.pos[1], z, shape.pos[0] + half, shape.pos[1], z]
            geom_size = (r,)
        else:
            kwargs["pos"] = (shape.pos[0], shape.pos[1], shape.pos[2] + lift)
            kwargs["euler"] = shape.euler
        root.worldbody.add(
            "geom",
            name=f"geom{i}",
            type=shape.kind,
            size=geom_size,
            rgba=spec.rgba,
            mass=spec.mass * shape.volume() / total_volume,
            friction=OBJECT_FRICTION,
            condim=4,
            **kwargs,
        )
    return root


def check_catalog() -> None:
    """Raise ValueError if a graspable object does not fit the gripper (used by tests)."""
    for name in GRASPABLE:
        spec = CATALOG[name]
        if not 0.0 < spec.grasp_width <= 0.07 or spec.grasp_height > spec.height():
            raise ValueError(f"{name}: grasp width {spec.grasp_width} m does not fit an 8 cm gripper with margin")
    bad = [n for n in GRASPABLE if n not in CATALOG]
    if bad:
        raise ValueError(f"GRASPABLE names unknown objects: {bad}")
