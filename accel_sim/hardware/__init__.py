"""Layer 3: the emulated accelerator — config, lowering, dataflows, compute, cycle model."""

from accel_sim.hardware.accelerator import ENGINES, Accelerator, LayerFaults
from accel_sim.hardware.compute import PeFaults, WeightPatch
from accel_sim.hardware.config import DATAFLOWS, HardwareConfig, hardware_from_dict, load_hardware

__all__ = ["DATAFLOWS", "ENGINES", "Accelerator", "LayerFaults", "PeFaults", "WeightPatch", "HardwareConfig", "hardware_from_dict", "load_hardware"]
