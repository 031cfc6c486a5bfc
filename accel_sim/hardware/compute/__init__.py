"""Executing one layer on the emulated array: the fast exact path and the faithful path.

Feature maps travel between layers as ``torch.float64`` tensors holding exact integers (raw
words) for fixed-point images, or ``torch.float32`` tensors for ``fp32`` images.

**Fast exact path.** Words of up to 16 bits take the fused int8 path: im2col straight into int8
digits, int8 GEMMs (:mod:`accel_sim.hardware.int8_gemm`), and one Numba pass that recombines
the digit products and applies the activation unit. It is exact whatever the size; with a
saturating accumulator it is used when no partial sum can reach the accumulator's range
(``max|a| · max_n Σ_k |B[k, n]|`` below it, from the input format or the batch): then no
addition saturates, so the order of additions cannot matter. Otherwise a float64 GEMM (im2col +
matmul through BLAS), exact when every partial sum is an integer below 2**53, with the same
layer-wide bound; outputs for which it fails get a per-output bound ``|A| @ |B|``, and those
that fail it too are computed by the faithful path. A wrapping accumulator needs only
exactness: wrap(exact sum) = the wrapped accumulation. Outputs touched by faulty PEs are
recomputed or corrected on their own (:mod:`accel_sim.hardware.pe_faults`).

**Accumulators wider than 53 bits** (integers float64 cannot all hold) travel as ``int64``
tensors: sums come from the int8 path, from float64 BLAS under the 2**53 bound, from two float64
products of the activations' 16-bit digits when the weights are small, or else from
:mod:`accel_sim.hardware.wide_gemm` (exact modulo 2**64). A layer with faulty weight words runs
the stored words' GEMM and adds the changed words' products
(:mod:`accel_sim.hardware.patched_sums`). Bias, activation unit and rescaling then use the
integer operations of :mod:`accel_sim.numerics`.

**Faithful path.** :func:`accel_sim.hardware.kernels.gemm_faithful`, MAC by MAC in window order,
with the accumulator's overflow applied after every addition and PE faults applied where the
dataflow places each MAC.

Modules: :mod:`.prepared` (a layer's tensors, faulty words as patches), :mod:`.layer` (which
path runs a layer), :mod:`.sums` (exact sums without PE faults), :mod:`.int8_path` (words of up
to 16 bits), :mod:`.pe_fault_path` (faulty PEs on the fast path), :mod:`.faithful` (MAC by MAC),
:mod:`.gemm_forms` (layouts and bounds).
"""

from accel_sim.hardware.compute.faithful import faithful_accumulators
from accel_sim.hardware.compute.gemm_forms import abs_max
from accel_sim.hardware.compute.layer import biased_accumulators, output_words, run_layer, weighted_accumulators
from accel_sim.hardware.compute.prepared import PreparedLayer, WeightPatch, prepare_layer

__all__ = ["PreparedLayer", "WeightPatch", "abs_max", "biased_accumulators", "faithful_accumulators", "output_words",
           "prepare_layer", "run_layer", "weighted_accumulators"]
