"""Layer 1: number formats, bit operations and the datapath arithmetic."""

from accel_sim.numerics.datapath import (
    ACTIVATIONS,
    EXACT_LIMIT,
    MARGIN,
    Datapath,
    apply_activation,
    apply_activation_float,
    requantize,
    shift_round,
    threshold_to_acc,
)
from accel_sim.numerics.formats import (
    BIT_OPERATIONS,
    OVERFLOW_MODES,
    ROUNDING_MODES,
    Fixed,
    Float32,
    Format,
    dequantize,
    flip,
    from_bits,
    parse_format,
    quantize,
    saturate,
    stuck_at_0,
    stuck_at_1,
    to_bits,
    wrap,
)
from accel_sim.numerics.selection import format_for, frac_bits_for

__all__ = [
    "ACTIVATIONS", "BIT_OPERATIONS", "EXACT_LIMIT", "MARGIN", "OVERFLOW_MODES", "ROUNDING_MODES", "Datapath", "Fixed", "Float32",
    "Format", "apply_activation", "apply_activation_float", "dequantize", "flip", "format_for",
    "frac_bits_for", "from_bits", "parse_format", "quantize", "requantize", "saturate", "shift_round",
    "stuck_at_0", "stuck_at_1", "threshold_to_acc", "to_bits", "wrap",
]
