"""Layer 3: the emulated accelerator — config, lowering, dataflows, compute, cycle model."""

from accel_sim.hardware.accelerator import ENGINES, Accelerator, LayerFaults
from accel_sim.hardware.compute import WeightPatch
from accel_sim.hardware.pe_faults import PeFaults
from accel_sim.hardware.dataflows import DATAFLOWS
from accel_sim.hardware.config import HardwareConfig, hardware_from_dict, load_hardware, load_preset, preset_names

__all__ = ["DATAFLOWS", "ENGINES", "Accelerator", "LayerFaults", "PeFaults", "WeightPatch", "HardwareConfig", "hardware_from_dict", "load_hardware",
           "load_preset", "preset_names"]
