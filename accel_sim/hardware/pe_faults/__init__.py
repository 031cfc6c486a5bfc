"""PE faults: the table the kernels read, and the fast exact strategies for the outputs they touch.

A permanent fault of PE (r, c) touches, under WS, every output of the filters n ≡ c (mod cols)
(the PE works on MACs k ≡ r of each); under OS, the outputs of pixels ≡ r (mod rows) of those
filters (every MAC of them). :func:`faulty_column_blocks` (:mod:`.planner`) groups the faults
per faulty WS column or OS PE and picks a strategy per group, one module each:

- :mod:`.register_lanes`: weight- and product-register faults in int32 image lanes;
- :mod:`.register_corrections`: the same in int64 (sign bits, wider words);
- :mod:`.os_weight_gemm`: an OS weight register's sign-bit faults as an int8 GEMM;
- :mod:`.ws_psum_lanes`: WS partial-sum faults in (output column, image) lanes;
- :mod:`.os_psum_lanes`: OS partial-sum faults in int32 image lanes;
- :mod:`.recompute`: everything else, recomputed exactly from the feature map.

The first four compute corrections to the clean sums and need that no partial sum can
saturate. A transient fault hits one MAC, hence one output (recomputed by the caller).
:mod:`.table` holds the fault table and the groups, :mod:`.batch` what strategies read.
"""

from accel_sim.hardware.pe_faults.planner import fast_strategies_apply, faulty_column_blocks, fits_float64
from accel_sim.hardware.pe_faults.table import PeFaults

__all__ = ["PeFaults", "fast_strategies_apply", "faulty_column_blocks", "fits_float64"]
