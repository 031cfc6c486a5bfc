"""Layer 2: the accelerator image — layer records, HDF5 schema, export and the golden reference."""

from accel_sim.image.records import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Conv2d,
    Flatten,
    Image,
    Layer,
    Linear,
    MaxPool2d,
    WeightedLayer,
)

__all__ = [
    "SCHEMA_NAME", "SCHEMA_VERSION", "Conv2d", "Flatten", "Image", "Layer", "Linear", "MaxPool2d",
    "WeightedLayer",
]
