"""Layer 4: fault sites, models, maps drawn from (rate, seed), their files, and applying them."""

from accel_sim.faults.apply import PermanentFaults, prepare_permanent_faults, run_with_faults
from accel_sim.faults.draw import DrawSpec, draw_fault_map, job_rng
from accel_sim.faults.io import check_fault_map, read_fault_map, write_fault_map
from accel_sim.faults.model import COUNT_MODES, MODELS, PERSISTENCE, REGISTERS, SITES, FaultMap
from accel_sim.faults.sites import site_bits

__all__ = [
    "COUNT_MODES", "MODELS", "PERSISTENCE", "REGISTERS", "SITES", "DrawSpec", "FaultMap", "PermanentFaults",
    "check_fault_map", "draw_fault_map", "job_rng", "prepare_permanent_faults", "read_fault_map", "run_with_faults",
    "site_bits", "write_fault_map",
]
