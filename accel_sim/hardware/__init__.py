"""Layer 3: the emulated accelerator — config, lowering, dataflows, compute, cycle model."""

from accel_sim.hardware.accelerator import ENGINES, Accelerator
from accel_sim.hardware.config import DATAFLOWS, HardwareConfig, hardware_from_dict, load_hardware

__all__ = ["DATAFLOWS", "ENGINES", "Accelerator", "HardwareConfig", "hardware_from_dict", "load_hardware"]
