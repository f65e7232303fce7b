"""INT8 through explicit quantization: activation ranges (calibration), the calibration run, and Q/DQ placement."""
