"""accel-sim: fault injection on an emulated fixed-point systolic-array DNN accelerator."""

__version__ = "0.1.0"
